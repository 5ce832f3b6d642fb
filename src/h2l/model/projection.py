"""The numpy float32 reference of every teacher h2l knows (the ONNX graphs and runtimes are checked against it).

    q̂ = normalise(q)  (Scoring.query_norm)       logits = q̂ · K       K = keys (d, N_k), already / τ
    w = softmax(logits), or over the top-k logits only (Routing)   α_h = Σ_{j: key_heads[j] = h} w_j
    y = Σ_h α_h · (q · W_h) + α · b     (W_h applied to the RAW query)     optionally y / ‖y‖

The flat family (today's teacher: answer heads, one key per head, h2l's scoring, all
keys) is :func:`project_arrays`, kept step for step as the ONNX teacher graph computes it.
:func:`project_general` adds scoring variants, top-k routing, shared heads and affine heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..metrics import NORM_EPS

QUERY_NORMS = ("floor", "add", "none")
#: Heads per block of the affine sum: bounds the [batch, heads, d] intermediate (≈ 64 MB at B = 256, d = 384).
_HEAD_BLOCK = 64


@dataclass(frozen=True)
class Scoring:
    """How a query is scored against the keys, exactly as the teacher's source does it.

    ``floor``: q / max(‖q‖, eps) (h2l, UnifyWeaver lda.db); ``add``: q / (‖q‖ + eps)
    (UnifyWeaver's FederatedProjectionWrapper, eps 1e-8); ``none``: q as given
    (UnifyWeaver's query-level routing).  ``normalize_keys``: divide each key by its norm.
    """

    query_norm: str = "floor"
    eps: float = NORM_EPS
    normalize_keys: bool = True

    @property
    def is_default(self) -> bool:
        return self == Scoring()

    def describe(self) -> str:
        q = {"floor": f"q/max(|q|,{self.eps:g})", "add": f"q/(|q|+{self.eps:g})", "none": "raw q"}[self.query_norm]
        return f"{q} · {'unit keys' if self.normalize_keys else 'keys as stored'}"


@dataclass(frozen=True)
class Routing:
    """All keys (``top_k`` None), or the ``top_k`` largest logits: renormalised (softmax over them)
    or not (their full-softmax weights, which sum to < 1).  Ties go to the lower key index (ONNX TopK)."""

    top_k: int | None = None
    renormalize: bool = True

    @property
    def is_default(self) -> bool:
        return self.top_k is None

    def describe(self) -> str:
        if self.top_k is None:
            return "all keys (softmax)"
        return f"top-{self.top_k} keys, " + ("renormalised" if self.renormalize else "not renormalised")


def check_queries(q: np.ndarray, dim: int, *, what: str = "query") -> np.ndarray:
    """Return q as a C-contiguous float32 (B, d) array or raise InputError.

    float64 (numpy's default) is cast: the values are the same embedding and
    refusing it would only punish the usual slip.  Rust and Go take f32 only.
    """
    q = np.asarray(q)
    if q.dtype.kind not in "fiu":
        raise InputError(f"{what} has dtype {q.dtype}, expected float32",
                         "pass a float32 array of shape (batch, d)")
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise InputError(f"{what} has shape {q.shape}, expected (batch, {dim})",
                         "reshape the queries to (batch, d)")
    if q.shape[0] == 0:
        raise InputError(f"{what} batch is empty", "pass at least one query")
    if q.shape[1] != dim:
        raise InputError(f"{what} has dimension {q.shape[1]} but the teacher has d = {dim}",
                         "embed the queries with the teacher's embedding model")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise InputError(f"{what} contains NaN or Inf", "drop or repair the non-finite rows")
    return q


def project_arrays(q: np.ndarray, keys: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat family's vectorized float32 reference on already-checked (B, d) queries."""
    q = q.astype(np.float32, copy=False)
    norm = np.sqrt(np.sum(q * q, axis=1, keepdims=True, dtype=np.float32))
    qn = q / np.maximum(norm, np.float32(NORM_EPS))
    logits = qn @ keys
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    w = e / e.sum(axis=1, keepdims=True)
    return (w @ answers).astype(np.float32, copy=False), w.astype(np.float32, copy=False)


def normalize_queries(q: np.ndarray, scoring: Scoring) -> np.ndarray:
    """q̂ as the scoring says, in float32 (floor: a zero query stays zero)."""
    if scoring.query_norm == "none":
        return q
    norm = np.sqrt(np.sum(q * q, axis=1, keepdims=True, dtype=np.float32))
    eps = np.float32(scoring.eps)
    return q / (np.maximum(norm, eps) if scoring.query_norm == "floor" else norm + eps)


def top_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """(B, k) indices of the k largest logits per row, largest first; equal logits: lower index first."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def routing_weights(logits: np.ndarray, routing: Routing) -> np.ndarray:
    """(B, N_k) float32 weights: softmax over all keys, or over the top-k (zeros elsewhere)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    k = routing.top_k
    if k is None or k >= logits.shape[1]:  # every key kept: renormalising changes nothing
        e = np.exp(shifted)
        return e / e.sum(axis=1, keepdims=True)
    idx = top_indices(logits, k)
    e = np.exp(shifted)
    if routing.renormalize:
        sel = np.take_along_axis(e, idx, axis=1)
        vals = sel / sel.sum(axis=1, keepdims=True)
    else:
        vals = np.take_along_axis(e / e.sum(axis=1, keepdims=True), idx, axis=1)
    w = np.zeros_like(logits)
    np.put_along_axis(w, idx, vals, axis=1)
    return w


def head_mass(w: np.ndarray, key_heads: np.ndarray | None, n_heads: int) -> np.ndarray:
    """α (B, H): each head's summed key weight (key_heads None: key j is head j)."""
    if key_heads is None:
        return w
    order = np.argsort(key_heads, kind="stable")
    starts = np.searchsorted(key_heads[order], np.arange(n_heads))  # every head has ≥ 1 key (validated)
    return np.add.reduceat(w[:, order], starts, axis=1).astype(np.float32, copy=False)


def affine_sum(q: np.ndarray, alpha: np.ndarray, head_weights: np.ndarray) -> np.ndarray:
    """Σ_h α_h · (q · W_h) in float32, a block of heads at a time."""
    b, d = q.shape
    y = np.zeros((b, head_weights.shape[2]), np.float32)
    for lo in range(0, head_weights.shape[0], _HEAD_BLOCK):
        w = head_weights[lo:lo + _HEAD_BLOCK]  # (h, d, e)
        t = (q @ w.transpose(1, 0, 2).reshape(d, -1)).reshape(b, len(w), -1)  # (B, h, e)
        y += np.einsum("bh,bhe->be", alpha[:, lo:lo + len(w)], t, dtype=np.float32)
    return y


def project_general(q: np.ndarray, keys: np.ndarray, answers: np.ndarray, *, head_weights: np.ndarray | None,
                    key_heads: np.ndarray | None, scoring: Scoring, routing: Routing,
                    normalize_output: bool) -> tuple[np.ndarray, np.ndarray]:
    """(y (B, d), routing weights (B, N_k)) of any teacher, on already-checked float32 (B, d) queries."""
    q = q.astype(np.float32, copy=False)
    w = routing_weights(normalize_queries(q, scoring) @ keys, routing).astype(np.float32, copy=False)
    alpha = head_mass(w, key_heads, answers.shape[0])
    y = (alpha @ answers).astype(np.float32, copy=False)
    if head_weights is not None:
        y = affine_sum(q, alpha, head_weights) + y
    if normalize_output:
        norm = np.sqrt(np.sum(y * y, axis=1, keepdims=True, dtype=np.float32))
        y = y / np.maximum(norm, np.float32(NORM_EPS))
    return y.astype(np.float32, copy=False), w
