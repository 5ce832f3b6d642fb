"""Per-step profile of distillation on one device: stream, labels, student step, full step (and no host sync).

    PYTHONPATH=src python scripts/step_profile.py --device cuda --out $OUT/step_profile.json
    PYTHONPATH=src python scripts/step_profile.py --device cpu --n 1024 --reps 5 --out /tmp/p.json

N = 1024 with H6 L4 ff 2048 and N = 16384 with ff 512, batch 1024 (the issue's configurations), per
--precision.  CUDA timings are CUDA events around ``--reps`` calls after warm-up (wall per call, queue
drained).  ``sync_free`` is True when a full training step runs under
``torch.cuda.set_sync_debug_mode("error")``: nothing in it waits on the host.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from h2l.distill.sampler import QueryStream, SamplerMix
from h2l.distill.train import TrainConfig, matmul_precision, new_student, train_step
from h2l.model.student import StudentConfig
from h2l.model.synthetic import synthetic_teacher


def timer(dev: torch.device, fn, reps: int) -> float:
    """Median ms per call; on CUDA the queue is drained before and after each timed block."""
    for _ in range(3):
        fn()
    xs = []
    for _ in range(reps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        xs.append((time.perf_counter() - t0) * 1e3 / 5)
    return round(statistics.median(xs), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, nargs="*", default=[1024, 16384])
    ap.add_argument("--precisions", nargs="*", default=None)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    dev = torch.device(args.device)
    precisions = args.precisions or (["fp32", "tf32", "bf16"] if dev.type == "cuda" else ["fp32"])
    res: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "batch": args.batch, "threads": torch.get_num_threads(), "rows": []}
    for n in args.n:
        layers, ff = (4, 2048) if n <= 1024 else (4, 512)
        t = synthetic_teacher(n, 384, seed=n)
        for prec in precisions:
            cfg = TrainConfig(steps=1000, batch_size=args.batch, precision=prec)
            with matmul_precision(prec, dev):
                stream = QueryStream(t, None, SamplerMix(), torch.Generator(dev).manual_seed(0))
                model = new_student(StudentConfig(384, 6, layers, ff), t, 0).to(dev).train()
                opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                        **({"fused": True} if dev.type == "cuda" else {}))
                q, y = stream.batch(args.batch)
                row = {"n": n, "student": f"lean H6 L{layers} ff{ff}", "precision": prec,
                       "stream_ms": timer(dev, lambda s=stream: s.sample(args.batch), args.reps),
                       "labels_ms": timer(dev, lambda s=stream, q=q: s.teacher(q), args.reps),
                       "student_step_ms": timer(dev, lambda m=model, o=opt, q=q, y=y, c=cfg:
                                                train_step(m, o, q, y, 10, c), args.reps),
                       "full_step_ms": timer(dev, lambda s=stream, m=model, o=opt, c=cfg:
                                             train_step(m, o, *s.batch(args.batch), 10, c), args.reps)}
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                    try:
                        train_step(model, opt, *stream.batch(args.batch), 11, cfg)
                        row["sync_free"] = True
                    except RuntimeError as exc:
                        row["sync_free"] = f"False: {str(exc).splitlines()[0][:200]}"
                    finally:
                        torch.cuda.set_sync_debug_mode(0)
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
