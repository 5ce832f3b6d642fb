"""Fidelity benchmark (issue 3): student-vs-teacher cosine on queries the student never saw.

    python scripts/fidelity.py --qa ../shared/data/unifyweaver-qa --out docs/fidelity.json [--only NAME ...]
    python scripts/fidelity.py --out docs/fidelity.json --n 1024 --arch memory --slots 256 --layers 2 --ff 1024 \
        --steps 600 --tag _mem256_600   # one synthetic row of any architecture, with latency vs the flat teacher

Rows: the seed recipe (fixed user queries, 200 epochs, batch 32), `h2l distill` defaults with and without
user queries on the UnifyWeaver data, and synthetic teachers (N = 64, 256, 1024) at the (H, L) `h2l arch`
picks.  Every number is measured on held-out queries; wall time is this machine's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from h2l.distill.train import TrainConfig, distill, distill_loss
from h2l.metrics import fidelity
from h2l.model.sampling import sampled_queries
from h2l.model.sizing import choose_arch
from h2l.model.student import ProjectionTransformer, StudentConfig
from h2l.model.synthetic import synthetic_teacher
from h2l.model.teacher import Teacher


def evaluate(model: ProjectionTransformer, teacher: Teacher, q: np.ndarray) -> dict:
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(q)).numpy()
    ref, _ = teacher.project(q)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in fidelity(out, ref, teacher.answers).items()}


def seed_recipe(teacher: Teacher, epochs: int = 200, batch: int = 32, seed: int = 0) -> tuple:
    """The seed's recipe as we read it: train on the user queries only, epochs over a fixed set."""
    torch.manual_seed(seed)
    model = ProjectionTransformer(StudentConfig(teacher.dim, 4, 2, 512, dropout=0.1, normalize_input=False))
    q = torch.from_numpy(teacher.queries.train)
    y = torch.from_numpy(teacher.project(teacher.queries.train)[0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(q), generator=g)
        for i in range(0, len(q), batch):
            idx = perm[i:i + batch]
            loss = distill_loss(model(q[idx]), y[idx], 0.7)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qa", type=Path, help="UnifyWeaver Q-A folder (only for the UnifyWeaver rows)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--steps", type=int, default=TrainConfig().steps)
    ap.add_argument("--ff", type=int, default=512, help="feed-forward width of the synthetic students")
    ap.add_argument("--n", type=int, nargs="*", default=[64, 256, 1024], help="synthetic teacher sizes")
    ap.add_argument("--tag", default="", help="suffix for the synthetic row names (e.g. _long)")
    ap.add_argument("--arch", help="student architecture (lean, transformer, memory); default: the seed rows' "
                    "(H, L) from `h2l arch`, literal transformer")
    ap.add_argument("--layers", type=int, help="layers (default: the (H, L) rule)")
    ap.add_argument("--slots", type=int, default=0, help="memory slots M (--arch memory)")
    ap.add_argument("--batch", type=int, default=TrainConfig().batch_size)
    ap.add_argument("--plot", type=Path, help="only draw the fidelity–latency front of --out's rows to this PNG")
    args = ap.parse_args()
    if args.plot:
        return plot_front(json.loads(args.out.read_text()), args.plot)
    if args.arch:
        return synthetic_rows(args)
    rows = json.loads(args.out.read_text()) if args.out.exists() else {}
    want = lambda name: not args.only or name in args.only  # noqa: E731
    tmp = Path("/tmp/h2l-fidelity")
    tmp.mkdir(exist_ok=True)
    if any(want(n) for n in ("seed_recipe", "stream_user_queries", "stream_teacher_alone")):
        from h2l.importers.embed import embed
        from h2l.importers.qa import build_teacher, parse_qa_files

        uw = build_teacher(parse_qa_files(sorted(args.qa.glob("qa_pairs_v*.json"))), embed, temperature=0.1,
                           holdout_per_cluster=2, seed=0, name="unifyweaver")
        held = uw.queries.heldout
    if want("seed_recipe"):
        model, wall = seed_recipe(uw)
        rows["seed_recipe"] = {"teacher": "UnifyWeaver N=30", "arch": "H4 L2 ff512", "wall_s": round(wall, 1),
                               "heldout": evaluate(model, uw, held),
                               "train_set": evaluate(model, uw, uw.queries.train)}
        print("seed_recipe", rows["seed_recipe"], flush=True)
    for name, teacher in (("stream_user_queries", "uw"), ("stream_teacher_alone", "uw_alone")):
        if not want(name):
            continue
        t = uw if teacher == "uw" else uw.with_queries(None)
        res = distill(t, tmp / f"{name}.pt", config=TrainConfig(steps=args.steps), quiet=True)
        rows[name] = {"teacher": "UnifyWeaver N=30" + (" (no user queries)" if teacher != "uw" else ""),
                      "arch": "H4 L2 ff512", "steps": args.steps, "wall_s": res.report["wall_seconds"],
                      "heldout": evaluate(res.checkpoint.model(), uw, held)}
        print(name, rows[name], flush=True)
    for n in args.n:
        name = f"synthetic_n{n}{args.tag}"
        if not want(name):
            continue
        arch = choose_arch(n, 384)
        t = synthetic_teacher(n, 384, heldout_per_head=0, seed=n)
        res = distill(t, tmp / f"{name}.pt", student=StudentConfig(384, arch.heads, arch.layers, args.ff),
                      config=TrainConfig(steps=args.steps), quiet=True)
        q = sampled_queries(t.keys, t.temperature, 2048, seed=12345)
        rows[name] = {"teacher": f"synthetic N={n} d=384 τ=0.1", "arch": f"H{arch.heads} L{arch.layers} ff{args.ff}",
                      "steps": args.steps, "wall_s": res.report["wall_seconds"],
                      "heldout_sampled": evaluate(res.checkpoint.model(), t, q)}
        print(name, rows[name], flush=True)
        args.out.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    args.out.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


def latency_us(model_bytes: bytes, dim: int) -> float:
    """p50 µs per query, onnxruntime CPU, 1 thread, batch 1."""
    from h2l.bench.suites import _ort
    from h2l.bench.timing import time_calls

    fn = _ort(model_bytes, 1)
    q = np.random.default_rng(0).standard_normal((1, dim)).astype(np.float32)
    return round(time_calls(lambda: fn(q), batch=1, min_time=1.0, max_calls=20000)[1], 1)


def synthetic_rows(args) -> None:
    """Synthetic rows of any architecture: fidelity on 2048 unseen sampled queries, latency vs the flat teacher."""
    from h2l.exporters.onnx_common import serialize
    from h2l.exporters.onnx_student import make_folded_student_model
    from h2l.exporters.onnx_teacher import make_teacher_model
    from h2l.model.sizing import shipped_params
    from h2l.model.student import fold

    rows = json.loads(args.out.read_text()) if args.out.exists() else {}
    for n in args.n:
        arch = choose_arch(n, 384)
        layers = args.layers or arch.layers
        scfg = StudentConfig(384, arch.heads, layers, args.ff, arch=args.arch, slots=args.slots)
        t = synthetic_teacher(n, 384, heldout_per_head=0, seed=n)
        name = f"synthetic_n{n}{args.tag}"
        res = distill(t, Path("/tmp") / f"h2l-fid-{name}.pt", student=scfg,
                      config=TrainConfig(steps=args.steps, batch_size=args.batch), quiet=True)
        model = res.checkpoint.model()
        q = sampled_queries(t.keys, t.temperature, 2048, seed=12345)
        rows[name] = {"teacher": f"synthetic N={n} d=384 τ=0.1",
                      "arch": f"{args.arch} H{arch.heads} L{layers} ff{args.ff}" + (f" M{args.slots}" if args.slots
                                                                                   else ""),
                      "shipped_params": shipped_params(384, layers, args.ff, args.slots), "steps": args.steps,
                      "batch": args.batch, "wall_s": res.report["wall_seconds"],
                      "threads": torch.get_num_threads(), "best_step": res.checkpoint.metrics["best_step"],
                      "student_us_1thread": latency_us(serialize(make_folded_student_model(fold(model), {}), "s"),
                                                       384),
                      "teacher_us_1thread": latency_us(serialize(make_teacher_model(t), "t"), 384),
                      "heldout_sampled": evaluate(model, t, q)}
        print(name, rows[name], flush=True)
        args.out.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


def plot_front(rows: dict, path: Path) -> None:
    """1 − mean cosine against µs/query (1 thread) per N; the flat teacher's latency as a dashed line."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from h2l.atomic import write_bytes_atomic

    timed = {k: r for k, r in rows.items() if "student_us_1thread" in r}
    ns = sorted({int(r["teacher"].split("N=")[1].split()[0]) for r in timed.values()})
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, n in enumerate(ns):
        color = f"C{i}"
        pts = [(r["student_us_1thread"], 1 - r["heldout_sampled"]["mean_cosine"], r["arch"], r["steps"])
               for r in timed.values() if f"N={n} " in r["teacher"]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, label=f"student, N = {n}")
        for x, y, arch, steps in pts:
            ax.annotate(f"{arch.split()[0]} {steps}", (x, y), fontsize=7, color=color)
        t_us = [r["teacher_us_1thread"] for r in timed.values() if f"N={n} " in r["teacher"]]
        ax.axvline(sorted(t_us)[len(t_us) // 2], color=color, ls="--", lw=1, label=f"flat teacher, N = {n}")
    ax.axhline(1e-3, color="k", lw=0.8, ls=":", label="target mean 0.999")
    ax.set(xscale="log", yscale="log", xlabel="µs per query (onnxruntime CPU, 1 thread, batch 1)",
           ylabel="1 − mean cosine (unseen sampled queries)", title="fidelity–latency front (synthetic teachers)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


if __name__ == "__main__":
    main()
