"""The routed teacher's numpy reference: an int8 screen with a proven error, exact re-scoring, a mass bound.

The flat teacher reads all N keys per query.  The routed teacher reads an int8
copy of them (a quarter of the bytes), keeps the K heads whose *upper bound*
on the logit is largest, scores those exactly with the float32 keys and takes
the softmax over them.  Every skipped head's logit is at most its upper bound,
so the flat teacher's mass outside the candidates is provably at most

    bound = U / (Z_C + U),   U = Σ_skipped exp(u_i − M),   Z_C = Σ_candidates exp(x_c − M)

and ‖routed − flat‖ ≤ 2 · bound · max‖a‖ (docs/routing.md derives both).

The screen error of one logit x_i = q̂·K_i (K_i = ĉ_i/τ, float32, as the flat
teacher holds it), with the query quantised per row to 7 bits (q̃ = s_q·Q_q) and
K_i to 8 bits with a per-row scale (K_i ≈ σ_i·W_i, max residual r_i ≤ ρ·σ_i):

    |x_i − s_q·σ_i·(Q_q·W_i)| ≤ ‖q̂ − q̃‖₂·‖K_i‖₂ + ‖q̃‖₁·r_i  (+ float32 slack)

The query is 7-bit so that u8×s8 int8 GEMMs that add pairs of products in int16
(x86 AVX2's vpmaddubsw) cannot saturate: 2·127·127 < 2¹⁵.  The ONNX graph in
:mod:`h2l.exporters.onnx_routed` takes the same float32 steps as :func:`route`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .teacher import NORM_EPS

QUERY_LEVELS = 63  # |Q_q| ≤ 63: a 7-bit query ...
QUERY_ZERO_POINT = 64  # ... stored as uint8 1..127 with zero point 64
WEIGHT_LEVELS = 127  # |W| ≤ 127 (never -128)
SCALE_FLOOR = 1e-30  # the zero query: s_q = floor / 63, Q_q = 0
#: Skipped heads count at least e^-60 of the top candidate: float32 exp would otherwise flush masses below
#: 1e-38 to 0 and the bound would undercut them; raising a term only loosens a bound, and Z/U stays finite.
EXP_FLOOR = -60.0


@dataclass(frozen=True, eq=False)
class ScreenIndex:
    """What the routed graph holds: int8 keys with per-row scales, the float32 rows, the answers."""

    weights: np.ndarray  # (d, N) int8: round(K_i / σ_i), column i for head i
    scale: np.ndarray  # (N,) float32 σ_i
    rho: float  # max_i r_i / σ_i, rounded up (≈ 0.5)
    key_norm: float  # max_i ‖K_i‖₂, rounded up (≈ 1/τ)
    slack: float  # float32 rounding allowance on any logit, per unit of key_norm
    rows: np.ndarray  # (N, d) float32 K_i = ĉ_i/τ: exactly the flat teacher's keys, as rows
    answers: np.ndarray  # (N, d) float32

    @property
    def n_heads(self) -> int:
        return int(self.rows.shape[0])

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])


def screen_chunks(keys: np.ndarray, chunk: int = 8192):
    """(first head, int8 rows (m, d), scales (m,), max residual/scale, max ‖K_i‖) for ``chunk`` heads at a time.

    Chunked so that N = 100k never holds a float64 copy of all keys (make_screen builds from these, and
    verify compares a shipped screen with them without building a second one)."""
    keys = np.asarray(keys, np.float32)
    for lo in range(0, keys.shape[1], chunk):
        k64 = keys[:, lo:lo + chunk].T.astype(np.float64)  # exact copies of the float32 keys
        sc = (np.maximum(np.abs(k64).max(axis=1), SCALE_FLOOR) / WEIGHT_LEVELS).astype(np.float32)
        s64 = sc[:, None].astype(np.float64)
        w = np.clip(np.rint(k64 / s64), -WEIGHT_LEVELS, WEIGHT_LEVELS)
        resid = np.abs(k64 - w * s64).max(axis=1)  # exact: 24-bit × 8-bit products fit a double
        yield lo, w.astype(np.int8), sc, float((resid / s64[:, 0]).max()), float(np.linalg.norm(k64, axis=1).max())


def round_up(x: float) -> float:
    """x rounded up to the next float32: a bound stored in float32 must not shrink."""
    return float(np.nextafter(np.float32(x), np.float32(np.inf)))


def screen_slack(d: int) -> float:
    """A float32 dot of d terms errs by ≤ d·2⁻²⁴·‖q‖‖K‖; twice (screen and exact side), and the int32→float cast."""
    return float(np.float32(4 * (d + 8) * 2.0**-24))


def make_screen(keys: np.ndarray, answers: np.ndarray, chunk: int = 8192) -> ScreenIndex:
    """Quantise the flat teacher's keys (d, N) to int8 rows and record the provable residuals."""
    keys = np.asarray(keys, np.float32)
    d, n = keys.shape
    weights = np.empty((d, n), np.int8)
    scale = np.empty(n, np.float32)
    rho = norm = 0.0
    for lo, w, sc, r, nm in screen_chunks(keys, chunk):
        weights[:, lo:lo + len(sc)] = w.T
        scale[lo:lo + len(sc)] = sc
        rho, norm = max(rho, r), max(norm, nm)
    return ScreenIndex(weights, scale, round_up(rho), round_up(norm), screen_slack(d), np.ascontiguousarray(keys.T),
                       np.ascontiguousarray(answers, np.float32))


@dataclass(frozen=True, eq=False)
class Routed:
    """One call of the routed teacher, as the ONNX graph returns it."""

    projected: np.ndarray  # (B, d) float32
    top_heads: np.ndarray  # (B, K) int64, by exact weight, largest first
    top_weights: np.ndarray  # (B, K) float32, softmax over the candidates
    bound: np.ndarray  # (B,) float32 proven bound on the flat mass outside top_heads


def normalize(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, np.float32)
    norm = np.sqrt(np.sum(q * q, axis=1, keepdims=True, dtype=np.float32))
    return q / np.maximum(norm, np.float32(NORM_EPS))


def quantize_query(qn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q_q as float32 integers in [-63, 63], s_q (B, 1), q̃ = Q_q·s_q), float32 steps as in the graph."""
    peak = np.abs(qn).max(axis=1, keepdims=True)
    s = np.maximum(peak, np.float32(SCALE_FLOOR)) / np.float32(QUERY_LEVELS)
    qi = np.clip(np.rint(qn / s), -QUERY_LEVELS, QUERY_LEVELS).astype(np.float32)
    return qi, s.astype(np.float32), (qi * s).astype(np.float32)


def upper_bounds(index: ScreenIndex, qn: np.ndarray) -> np.ndarray:
    """u (B, N) float32 with u_i ≥ q̂·K_i for every head, from the int8 screen alone."""
    qi, s, qt = quantize_query(qn)
    exact32 = index.dim * QUERY_LEVELS * WEIGHT_LEVELS < 2**24  # every partial sum an integer < 2²⁴: exact
    dt = np.float32 if exact32 else np.float64
    dot = np.empty((len(qn), index.n_heads), np.float32)
    for lo in range(0, index.n_heads, 16384):  # a float copy of 16k screen columns at a time, not of all N
        dot[:, lo:lo + 16384] = qi.astype(dt) @ index.weights[:, lo:lo + 16384].astype(dt)
    e = qn - qt
    err_q = np.sqrt(np.sum(e * e, axis=1, keepdims=True, dtype=np.float32))
    l1 = np.sum(np.abs(qt), axis=1, keepdims=True, dtype=np.float32)
    t = dot * s + l1 * np.float32(index.rho)
    margin = (err_q + np.float32(index.slack)) * np.float32(index.key_norm)
    return (t * index.scale[None, :] + margin).astype(np.float32)


def rescore(rows: np.ndarray, answers: np.ndarray, cand: np.ndarray, qn: np.ndarray, mask=None):
    """Exact scores of the candidates, sorted largest first, their softmax and the projection.

    Shared by the screen and ivf references (the graphs take the same steps): returns
    (heads, weights, projection, max score m, softmax denominator z)."""
    x = np.einsum("bkd,bd->bk", rows[cand], qn, dtype=np.float32)
    if mask is not None:
        x = x + mask
    order = np.argsort(-x, axis=1, kind="stable")
    heads = np.take_along_axis(cand, order, axis=1)
    x = np.take_along_axis(x, order, axis=1)
    m = x[:, :1]
    e = np.exp(x - m)
    z = e.sum(axis=1, keepdims=True, dtype=np.float32)
    w = e / z
    proj = np.einsum("bk,bkd->bd", w, answers[heads], dtype=np.float32)
    return heads, w, proj, m, z


def route(index: ScreenIndex, q: np.ndarray, k: int) -> Routed:
    """The routed teacher on checked (B, d) queries with K = ``k`` candidates: the graph's reference."""
    k = min(int(k), index.n_heads)
    qn = normalize(q)
    u = upper_bounds(index, qn)
    cand = np.argsort(-u, axis=1, kind="stable")[:, :k]  # ONNX TopK: ties go to the lower index
    heads, w, proj, m, z = rescore(index.rows, index.answers, cand, qn)
    with np.errstate(over="ignore", divide="ignore"):
        eu = np.exp(np.maximum(u - m, np.float32(EXP_FLOOR)))
        np.put_along_axis(eu, heads, np.float32(0), axis=1)
        skipped = eu.sum(axis=1, keepdims=True, dtype=np.float32)
        bound = np.float32(1) / (np.float32(1) + z / skipped)
    return Routed(proj.astype(np.float32), heads.astype(np.int64), w.astype(np.float32),
                  bound[:, 0].astype(np.float32))


def flat_weights(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The flat teacher's routing weights in float64 (for measuring, not serving)."""
    qn = normalize(q).astype(np.float64)
    logits = np.empty((len(qn), keys.shape[1]))
    for lo in range(0, keys.shape[1], 16384):  # a float64 copy of 16k keys at a time, not of all N
        logits[:, lo:lo + 16384] = qn @ keys[:, lo:lo + 16384].astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=1, keepdims=True)


def skipped_mass(weights: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """The true flat mass outside ``heads`` per row (what the bound must never undercut)."""
    rest = np.array(weights, np.float64)
    np.put_along_axis(rest, np.asarray(heads, np.int64), 0.0, axis=1)
    return rest.sum(axis=1)  # summed directly: 1 − Σ kept would drown tiny masses in cancellation


def implied_error(bound: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """‖routed − flat‖₂ the bound allows: 2 · bound · max‖a‖."""
    return 2.0 * np.asarray(bound, np.float64) * max_norm(answers)


def max_norm(answers: np.ndarray, rows: int = 8192) -> float:
    """max‖a_i‖₂ in float64, a block of rows at a time (no 300 MB float64 copy at N = 100k)."""
    a = np.asarray(answers)
    return max((float(np.linalg.norm(a[i:i + rows].astype(np.float64), axis=1).max())
                for i in range(0, len(a), rows)), default=0.0)


def float32_slack(temperature: float, answers: np.ndarray) -> float:
    """What float32 arithmetic alone may add to ‖routed − flat‖₂, on top of :func:`implied_error`.

    Both teachers compute logits q̂·ĉ/τ in float32; |q̂·ĉ| ≤ 1, so each logit carries an error of a few
    ulps of 1/τ, and a logit error δ moves a softmax-weighted mean of answers by at most 2δ·max‖a‖.
    A fixed 1e-5 suffices at τ = 0.1 but not at τ ≈ 0.005 (logits near 200), where the flat teacher's
    own rounding exceeds it; hence 1e-5 plus 4 ulps of the largest logit, times 2·max‖a‖.
    """
    max_a = max_norm(answers)
    return 1e-5 + 2.0 * 4.0 * float(np.finfo(np.float32).eps) / float(temperature) * max_a


def effective_heads(weights: np.ndarray) -> np.ndarray:
    """exp(entropy) of each row of routing weights: 1 when peaked, N when uniform."""
    w = np.asarray(weights, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(w > 0, w * np.log(w), 0.0).sum(axis=1)
    return np.exp(h)


def best_m(weights: np.ndarray, eps: float) -> np.ndarray:
    """Per row, the fewest heads whose exact weights leave at most ``eps`` outside (any router's floor)."""
    w = -np.sort(-np.asarray(weights, np.float64), axis=1)
    outside = 1.0 - np.cumsum(w, axis=1)
    return np.minimum((outside > eps).sum(axis=1) + 1, w.shape[1])


def certified_k(index: ScreenIndex, q: np.ndarray, eps: float) -> np.ndarray:
    """Per row, the fewest screen candidates whose proven bound is ≤ ``eps`` (N where none is)."""
    qn = normalize(q)
    u = upper_bounds(index, qn).astype(np.float64)
    x = (qn @ index.rows.T).astype(np.float64)  # float32 logits: K only needs to be chosen, not proven
    out = np.empty(len(u), np.int64)
    for b in range(len(u)):
        order = np.argsort(-u[b], kind="stable")
        m = x[b].max()
        z = np.cumsum(np.exp(x[b, order] - m))  # exact mass of the first k candidates
        tail = np.exp(np.minimum(u[b, order] - m, 700.0))
        skipped = np.append(np.cumsum(tail[::-1])[::-1][1:], 0.0)  # bound on the mass from head k+1 on
        ok = np.flatnonzero(skipped / (z + skipped) <= eps)
        out[b] = ok[0] + 1 if ok.size else len(order)
    return out
