"""Know your teacher before routing it: effective heads, the candidates a router needs, the K to ship.

Shared by ``h2l teacher info`` and the export report.  Everything is measured
on seeded near-centroid queries (the queries a service mostly sees), with the
flat teacher's exact weights, so the numbers say what *any* router could do
(best-M) and what the int8 screen's certificate needs (certified K).
"""

from __future__ import annotations

import numpy as np

from .routing import ScreenIndex, best_m, certified_k, effective_heads, flat_weights, make_screen
from .sampling import near_centroid_queries, sampled_queries

EPSILONS = (1e-2, 1e-4, 1e-6)
DEFAULT_EPSILON = 1e-5  # the shipped K certifies this mass on 95% of near-centroid and sampled queries
MIN_K = 32
#: The auto K never exceeds this: the graph gathers K rows per query ([batch, K, d] floats), and where
#: more are needed the teacher is spread, the bound says so per query, and callers fall back to flat.
MAX_AUTO_K = 2048
ROWS = 32  # queries measured at once: every statistic here is per query


def _stats(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "p95": float(np.percentile(x, 95)), "max": float(np.max(x))}


def profile_queries(keys: np.ndarray, temperature: float, n: int, seed: int) -> np.ndarray:
    """Half near-centroid, half sampled (1–3 centroid mixes): where the export picks K."""
    return np.concatenate([near_centroid_queries(keys, temperature, n - n // 2, seed),
                           sampled_queries(keys, temperature, n // 2, seed + 1)])


def choose_k(index: ScreenIndex, queries: np.ndarray, eps: float = DEFAULT_EPSILON, quantile: float = 95) -> int:
    """The K that certifies ``eps`` on ``quantile``% of ``queries``, rounded up to 16 (32 ≤ K ≤ 2048, ≤ N)."""
    ks = np.concatenate([certified_k(index, queries[i:i + ROWS], eps) for i in range(0, len(queries), ROWS)])
    need = float(np.percentile(ks, quantile))
    k = int(np.ceil(max(need, MIN_K) / 16) * 16)
    return min(k, MAX_AUTO_K, index.n_heads)


def teacher_profile(keys: np.ndarray, answers: np.ndarray, temperature: float, *, n: int = 256, seed: int = 0,
                    index: ScreenIndex | None = None) -> dict:
    """Effective heads and candidates needed on ``n`` near-centroid queries, with a plain verdict."""
    n_heads = keys.shape[1]
    q = near_centroid_queries(keys, temperature, n, seed)
    index = index if index is not None else make_screen(keys, answers)
    eff: list[np.ndarray] = []
    top1: list[np.ndarray] = []
    bm: dict[float, list[np.ndarray]] = {e: [] for e in EPSILONS}
    ck: dict[float, list[np.ndarray]] = {e: [] for e in EPSILONS}
    for i in range(0, n, ROWS):  # per row, so a few rows at a time: [256, N] float64 is 200 MB at N = 100k
        w = flat_weights(keys, q[i:i + ROWS])
        eff.append(effective_heads(w))
        top1.append(w.max(axis=1))
        for eps in EPSILONS:
            bm[eps].append(best_m(w, eps))
            ck[eps].append(certified_k(index, q[i:i + ROWS], eps))
    effective, peak = np.concatenate(eff), np.concatenate(top1)
    need = {f"{e:g}": {"best_m": _stats(np.concatenate(bm[e])), "certified_k": _stats(np.concatenate(ck[e]))}
            for e in EPSILONS}
    worst = need[f"{1e-4:g}"]["certified_k"]["median"]
    verdict = ("peaked: a routed teacher can be exact here (median certified K for mass 1e-4 is "
               f"{worst:g} of {n_heads})")
    exact = worst <= n_heads / 4
    if not exact:
        verdict = (f"spread: at τ = {temperature:g} a routed teacher cannot be exact here. The median query needs "
                   f"{worst:g} of {n_heads} heads to leave mass ≤ 1e-4 outside (effective heads: median "
                   f"{np.median(effective):.0f}); routing saves little. Use the flat teacher or a lower τ.")
    return {"queries": {"kind": "near-centroid", "n": n, "seed": seed}, "n_heads": n_heads,
            "temperature": temperature, "effective_heads": _stats(effective),
            "top1_weight": _stats(peak), "candidates_needed": need, "routable": exact, "verdict": verdict}
