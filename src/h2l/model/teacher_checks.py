"""Validation of a teacher's parts: every problem is an InputError (exit 3) naming the part and a fix.

Kept apart from :mod:`h2l.model.teacher` so the dataclass stays readable; these
functions take arrays and return them validated (float32, C-contiguous), never a
Teacher, so they import nothing above them.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .projection import QUERY_NORMS, Routing, Scoring

REBUILD = "rebuild the teacher with `h2l teacher build` or `h2l teacher import`"


def float_array(arr, label: str, shape_doc: str, ndim: int) -> np.ndarray:
    """``arr`` as float32 with ``ndim`` dimensions, finite everywhere (checked after the float32 cast)."""
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise InputError(f"{label} have dtype {a.dtype}, expected floats", "store float32 arrays")
    if a.ndim != ndim:
        raise InputError(f"{label} have shape {a.shape}, expected {shape_doc}", "stack one row per head")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused just below
        a = np.ascontiguousarray(a, np.float32)
    if a.size and not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0])
        raise InputError(f"{label} row {bad} contains NaN or Inf (float32)", "repair or drop that head")
    return a


def check_temperature(temperature, keys: np.ndarray) -> float:
    try:
        tau = float(temperature)
    except (TypeError, ValueError):
        raise InputError(f"temperature {temperature!r} is not a number", "pass e.g. --temperature 0.1") from None
    if not np.isfinite(tau) or tau <= 0:
        raise InputError(f"temperature {tau} must be finite and > 0", "pass e.g. --temperature 0.1")
    if not np.isfinite(keys / np.float32(tau)).all():
        raise InputError(f"temperature {tau} overflows float32 logits", "use a larger temperature")
    return tau


def check_scoring(scoring: Scoring | None) -> Scoring:
    """A valid Scoring; ``none`` stores eps 0 (it has none), so equal scorings hash equally."""
    s = scoring if scoring is not None else Scoring()
    if not isinstance(s, Scoring) or s.query_norm not in QUERY_NORMS:
        raise InputError(f"scoring {s!r} is not one of query_norm {'/'.join(QUERY_NORMS)}",
                         "pass h2l.model.projection.Scoring(query_norm=..., eps=..., normalize_keys=...)")
    if not isinstance(s.normalize_keys, (bool, np.bool_)):
        raise InputError(f"scoring normalize_keys {s.normalize_keys!r} is not a bool", "pass True or False")
    if s.query_norm == "none":
        return Scoring("none", 0.0, bool(s.normalize_keys))
    eps = float(s.eps)
    if not np.isfinite(eps) or eps <= 0:
        raise InputError(f"scoring eps {s.eps!r} must be finite and > 0", "pass e.g. eps=1e-12")
    return Scoring(s.query_norm, eps, bool(s.normalize_keys))


def check_routing(routing: Routing | None, n_keys: int) -> Routing:
    """A valid Routing: all keys, or 1 ≤ top_k ≤ N_k (all-key routing always stores renormalize=True)."""
    r = routing if routing is not None else Routing()
    if not isinstance(r, Routing):
        raise InputError(f"routing {r!r} is not a Routing", "pass h2l.model.projection.Routing(top_k=...)")
    if r.top_k is None:
        return Routing()
    if isinstance(r.top_k, (bool, np.bool_)) or not isinstance(r.top_k, (int, np.integer)):
        raise InputError(f"routing top_k {r.top_k!r} is not an integer", "pass e.g. --top-k 10")
    if not 1 <= int(r.top_k) <= n_keys:
        raise InputError(f"routing top_k {r.top_k} is outside 1..{n_keys} (the teacher has {n_keys} keys)",
                         f"pass a top-k between 1 and {n_keys}, or omit it to route over all keys")
    return Routing(int(r.top_k), bool(r.renormalize))


def check_head_weights(w, n_heads: int, d: int) -> np.ndarray | None:
    """(H, d, d) float32 per-head matrices (applied as q · W_h), or None."""
    if w is None:
        return None
    w = float_array(w, "head_weights", "(H, d, d)", 3)
    if w.shape != (n_heads, d, d):
        raise InputError(f"head_weights have shape {w.shape}, expected ({n_heads}, {d}, {d}) (one d × d map per head)",
                         "stack one (d, d) matrix per head, in head order")
    return w


def check_key_heads(kh, n_keys: int, n_heads: int) -> np.ndarray | None:
    """(N_k,) int64 head of each key; every head must be reachable by at least one key."""
    if kh is None:
        return None
    a = np.asarray(kh)
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise InputError(f"key_heads have dtype {a.dtype}, shape {a.shape}; expected ({n_keys},) integers",
                         "store one head index per key as int64")
    if len(a) != n_keys:
        raise InputError(f"{len(a)} key_heads for {n_keys} keys", "store one head index per key")
    if a.size and (a.min() < 0 or a.max() >= n_heads):
        raise InputError(f"key_heads hold head {int(a.min() if a.min() < 0 else a.max())}, outside 0..{n_heads - 1}",
                         "map every key to one of the teacher's heads")
    dead = np.setdiff1d(np.arange(n_heads), a)
    if dead.size:  # a head no key routes to can never contribute: a silently dead part of the model
        raise InputError(f"head {int(dead[0])} is routed to by no key ({dead.size} such head(s))",
                         "drop the unreachable heads or add a key for each")
    return np.ascontiguousarray(a, np.int64)


def check_dead_heads(answers: np.ndarray, head_weights: np.ndarray | None) -> None:
    """Refuse a head that maps every query to 0 (zero answer and no W): cosines with it are undefined."""
    zero_b = np.linalg.norm(answers.astype(np.float64), axis=1) == 0
    if head_weights is None:
        if zero_b.any():
            raise InputError(f"answers row {int(np.flatnonzero(zero_b)[0])} has zero norm (a head that maps every "
                             "query to 0)", "drop that head or recompute its answer embedding")
        return
    zero_w = ~head_weights.reshape(len(head_weights), -1).any(axis=1)
    dead = np.flatnonzero(zero_b & zero_w)
    if dead.size:
        raise InputError(f"head {int(dead[0])} has W = 0 and a zero answer (it maps every query to 0)",
                         "drop that head, or store its W or its answer embedding")


def check_query_arrays(label: str, q, lab, n_heads: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored queries (n, d) float32 and their head labels (n,) int64; never reshaped, never truncated."""
    q_in, lab_in = np.asarray(q), np.asarray(lab)
    if q_in.size == 0 and lab_in.size == 0:
        return np.zeros((0, d), np.float32), np.zeros(0, np.int64)
    if q_in.dtype.kind not in "fiu" or q_in.ndim != 2 or q_in.shape[1] != d:
        hint = " (a transposed (d, n) matrix?)" if q_in.ndim == 2 and q_in.shape[0] == d else ""
        raise InputError(f"{label} queries have shape {q_in.shape}, dtype {q_in.dtype}; expected (n, {d}) floats"
                         f"{hint}", "store one query embedding per row")
    if lab_in.dtype.kind not in "iu" or lab_in.ndim != 1:
        raise InputError(f"{label} labels have dtype {lab_in.dtype}, shape {lab_in.shape}; expected (n,) integers",
                         "store each query's head index as int64 (never a float)")
    if len(q_in) != len(lab_in):
        raise InputError(f"{label} queries ({len(q_in)}) and labels ({len(lab_in)}) differ in length",
                         "store one label per query")
    q32 = np.ascontiguousarray(q_in, np.float32)
    if not np.isfinite(q32).all() or lab_in.min() < 0 or lab_in.max() >= n_heads:
        raise InputError(f"{label} queries contain NaN/Inf or labels outside 0..{n_heads - 1}", REBUILD)
    return q32, np.ascontiguousarray(lab_in, np.int64)


def check_targets_arrays(emb, ids, titles, d: int) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Targets `ask` ranks: (T, d) float32 with no zero row, one id and one title per row."""
    e = float_array(emb, "target embeddings", "(T, d)", 2)
    if e.shape[0] == 0 or e.shape[1] != d:
        raise InputError(f"target embeddings have shape {e.shape}, expected (T ≥ 1, {d})",
                         "store one target embedding per row, from the teacher's embedding model")
    zero = np.flatnonzero(np.linalg.norm(e.astype(np.float64), axis=1) == 0)
    if zero.size:
        raise InputError(f"target embedding row {int(zero[0])} has zero norm", "drop that target or re-embed it")
    ids_t, titles_t = tuple(ids), tuple(titles)
    if len(ids_t) != len(e) or len(titles_t) != len(e) or not all(isinstance(s, str) for s in ids_t + titles_t):
        raise InputError(f"{len(ids_t)} target ids and {len(titles_t)} titles for {len(e)} target embeddings "
                         "(or a non-string entry)", "store one id and one title (str) per target")
    return e, ids_t, titles_t
