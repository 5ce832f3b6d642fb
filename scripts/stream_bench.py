"""CPU per-step profile of distillation, old code against new, interleaved: stream, labels, student step, full step.

    git archive b3c4e11 src | tar -x -C /tmp/h2l-old
    PYTHONPATH=src nice -n 10 python scripts/stream_bench.py --old-src /tmp/h2l-old/src --out docs/stream_bench.json

The old package is imported under the name ``h2l_old`` in the same process, and every repetition times
each variant once in turn, so load from other processes on a shared machine hits old and new alike.
"stream" is ``QueryStream.sample`` (no labelling matmul); "labels" is the teacher's projection of the
batch; "student step" is forward + backward + AdamW on a fixed batch; "full step" is one training step
(stream + labels + student step).  Medians over ``--reps`` after one warm-up round.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def load_old(src: Path):
    """Import the old h2l as ``h2l_old`` (its imports are relative, so a renamed copy works)."""
    tmp = Path(tempfile.mkdtemp())
    shutil.copytree(src / "h2l", tmp / "h2l_old")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("h2l_old")


def variants(pkg: str, tag: str, ns: list[int], batch: int, archs: list[str | None], stream_only: bool) -> dict:
    sampler = importlib.import_module(f"{pkg}.distill.sampler")
    train = importlib.import_module(f"{pkg}.distill.train")
    student = importlib.import_module(f"{pkg}.model.student")
    synthetic = importlib.import_module(f"{pkg}.model.synthetic")
    out = {}
    cfg = train.TrainConfig(steps=1000)
    for n in ns:
        t = synthetic.synthetic_teacher(n, 384, seed=n)
        stream = sampler.QueryStream(t, None, sampler.SamplerMix(), torch.Generator().manual_seed(0))
        q = stream.sample(batch)
        out[f"stream {tag} N={n}"] = lambda s=stream: s.sample(batch)
        if stream_only:
            continue
        if tag == "new":  # the same TeacherTorch matmul in both versions
            out[f"labels N={n}"] = lambda s=stream, q=q: s.teacher(q)
        layers, ff = (4, 2048) if n <= 1024 else (4, 512)
        for arch in archs:
            torch.manual_seed(0)
            kw = {} if arch is None else {"arch": arch}
            m = student.ProjectionTransformer(student.StudentConfig(384, 6, layers, ff, **kw)).train()
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
            qb, tb = stream.batch(batch)
            name = arch or "transformer"

            def step(q=qb, y=tb, m=m, opt=opt):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * train.lr_factor(10, cfg)
                loss = train.distill_loss(m(q), y, 0.7)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            out[f"student step {tag} {name} L{layers} ff{ff} (N={n})"] = step
            out[f"full step {tag} {name} L{layers} ff{ff} N={n}"] = lambda s=stream, step=step: step(*s.batch(batch))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--old-src", type=Path, help="src/ of the old code (git archive b3c4e11 src)")
    ap.add_argument("--n", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stream-only", action="store_true", help="time only the stream (cheap: many reps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fns = {}
    if args.old_src:
        load_old(args.old_src)
        fns |= variants("h2l_old", "old", args.n, args.batch, [None], args.stream_only)
    fns |= variants("h2l", "new", args.n, args.batch, ["lean", "transformer"], args.stream_only)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(args.reps + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if rep:
                times[k].append((time.perf_counter() - t0) * 1e3)
        print(f"round {rep} done", flush=True)
    res = {"threads": args.threads, "batch": args.batch, "reps": args.reps, "torch": torch.__version__,
           "old_src": str(args.old_src) if args.old_src else None,
           "median_ms": {k: round(statistics.median(v), 3) for k, v in times.items()},
           "min_ms": {k: round(min(v), 3) for k, v in times.items()}}
    args.out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    for k, v in res["median_ms"].items():
        print(f"{k:55s} {v:10.2f} ms")


if __name__ == "__main__":
    main()
