"""Routed teacher against the best-M curve (issue 12): speed, fidelity and the bound at several τ.

    PYTHONPATH=src .venv/bin/python scripts/routed_curve.py --n 16384 --taus 0.02,0.05,0.1 \
        --out docs/routing_curve.json

For each τ: a synthetic teacher (d = 384, seed 0), 256 near-centroid queries (seed 21, as the sweep),
best-M (keep the M heads of largest exact weight, renormalise: the floor of any M-candidate router),
and the routed teacher at the export's auto K and at K = 128/512/2048: cosine vs the flat teacher,
the median bound, whether the bound was ever below the true skipped mass, and single-query latency
(CPU, 1 thread, p50 after warm-up) next to the flat teacher's, all of one τ timed together in round-robin
blocks (h2l.bench.timing.time_blocks) so the speed-ups are paired.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from h2l.bench.sweep_fidelity import routed_bytes
from h2l.bench.timing import machine_info, pin_threads, time_blocks
from h2l.exporters.onnx_common import serialize
from h2l.exporters.onnx_teacher import make_teacher_model
from h2l.metrics import cosine
from h2l.model.routing import flat_weights, skipped_mass
from h2l.model.sampling import near_centroid_queries
from h2l.model.synthetic import synthetic_teacher
from h2l.runtime.sessions import make_runner


def p50s(runners: dict, q1: np.ndarray) -> dict:
    """Single-query p50 in µs of every runner, timed together in round-robin blocks (fair ratios)."""
    calls = {}
    for key, runner in runners.items():
        name = runner.session.get_inputs()[0].name
        calls[key] = (lambda sess=runner.session, name=name: sess.run(None, {name: q1}))
    return {key: round(float(np.median(t)), 1) for key, t in time_blocks(calls, min_time=1.0, warmup=30).items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--taus", default="0.02,0.05,0.1")
    ap.add_argument("--ks", default="128,512,2048")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = []
    with pin_threads(1):
        for tau in (float(x) for x in a.taus.split(",")):
            t = synthetic_teacher(a.n, a.d, temperature=tau, seed=0)
            q = near_centroid_queries(t.keys, tau, 256, 21)
            flat, _ = t.project(q)
            w = flat_weights(t.keys, q)
            runners = {"flat": make_runner(serialize(make_teacher_model(t), "t"), "cpu", threads=1)}
            row = {"tau": tau, "n": a.n, "median_top1_weight": float(np.median(w.max(axis=1))),
                   "best_m": {}, "routed": {}}
            order = np.argsort(-w, axis=1)
            for m in (int(x) for x in a.ks.split(",")):
                keep = order[:, :m]
                wk = np.take_along_axis(w, keep, axis=1)
                proj = np.einsum("bk,bkd->bd", wk / wk.sum(axis=1, keepdims=True), t.answers[keep].astype(np.float64))
                c = cosine(proj, flat)
                row["best_m"][str(m)] = {"mean_cosine": float(c.mean()), "min_cosine": float(c.min())}
            for label, k in [("auto", None)] + [(x, int(x)) for x in a.ks.split(",")]:
                data, kk = routed_bytes(t, k)
                run = make_runner(data, "cpu", threads=1)
                out = run.run_batched(q, 32)
                c = cosine(out["projected_embedding"], flat)
                true = skipped_mass(w, out["top_heads"])
                bound = out["neglected_mass_bound"].astype(np.float64)
                row["routed"][label] = {
                    "k": kk, "mean_cosine": float(c.mean()), "min_cosine": float(c.min()),
                    "median_bound": float(np.median(bound)), "p95_bound": float(np.percentile(bound, 95)),
                    "median_true_skipped": float(np.median(true)),
                    "bound_broken": int((bound < true * (1 - 1e-5)).sum())}
                runners[label] = run
            times = p50s(runners, q[:1])
            row["flat_p50_us"] = times.pop("flat")
            for label, us in times.items():
                row["routed"][label].update(p50_us=us, speedup=round(row["flat_p50_us"] / us, 2))
                print(tau, label, row["routed"][label], flush=True)
            del runners
            print(json.dumps({k: v for k, v in row.items() if k != "routed"}), flush=True)
            rows.append(row)
    report = {"machine": machine_info(1), "queries": "256 near-centroid (seed 21)", "rows": rows}
    if a.out:
        a.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
