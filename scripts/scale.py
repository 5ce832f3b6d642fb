"""Scale benchmark (issue 7): export and verify a teacher with N = 100,000 heads, d = 384.

    .venv/bin/python scripts/scale.py --n 100000 --repeat 3 --out docs/scale.json
    .venv/bin/python scripts/scale.py --n 100000 --routed --temperature 0.02 --repeat 3 --out docs/scale_routed.json

Runs `h2l export` and `h2l verify` as child processes and records each one's wall time and peak RSS
(ru_maxrss of the child), plus the bundle's size.  ``--repeat R`` runs both steps R times (export,
verify, export, verify, ...) and reports the median with min and max: peak RSS moves by a few tens of MB
from run to run, so one run cannot tell a 1% difference.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--routed", action="store_true", help="export with --routed (issue 12)")
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    h2l = [sys.executable, "-m", "h2l"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from h2l.importers.npz import save_npz
        from h2l.model.synthetic import synthetic_teacher

        save_npz(synthetic_teacher(a.n, a.d, temperature=a.temperature, seed=1), tmp / "t.npz")
        runs: dict[str, list[dict]] = {"export": [], "verify": []}
        for _ in range(a.repeat):
            for name, cmd in (("export", h2l + ["export", str(tmp / "t.npz"), "--out", str(tmp / "b"),
                                                "--force"] + (["--routed"] if a.routed else [])),
                              ("verify", h2l + ["verify", str(tmp / "b"), "--provider", "cpu", "--json"])):
                runs[name].append(_measure(name, cmd))
        steps = {name: _summary(rs) for name, rs in runs.items()}
        size = sum(f.stat().st_size for f in (tmp / "b").rglob("*") if f.is_file())
        extra = {}
        if a.routed:
            m = json.loads((tmp / "b" / "manifest.json").read_text())
            extra = {"temperature": a.temperature, "routed_candidates": m["models"]["routed"]["candidates"],
                     "routed_onnx_mb": round((tmp / "b" / "teacher_routed.onnx").stat().st_size / 1e6, 1),
                     "routed_summary": m["verification"]["summary"].get("cpu", {}).get("routed")}
        report = {"n": a.n, "d": a.d, **extra,
                  "teacher_onnx_mb": round((tmp / "b" / "teacher.onnx").stat().st_size / 1e6, 1),
                  "bundle_mb": round(size / 1e6, 1), "steps": steps,
                  "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(report, indent=2))
    if a.out:
        a.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def _measure(name: str, cmd: list[str]) -> dict:
    """Wall time and peak RSS of one child process (ru_maxrss of a wrapper's only child)."""
    wrapper = [sys.executable, "-c",
               "import resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:]); "
               "print(json.dumps({'rc': p.returncode, 'maxrss_kb': "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)", *cmd]
    t0 = time.perf_counter()
    p = subprocess.run(wrapper, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    info = json.loads(p.stderr.strip().splitlines()[-1])
    if info["rc"] != 0:
        sys.exit(f"{name} failed: {p.stderr[-2000:]}")
    run = {"wall_s": round(wall, 1), "peak_rss_mb": round(info["maxrss_kb"] / 1024, 1)}
    print(name, run, flush=True)
    return run


def _summary(runs: list[dict]) -> dict:
    """One run as it is; several as the median (the keys one run has) plus min, max and every run."""
    if len(runs) == 1:
        return runs[0]
    wall = sorted(r["wall_s"] for r in runs)
    rss = sorted(r["peak_rss_mb"] for r in runs)
    out = {"wall_s": statistics.median(wall), "wall_min_s": wall[0], "wall_max_s": wall[-1],
           "peak_rss_mb": statistics.median(rss), "peak_rss_min_mb": rss[0], "peak_rss_max_mb": rss[-1]}
    return {**out, "runs": runs}


if __name__ == "__main__":
    main()
