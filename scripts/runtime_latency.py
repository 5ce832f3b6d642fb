"""Single-query and batch-32 latency of the Rust and Go consumers vs Python onnxruntime, one run, one bundle.

    .venv/bin/python scripts/runtime_latency.py artifacts/demo/bundle --out docs/runtimes.json

All three use onnxruntime's CPU provider with 1 intra-op thread on the same libonnxruntime
(the Python wheel's); medians of N calls after a warm-up. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    bundle = args.bundle.resolve()
    from h2l.bench.suites import bench_bundle
    from h2l.bench.timing import machine_info
    from h2l.runtime.sessions import library_path

    env = {**os.environ, "ORT_DYLIB_PATH": library_path(), "H2L_BUNDLE": str(bundle)}
    rows = []
    py = bench_bundle(bundle, checkpoint=None, providers={"cpu"}, batches=[1, 32], threads=1, quick=False)
    for r in py["results"]:
        if r["provider"] == "cpu" and r["model"] in ("teacher", "student") and r["variant"].startswith("ort"):
            rows.append({"runtime": "python", "model": r["model"], "batch": r["batch"], "p50_us": r["p50_us"],
                         "per_query_us": r["per_query_p50_us"]})
    cmds = {"rust": (["cargo", "run", "--release", "-q", "--bin", "h2l-rs", "--", str(bundle), "--bench",
                      str(args.calls)], REPO / "runtimes" / "rust"),
            "go": (["go", "run", "./cmd/h2l-go", "-bench", str(args.calls), str(bundle)], REPO / "runtimes" / "go")}
    for cmd, cwd in cmds.values():
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True)
        rows += [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    report = {"bundle": str(args.bundle), "machine": machine_info(1), "calls": args.calls, "results": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print("| model | batch | python µs | rust µs | go µs |\n|---|---|---|---|---|")
    for model in ("teacher", "student"):
        for batch in (1, 32):
            cell = {r["runtime"]: r["p50_us"] for r in rows if r["model"] == model and r["batch"] == batch}
            if cell:
                print(f"| {model} | {batch} | " + " | ".join(f"{cell.get(k, float('nan')):.1f}"
                                                          for k in ("python", "rust", "go")) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
