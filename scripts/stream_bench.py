"""CPU per-step profile of distillation: the stream, the labels, the student step, the full step.

    PYTHONPATH=src python scripts/stream_bench.py --out docs/stream_bench.json [--label new] [--n 1024 16384]

Runs against whatever ``h2l`` is on PYTHONPATH, so the same script times the old code (a worktree at
b3c4e11) and the new one.  Medians of ``--reps`` timed repetitions after two warm-ups; torch threads as
given (default 2).  "stream" is ``QueryStream.sample`` (no labelling matmul); "labels" is the teacher's
projection of that batch; "student step" is forward + backward + AdamW on a fixed batch; "full step" is
what one training step does (stream + labels + student step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from h2l.distill.sampler import QueryStream, SamplerMix
from h2l.distill.train import TrainConfig, distill_loss, lr_factor
from h2l.model.student import ProjectionTransformer, StudentConfig
from h2l.model.synthetic import synthetic_teacher


def timed(fn, reps: int) -> float:
    for _ in range(2):
        fn()
    xs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t0)
    return statistics.median(xs) * 1e3


def student(arch: str | None, layers: int, ff: int) -> ProjectionTransformer:
    torch.manual_seed(0)
    kw = {} if arch is None else {"arch": arch}
    return ProjectionTransformer(StudentConfig(384, 6, layers, ff, **kw))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--label", default="new")
    ap.add_argument("--n", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", nargs="*", default=["default"], help="student archs for the step (default = "
                    "the code's default StudentConfig)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = json.loads(args.out.read_text()) if args.out.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__import__("h2l").__file__).parent).stdout.strip()
    res: dict = {"commit": commit, "threads": args.threads, "batch": args.batch, "reps": args.reps,
                 "torch": torch.__version__, "ms": {}}
    cfg = TrainConfig(steps=1000)
    for n in args.n:
        t = synthetic_teacher(n, 384, seed=n)
        stream = QueryStream(t, None, SamplerMix(), torch.Generator().manual_seed(0))
        q = stream.sample(args.batch)
        res["ms"][f"stream_N{n}"] = timed(lambda: stream.sample(args.batch), args.reps)
        res["ms"][f"labels_N{n}"] = timed(lambda: stream.teacher(q), args.reps)
        print(n, res["ms"], flush=True)
    for arch in args.archs:
        a = None if arch == "default" else arch
        for n, (layers, ff) in ((1024, (4, 2048)), (16384, (4, 512))):
            if n not in args.n:
                continue
            t = synthetic_teacher(n, 384, seed=n)
            stream = QueryStream(t, None, SamplerMix(), torch.Generator().manual_seed(0))
            m = student(a, layers, ff).train()
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
            qb, tb = stream.batch(args.batch)

            def step(q=qb, y=tb):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(10, cfg)
                loss = distill_loss(m(q), y, 0.7)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def full():
                step(*stream.batch(args.batch))

            res["ms"][f"student_step_{arch}_N{n}_L{layers}_ff{ff}"] = timed(step, args.reps)
            res["ms"][f"full_step_{arch}_N{n}_L{layers}_ff{ff}"] = timed(full, args.reps)
            print(arch, n, res["ms"], flush=True)
    res["ms"] = {k: round(v, 3) for k, v in res["ms"].items()}
    rows[args.label] = res
    args.out.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
