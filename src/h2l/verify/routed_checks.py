"""Verify the routed teacher: same arrays as the flat one, the numpy reference, and the bound never broken.

The bound is the contract: ‖routed − flat‖₂ ≤ 2 · bound · max‖a‖ (+ float32 slack,
1e-5 + 8·ε₃₂/τ·max‖a‖: logits reach 1/τ).  It is checked on golden, sampled, random and far-off queries, where
far-off rows spread the flat teacher's mass and a wrong bound shows.  Cosine
against the flat teacher is reported per query source, never gated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..exporters import PROJECTED_NAME
from ..exporters.onnx_routed import BOUND_NAME, ESTIMATE_NAME, TOP_HEADS, TOP_WEIGHTS, routed_arrays
from ..metrics import cosine
from ..model.routing import (
    ScreenIndex,
    float32_slack,
    implied_error,
    max_norm,
    round_up,
    route,
    screen_chunks,
    screen_slack,
)
from ..model.sampling import far_off_queries, near_centroid_queries
from ..model.teacher import project_arrays


def routed_sources(keys: np.ndarray, temperature: float, sources: dict, seed: int) -> dict[str, np.ndarray]:
    """verify's sources plus near-centroid and far-off queries (for the routed teacher only)."""
    return {**sources, "near_centroid": near_centroid_queries(keys, temperature, 128, seed + 11),
            "far_off": far_off_queries(keys, temperature, 64, seed + 12)}


@dataclass(frozen=True, eq=False)
class RoutedInputs:
    """What the routed checks need from the flat teacher, taken while its arrays were alive."""

    data: bytes | None  # teacher_routed.onnx's verified bytes (None when it differs from the teacher)
    differs: str  # "" when the shipped tables are the flat teacher's, else what differs
    sources: dict[str, np.ndarray]  # verify's queries plus near-centroid and far-off ones
    flat: dict[str, np.ndarray]  # the flat teacher's numpy projection of each source


def prepare_routed(bundle, data: bytes, keys: np.ndarray, answers: np.ndarray, sources: dict) -> RoutedInputs:
    """Compare the shipped tables with the flat teacher's and project every source with it (numpy)."""
    held = routed_arrays(data)  # views of the verified bytes
    if bundle.models["routed"].get("router", "screen") == "screen":
        bad = screen_differs(keys, answers, held)
        differs = ("initializers differ from the flat teacher's: " + ", ".join(bad)) if bad else ""
    else:  # ivf: the shipped tables are the reference; rows and answers must still be the teacher's
        ok = "rows" in held and "answers" in held and _same(held["rows"], keys.T) and _same(held["answers"], answers)
        differs = "" if ok else "rows/answers differ from the flat teacher's"
    if differs:
        return RoutedInputs(None, differs, sources, {})
    src = routed_sources(keys, bundle.manifest["teacher"]["temperature"], sources, 0)
    flat = {k: np.concatenate([project_arrays(q[i:i + 32], keys, answers)[0] for i in range(0, len(q), 32)])
            for k, q in src.items()}
    return RoutedInputs(data, "", src, flat)


def reference_index(bundle, data: bytes):
    """The numpy reference's index over the shipped tables (views of ``data``, proven equal to the teacher's)."""
    held = routed_arrays(data)
    if bundle.models["routed"].get("router", "screen") == "screen":
        one = lambda name: float(held[name].reshape(-1)[0])  # noqa: E731
        return ScreenIndex(held["screen_weights"], held["screen_scale"], one("rho"), one("key_norm"), one("slack"),
                           held["rows"], held["answers"])
    from ..exporters.onnx_routed_ivf import ivf_index_from_arrays

    return ivf_index_from_arrays(held)


def check_routed(bundle, provider: str, runner, ref, routed: RoutedInputs, atol: float, summary: dict, check_cls,
                 batch_sizes) -> list:
    """Every routed-teacher check on one provider against ``ref`` (from :func:`reference_index`)."""
    meta = bundle.models["routed"]
    checks = []
    estimate = meta.get("bound") == "estimate"
    mass_name = ESTIMATE_NAME if estimate else BOUND_NAME
    index, ivf = (ref, None) if isinstance(ref, ScreenIndex) else (None, ref)
    answers = ref.answers
    max_a = max_norm(answers)
    k = int(meta["candidates"])
    slack = float32_slack(bundle.manifest["teacher"]["temperature"], answers)  # float32 on top of the bound
    for src, q in routed.sources.items():
        flat = routed.flat[src]
        outs = [runner.run_batched(q, b) for b in batch_sizes]
        got = outs[0]
        dev = np.linalg.norm(got[PROJECTED_NAME].astype(np.float64) - flat, axis=1)
        allowed = implied_error(got[mass_name], answers) + slack
        excess = float((dev - allowed).max())
        if not estimate:
            checks.append(check_cls("routed", provider, f"bound_holds:{src}", excess <= 0, "parity", excess, 0.0,
                                    f"max ‖routed − flat‖ − (2·bound·{max_a:.3g} + {slack:.3g}) over {len(q)} rows"))
        err = max(float(np.abs(o[k_].astype(np.float64) - got[k_]).max()) for o in outs[1:]
                  for k_ in (PROJECTED_NAME, TOP_WEIGHTS, mass_name))
        checks.append(check_cls("routed", provider, f"batch_consistency:{src}", err <= atol, "parity", err, atol))
        if index is not None or ivf is not None:
            from ..model.routing_ivf import route_ivf

            # [8, K, d] at a time
            refs = [route(index, q[i:i + 8], k) if index is not None else route_ivf(ref, q[i:i + 8])
                    for i in range(0, len(q), 8)]
            ref_p, ref_b, ref_h = (np.concatenate([getattr(r, a) for r in refs])
                                   for a in ("projected", "bound", "top_heads"))
            err = max(float(np.abs(got[PROJECTED_NAME] - ref_p).max()), float(np.abs(got[mass_name] - ref_b).max()))
            same = float((got[TOP_HEADS] == ref_h).all(axis=1).mean())
            checks.append(check_cls("routed", provider, f"vs_numpy:{src}", err <= atol, "parity", err, atol,
                                    f"top_heads identical in {same:.1%} of rows"))
        cos = cosine(got[PROJECTED_NAME], flat)
        mass = got[mass_name].astype(np.float64)
        summary.setdefault(provider, {}).setdefault("routed", {})[src] = {
            "n": int(len(q)), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            f"median_{mass_name}": float(np.median(mass)), f"max_{mass_name}": float(mass.max()), "candidates": k}
        checks.append(check_cls("routed", provider, f"vs_flat:{src}", True, "info", float(cos.mean()), None,
                                f"mean cos {cos.mean():.7f} min {cos.min():.7f} median {mass_name} "
                                f"{np.median(mass):.3g} (n={len(q)}, K={k})"))
    return checks


def _same(a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> bool:
    """Equal shape, dtype and values, compared a row block at a time (no full-size temporaries)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return all(np.array_equal(a[i:i + chunk], b[i:i + chunk]) for i in range(0, max(len(a), 1), chunk))


def screen_differs(keys: np.ndarray, answers: np.ndarray, held: dict[str, np.ndarray]) -> list[str]:
    """Names of shipped screen initializers that differ from the screen of ``keys``.

    The screen is rebuilt a chunk of heads at a time and compared with the shipped views, so verify never
    holds a second screen; once equal, the shipped arrays themselves serve as the numpy reference's index
    (:func:`reference_index`)."""
    need = ("screen_weights", "screen_scale", "rows", "answers", "rho", "slack", "key_norm")
    bad = [n for n in need if n not in held]
    if bad:
        return bad
    d, n = keys.shape
    w, sc, rows = held["screen_weights"], held["screen_scale"], held["rows"]
    ok = {"screen_weights": w.shape == (d, n) and w.dtype == np.int8,
          "screen_scale": sc.shape == (n,) and sc.dtype == np.float32, "rows": _same(rows, keys.T)}
    rho = norm = 0.0
    for lo, wc, scc, r, nm in screen_chunks(keys):
        hi = lo + len(scc)
        ok["screen_weights"] = ok["screen_weights"] and np.array_equal(w[:, lo:hi].T, wc)
        ok["screen_scale"] = ok["screen_scale"] and np.array_equal(sc[lo:hi], scc)
        rho, norm = max(rho, r), max(norm, nm)
    scalars = {"rho": round_up(rho), "key_norm": round_up(norm), "slack": screen_slack(d)}
    for name, v in scalars.items():
        ok[name] = held[name].dtype == np.float32 and held[name].size == 1 and float(held[name].reshape(-1)[0]) == v
    ok["answers"] = _same(held["answers"], np.ascontiguousarray(answers, np.float32))
    return [name for name in need if not ok[name]]
