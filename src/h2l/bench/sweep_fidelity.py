"""The routed teacher in ``h2l bench``: its timed variant, and the sweep's fidelity next to its latency.

Fidelity is measured against the flat float32 teacher on seeded near-centroid
and far-off queries, for the routed teacher (cosine and its own bound) and for
the student (only a trained one: an untrained student's cosine means nothing).
"""

from __future__ import annotations

import numpy as np

from ..exporters import INPUT_NAME, PROJECTED_NAME
from ..exporters.onnx_common import serialize
from ..exporters.onnx_routed import BOUND_NAME, make_routed_model
from ..metrics import cosine
from ..model.routing import make_screen
from ..model.routing_profile import choose_k, profile_queries
from ..model.sampling import far_off_queries, near_centroid_queries
from ..model.teacher import Teacher
from ..runtime.sessions import make_runner

FIDELITY_QUERIES = {"near_centroid": 256, "far_off": 64}


def routed_bytes(teacher: Teacher, candidates: int | None = None, seed: int = 0) -> tuple[bytes, int]:
    """teacher_routed.onnx as ``h2l export --routed`` builds it (K chosen the same way unless given)."""
    index = make_screen(teacher.keys, teacher.answers)
    k = candidates or choose_k(index, profile_queries(teacher.keys, teacher.temperature, 256, seed + 7))
    k = min(k, teacher.n_heads)
    return serialize(make_routed_model(index, k, {}), "teacher_routed.onnx"), k


def routed_variant(data: bytes, threads: int):
    sess = make_runner(data, "cpu", threads=threads).session
    return lambda q: sess.run(None, {INPUT_NAME: q})


def fidelity_rows(teacher: Teacher, n: int, graphs: dict[tuple[str, str], bytes], threads: int,
                  seed: int = 0) -> list[dict]:
    """Cosine vs the flat teacher per (model, variant) and query source; routed rows add the bound."""
    sources = {"near_centroid": near_centroid_queries(teacher.keys, teacher.temperature,
                                                      FIDELITY_QUERIES["near_centroid"], seed + 21),
               "far_off": far_off_queries(teacher.keys, teacher.temperature, FIDELITY_QUERIES["far_off"], seed + 22)}
    rows = []
    runners = {key: make_runner(data, "cpu", threads=threads) for key, data in graphs.items()}
    for src, q in sources.items():
        flat, w = teacher.project(q)
        top1 = np.median(w.max(axis=1))
        for (model, variant), runner in runners.items():
            out = runner.run_batched(q, 32)
            cos = cosine(out[PROJECTED_NAME], flat)
            row = {"n": n, "model": model, "variant": variant, "source": src, "queries": len(q),
                   "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                   "median_top1_weight": float(top1)}
            if BOUND_NAME in out:
                row["median_bound"] = float(np.median(out[BOUND_NAME]))
                row["max_bound"] = float(np.max(out[BOUND_NAME]))
            rows.append(row)
    return rows


def sweep_table(report: dict, batch: int) -> tuple[list[str], list[list[str]]]:
    """One row per N: latency per query of flat / routed / student, routed speed-up, and fidelity."""
    lat: dict[tuple, float] = {}
    for r in report["results"]:
        if r["batch"] == batch and r["provider"] == "cpu":
            lat[(r["n"], r["model"], r["variant"])] = r["per_query_p50_us"]
    fid = {(f["n"], f["model"], f["variant"], f["source"]): f for f in report.get("fidelity", [])}
    cols = ["N", "K", "flat ORT µs", "routed µs", "speed-up", "student folded µs", "student int8 µs",
            "routed cos near (mean/min)", "routed cos far (mean/min)", "median bound near", "student cos near"]
    rows = []
    for n in report["ns"]:
        flat, routed = lat.get((n, "teacher", "ort")), lat.get((n, "routed", "ort_screen"))

        def f(key, src, n=n):  # called in this iteration; n bound for the linter
            x = fid.get((n, *key, src))
            return f"{x['mean_cosine']:.6f} / {x['min_cosine']:.6f}" if x else "—"
        near = fid.get((n, "routed", "ort_screen", "near_centroid"), {})
        stud = fid.get((n, "student", "ort_folded", "near_centroid"))
        rows.append([str(n), str(report.get("candidates", {}).get(str(n), "—")),
                     _us(flat), _us(routed), f"{flat / routed:.1f}×" if flat and routed else "—",
                     _us(lat.get((n, "student", "ort_folded"))), _us(lat.get((n, "student", "ort_int8"))),
                     f(("routed", "ort_screen"), "near_centroid"), f(("routed", "ort_screen"), "far_off"),
                     f"{near['median_bound']:.2g}" if near else "—",
                     f"{stud['mean_cosine']:.5f} / {stud['min_cosine']:.5f}" if stud else "untrained"])
    return cols, rows


def _us(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def plot_sweep_batches(report: dict, path) -> list:
    """One PNG per batch size beside ``path`` (``<stem>_batch<B>.png``): latency and fidelity against N."""
    import io
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import write_bytes_atomic

    path = Path(path)
    written = []
    for batch in sorted({r["batch"] for r in report["results"]}):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4))
        series: dict[str, list] = {}
        for r in report["results"]:
            if r["batch"] == batch:
                series.setdefault(f"{r['model']} {r['variant']} ({r['provider']})", []).append(
                    (r["n"], r["per_query_p50_us"]))
        for label, pts in sorted(series.items()):
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, ys, marker="o", linestyle="--" if label.startswith("teacher") else "-", label=label)
        ax.set(xscale="log", yscale="log", xlabel="teacher heads N", ylabel="median µs per query",
               title=f"latency, batch {batch}, {report['machine']['threads']['intra_op']} thread(s)")
        fseries: dict[str, list] = {}
        for f in report.get("fidelity", []):
            fseries.setdefault(f"{f['model']} {f['variant']}, {f['source']} (1 − mean cos)", []).append(
                (f["n"], max(1 - f["mean_cosine"], 1e-12)))
            if "median_bound" in f:
                fseries.setdefault(f"{f['model']} median bound, {f['source']}", []).append(
                    (f["n"], max(f["median_bound"], 1e-12)))
        for label, pts in sorted(fseries.items()):
            xs, ys = zip(*sorted(pts), strict=True)
            bx.plot(xs, ys, marker="o", linestyle=":" if "bound" in label else "-", label=label)
        bx.set(xscale="log", yscale="log", xlabel="teacher heads N", ylabel="vs flat teacher (floor 1e-12)",
               title=f"fidelity, τ = {report.get('temperature', '?')}")
        for a in (ax, bx):
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        out = path.with_name(f"{path.stem}_batch{batch}{path.suffix or '.png'}")
        write_bytes_atomic(out, buf.getvalue())
        written.append(out)
    return written
