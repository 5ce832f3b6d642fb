"""The multi-head LDA teacher: arrays, validation, the numpy reference (files: h2l.importers.npz).

``project(q) = softmax(q̂ · Ĉᵀ / τ) · A``.  The numpy code here is the
reference every export is checked against, so it computes in float32 with the
same steps the ONNX graph takes (normalise with an eps floor, one matmul with
the pre-scaled keys, a max-shifted softmax, one matmul with the answers).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

#: Floor on the query norm, shared with the ONNX graph: a zero query maps to
#: q̂ = 0, uniform routing weights and the mean answer.
NORM_EPS = 1e-12


@dataclass(frozen=True, eq=False)  # holds arrays: a generated __eq__ would raise on them; compare fingerprints
class QuerySet:
    """Embedded user queries stored with a teacher, split by cluster.

    Labels are row indices into the teacher's heads.  Held-out rows are never
    shown to the distillation sampler; they measure fidelity on unseen queries.
    """

    train: np.ndarray
    train_labels: np.ndarray
    heldout: np.ndarray
    heldout_labels: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.train) == 0 and len(self.heldout) == 0


def _empty_queries(d: int) -> QuerySet:
    z = np.zeros((0, d), np.float32)
    return QuerySet(z, np.zeros(0, np.int64), z.copy(), np.zeros(0, np.int64))


@dataclass(frozen=True, eq=False)  # holds arrays: `==` is identity; compare content with fingerprint()
class Teacher:
    """A validated teacher.  Build it with :func:`make_teacher`."""

    centroids: np.ndarray  # (N, d) float32, as given
    answers: np.ndarray  # (N, d) float32
    temperature: float
    cluster_ids: tuple[str, ...]
    name: str = "teacher"
    embedding_model: str = ""
    queries: QuerySet | None = field(default=None, compare=False)
    #: one answer text per head (teachers built from Q-A text); None for vector-only teachers (lda.db)
    answer_texts: tuple[str, ...] | None = field(default=None, compare=False)

    @property
    def n_heads(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @functools.cached_property
    def keys(self) -> np.ndarray:
        """Ĉᵀ/τ as float32 (d, N): the matrix both numpy and ONNX multiply by."""
        c = self.centroids.astype(np.float64)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        return np.ascontiguousarray((c / self.temperature).T.astype(np.float32))

    def project(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (projected [B, d], routing weights [B, N]) for q of shape (d,) or (B, d)."""
        q2 = check_queries(q, self.dim)
        return project_arrays(q2, self.keys, self.answers)

    def fingerprint(self) -> str:
        """sha256 over the teacher's content (not its file), recorded by students and bundles."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.centroids, "<f4").tobytes())
        h.update(np.ascontiguousarray(self.answers, "<f4").tobytes())
        h.update(repr(float(self.temperature)).encode())
        h.update("\x00".join(self.cluster_ids).encode())
        return h.hexdigest()

    def with_queries(self, queries: QuerySet | None) -> "Teacher":
        return make_teacher(self.centroids, self.answers, self.temperature, self.cluster_ids,
                            name=self.name, embedding_model=self.embedding_model, queries=queries,
                            answer_texts=self.answer_texts)


def project_arrays(q: np.ndarray, keys: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vectorized float32 reference on already-checked (B, d) queries."""
    q = q.astype(np.float32, copy=False)
    norm = np.sqrt(np.sum(q * q, axis=1, keepdims=True, dtype=np.float32))
    qn = q / np.maximum(norm, np.float32(NORM_EPS))
    logits = qn @ keys
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    w = e / e.sum(axis=1, keepdims=True)
    return (w @ answers).astype(np.float32, copy=False), w.astype(np.float32, copy=False)


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


def make_teacher(centroids, answers, temperature, cluster_ids=None, *, name: str = "teacher",
                 embedding_model: str = "", queries: QuerySet | None = None,
                 answer_texts=None) -> Teacher:
    """Validate raw arrays and return a teacher; every problem is an InputError."""
    c = np.asarray(centroids)
    a = np.asarray(answers)
    for label, arr in (("centroids", c), ("answers", a)):
        if arr.dtype.kind not in "fiu":
            raise InputError(f"{label} have dtype {arr.dtype}, expected floats", "store float32 arrays")
        if arr.ndim != 2:
            raise InputError(f"{label} have shape {arr.shape}, expected (N, d)", "stack one row per head")
    if c.shape[0] == 0:
        raise InputError("teacher has N = 0 heads", "add at least one cluster")
    if c.shape != a.shape:
        raise InputError(f"centroids {c.shape} and answers {a.shape} differ in shape",
                         "give exactly one answer embedding per centroid, same d")
    if c.shape[1] == 0:
        raise InputError("teacher has d = 0", "store non-empty embeddings")
    c = np.ascontiguousarray(c, np.float32)
    a = np.ascontiguousarray(a, np.float32)
    for label, arr in (("centroids", c), ("answers", a)):
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad.size:
            raise InputError(f"{label} row {int(bad[0])} contains NaN or Inf (float32)",
                             "repair or drop that head")
    zero = np.flatnonzero(np.linalg.norm(c.astype(np.float64), axis=1) == 0)
    if zero.size:
        raise InputError(f"centroid row {int(zero[0])} has zero norm", "drop that head or recompute its centroid")
    try:
        tau = float(temperature)
    except (TypeError, ValueError):
        raise InputError(f"temperature {temperature!r} is not a number", "pass e.g. --temperature 0.1") from None
    if not np.isfinite(tau) or tau <= 0:
        raise InputError(f"temperature {tau} must be finite and > 0", "pass e.g. --temperature 0.1")
    if not np.isfinite(c / np.float32(tau)).all():
        raise InputError(f"temperature {tau} overflows float32 logits", "use a larger temperature")
    ids = tuple(str(i) for i in (cluster_ids if cluster_ids is not None else range(c.shape[0])))
    if len(ids) != c.shape[0]:
        raise InputError(f"{len(ids)} cluster ids for {c.shape[0]} heads", "give one id per head")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"duplicate cluster id {dup!r}", "make cluster ids unique")
    if queries is not None:
        queries = _check_query_set(queries, c.shape)
    if answer_texts is not None:
        answer_texts = tuple(answer_texts)
        if len(answer_texts) != len(ids) or not all(isinstance(t, str) for t in answer_texts):
            raise InputError(f"{len(answer_texts)} answer texts for {len(ids)} heads (or a non-string text)",
                             "give one answer text per head, in head order")
    return Teacher(c, a, tau, ids, name, embedding_model, queries, answer_texts)


def _check_query_set(qs: QuerySet, shape: tuple[int, int]) -> QuerySet:
    n, d = shape
    parts = []
    for label, q, lab in (("train", qs.train, qs.train_labels), ("heldout", qs.heldout, qs.heldout_labels)):
        q = np.asarray(q, np.float32).reshape(-1, d) if np.asarray(q).size else np.zeros((0, d), np.float32)
        lab = np.asarray(lab, np.int64).reshape(-1)
        if len(q) != len(lab):
            raise InputError(f"{label} queries ({len(q)}) and labels ({len(lab)}) differ in length",
                             "store one label per query")
        if len(q) and (not np.isfinite(q).all() or lab.min() < 0 or lab.max() >= n):
            raise InputError(f"{label} queries contain NaN/Inf or labels outside 0..{n - 1}",
                             "rebuild the teacher with `h2l teacher build`")
        parts += [np.ascontiguousarray(q), lab]
    return QuerySet(*parts)
