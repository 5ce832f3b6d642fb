"""Verify the routed teacher: same arrays as the flat one, the numpy reference, and the bound never broken.

The bound is the contract: ‖routed − flat‖₂ ≤ 2 · bound · max‖a‖ (+ float32 slack,
1e-5 + 8·ε₃₂/τ·max‖a‖: logits reach 1/τ).  It is checked on golden, sampled, random and far-off queries, where
far-off rows spread the flat teacher's mass and a wrong bound shows.  Cosine
against the flat teacher is reported per query source, never gated.
"""

from __future__ import annotations

import numpy as np

from ..exporters import PROJECTED_NAME
from ..exporters.onnx_routed import BOUND_NAME, ESTIMATE_NAME, ROUTED_FILE, TOP_HEADS, TOP_WEIGHTS, routed_arrays
from ..metrics import cosine
from ..model.routing import float32_slack, implied_error, make_screen, route
from ..model.sampling import far_off_queries, near_centroid_queries
from ..model.teacher import project_arrays



def routed_sources(keys: np.ndarray, temperature: float, sources: dict, seed: int) -> dict[str, np.ndarray]:
    """verify's sources plus near-centroid and far-off queries (for the routed teacher only)."""
    return {**sources, "near_centroid": near_centroid_queries(keys, temperature, 128, seed + 11),
            "far_off": far_off_queries(keys, temperature, 64, seed + 12)}


def check_routed(bundle, provider: str, runner, sources: dict[str, np.ndarray], keys: np.ndarray,
                 answers: np.ndarray, atol: float, summary: dict, check_cls, batch_sizes) -> list:
    """Every routed-teacher check on one provider, as verify's Check records."""
    meta = bundle.models["routed"]
    checks = []
    estimate = meta.get("bound") == "estimate"
    mass_name = ESTIMATE_NAME if estimate else BOUND_NAME
    index = ivf = None
    if meta.get("router", "screen") == "screen":
        index = make_screen(keys, answers)
        scalar = lambda v: np.array([v], np.float32)  # noqa: E731 - 0-d initializers are stored with shape (1,)
        expected = {"screen_weights": index.weights, "screen_scale": index.scale, "rho": scalar(index.rho),
                    "slack": scalar(index.slack), "key_norm": scalar(index.key_norm), "rows": index.rows,
                    "answers": index.answers}
        bad = _differing_initializers(bundle.read_verified(meta["file"]), expected)
        checks.append(check_cls("routed", provider, "same_teacher", not bad, "integrity",
                                detail=("initializers differ from the flat teacher's: " + ", ".join(bad)) if bad else ""))
        if bad:
            return checks
    else:  # ivf: the shipped tables are the reference; rows and answers must still be the teacher's
        from ..exporters.onnx_routed_ivf import ivf_index_from_arrays

        held = routed_arrays(bundle.read_verified(meta["file"]))
        ok = "rows" in held and "answers" in held and np.array_equal(held["rows"], np.ascontiguousarray(keys.T)) \
            and np.array_equal(held["answers"], answers)
        checks.append(check_cls("routed", provider, "same_teacher", ok, "integrity",
                                detail="" if ok else "rows/answers differ from the flat teacher's"))
        if not ok:
            return checks
        ivf = ivf_index_from_arrays(held)
    max_a = float(np.linalg.norm(answers.astype(np.float64), axis=1).max())
    k = int(meta["candidates"])
    slack = float32_slack(bundle.manifest["teacher"]["temperature"], answers)  # float32 on top of the bound
    for src, q in routed_sources(keys, bundle.manifest["teacher"]["temperature"], sources, 0).items():
        flat, _ = project_arrays(q, keys, answers)
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

            # [32, K, d] at a time
            refs = [route(index, q[i:i + 32], k) if ivf is None else route_ivf(ivf, q[i:i + 32])
                    for i in range(0, len(q), 32)]
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


def _differing_initializers(path, expected: dict[str, np.ndarray]) -> list[str]:
    """Names whose stored bytes differ from ``expected`` (compared raw: no second copy of a 350 MB graph)."""
    import onnx

    from ..exporters.onnx_common import load_model

    model = load_model(path, ROUTED_FILE)
    held = {t.name: t for t in model.graph.initializer}
    bad = []
    for name, want in expected.items():
        t = held.get(name)
        want = np.ascontiguousarray(want)
        if t is None or list(t.dims) != list(want.shape) or \
                onnx.helper.tensor_dtype_to_np_dtype(t.data_type) != want.dtype or \
                t.raw_data != want.astype(want.dtype.newbyteorder("<")).tobytes():
            bad.append(name)
    return bad
