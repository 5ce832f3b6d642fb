"""The distillation loop: AdamW on the teacher-labelled stream, validation on unseen queries, resume.

Loss ``(1−λ)·MSE + λ·(1−cos)``.  The checkpoint (see :mod:`h2l.distill.checkpoint`)
is rewritten atomically at every evaluation with the full training state,
so ``--resume`` continues an interrupted run and ends with the same metrics
as an uninterrupted run of the same seed.  The stream and the labels live on
the training device; the loss is read back only at evaluations.  Under
torchrun the run is data-parallel (see :mod:`h2l.distill.ddp`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import EXIT_USAGE, H2LError, InputError, ProviderError
from ..metrics import fidelity
from ..model.student import ProjectionTransformer, StudentConfig
from ..model.teacher import Teacher, require_flat
from . import ddp
from .checkpoint import StudentCheckpoint, load_checkpoint, save_checkpoint
from .sampler import QueryStream, SamplerMix

PRECISIONS = ("fp32", "tf32", "bf16")


class PrecisionError(H2LError):
    """A --precision that this device cannot honour (a usage error: exit 2)."""

    exit_code = EXIT_USAGE
    default_fix = "use --precision fp32 on CPU; tf32 and bf16 are for --device cuda"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    cosine_weight: float = 0.7
    eval_every: int = 50
    patience: int = 10
    min_delta: float = 1e-6
    seed: int = 0
    n_val_sampled: int = 512
    mix: SamplerMix = field(default_factory=SamplerMix)
    precision: str = "fp32"

    def validate(self) -> "TrainConfig":
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise InputError("--steps, --batch-size and eval interval must be ≥ 1", "pass positive values")
        if not 0.0 <= self.cosine_weight <= 1.0:
            raise InputError(f"--cosine-weight {self.cosine_weight} outside [0, 1]", "pass e.g. 0.7")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise InputError(f"learning rate {self.lr} must be finite and > 0", "pass e.g. 3e-3")
        if self.patience < 1 or self.n_val_sampled < 1 or not 0.0 <= self.warmup < 1.0:
            raise InputError("--patience and the validation size must be ≥ 1, warm-up in [0, 1)",
                             "pass e.g. --patience 10")
        if self.precision not in PRECISIONS:
            raise PrecisionError(f"--precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        self.mix.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DistillResult:
    checkpoint: StudentCheckpoint | None  # None on a torchrun rank other than 0
    report: dict


def distill_loss(student: torch.Tensor, target: torch.Tensor, cosine_weight: float) -> torch.Tensor:
    """(1−λ)·MSE + λ·(1 − mean cosine)."""
    mse = F.mse_loss(student, target)
    cos = F.cosine_similarity(student, target, dim=1).mean()
    return (1 - cosine_weight) * mse + cosine_weight * (1 - cos)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to zero."""
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: ProjectionTransformer, q: torch.Tensor, target: torch.Tensor, answers: np.ndarray) -> dict:
    """Fidelity on a fixed set (see :func:`h2l.metrics.fidelity`)."""
    model.eval()
    out = model(q).cpu().numpy()
    model.train()
    return fidelity(out, target.cpu().numpy(), answers)


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device not in ("cuda", "auto"):
        raise ProviderError(f"unknown --device {device!r}", "use cpu, cuda or auto")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if device == "cuda":
        raise ProviderError("--device cuda but torch sees no usable GPU", "use --device cpu or auto")
    return torch.device("cpu")


@contextlib.contextmanager
def matmul_precision(precision: str, dev: torch.device):
    """fp32: exact float32 matmuls; tf32: TensorFloat-32 matmuls; bf16: autocast of the student to bfloat16.

    CPU runs are fp32 only (refused otherwise, so a CPU run never changes
    meaning silently).  The global TF32 switches are restored on exit.
    """
    if dev.type != "cuda" and precision != "fp32":
        raise PrecisionError(f"--precision {precision} on {dev.type}: only CUDA runs use reduced precision")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, q: torch.Tensor, target: torch.Tensor,
               step: int, cfg: TrainConfig) -> torch.Tensor:
    """One AdamW step at the scheduled learning rate; returns the loss tensor (not read: no host sync)."""
    for g in opt.param_groups:
        g["lr"] = cfg.lr * lr_factor(step, cfg)
    with torch.autocast(q.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        pred = model(q)
    loss = distill_loss(pred.float(), target, cfg.cosine_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _split_user_queries(teacher: Teacher, extra: np.ndarray | None, seed: int):
    """(train queries for the sampler, held-out real queries for validation, or None)."""
    train, held = [], []
    if teacher.queries is not None:
        train.append(teacher.queries.train)
        held.append(teacher.queries.heldout)
    if extra is not None and len(extra):
        perm = np.random.default_rng(seed).permutation(len(extra))
        cut = max(1, len(extra) // 5) if len(extra) >= 5 else 0
        held.append(extra[perm[:cut]])
        train.append(extra[perm[cut:]])
    cat = lambda xs: np.concatenate(xs).astype(np.float32) if xs and sum(map(len, xs)) else None  # noqa: E731
    return cat(train), cat(held)


def new_student(scfg: StudentConfig, teacher: Teacher, seed: int) -> ProjectionTransformer:
    """The seeded initial student (the memory architecture starts as a compressed teacher)."""
    torch.manual_seed(seed)
    model = ProjectionTransformer(scfg)
    model.init_memory(teacher.keys, teacher.answers, seed)
    return model


def distill(teacher: Teacher, out: str | Path, *, student: StudentConfig | None = None,
            config: TrainConfig | None = None, queries: np.ndarray | None = None, device: str = "cpu",
            resume: bool = False, quiet: bool = False, stop_after: int | None = None) -> DistillResult:
    """Train a student on ``teacher``; write the checkpoint to ``out`` and a report beside it.

    Under torchrun (WORLD_SIZE > 1) every rank runs this function: ``batch_size``
    is the global batch, split evenly over the ranks.  ``stop_after`` ends the
    run early after that many steps, as an interruption would (used by tests of ``--resume``).
    """
    out = Path(out)
    require_flat(teacher, "h2l distill", "distil a flat teacher; distillation of affine, shared-head and top-k "
                 "teachers is not built yet")
    cfg = (config or TrainConfig()).validate()
    scfg = (student or StudentConfig(teacher.dim)).validate()
    if scfg.dim != teacher.dim:
        raise InputError(f"student d = {scfg.dim} but teacher d = {teacher.dim}", "omit the student dim")
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    ctx = ddp.dist_context(want_cuda)
    try:
        dev = pick_device(device, ctx.local_rank)
        if cfg.batch_size % ctx.world:
            raise InputError(f"--batch-size {cfg.batch_size} is not divisible by {ctx.world} ranks",
                             f"pass a multiple of {ctx.world} (it is the global batch)")
        with matmul_precision(cfg.precision, dev):
            result = _run(teacher, out, scfg, cfg, queries, dev, ctx, resume, quiet, stop_after)
        ddp.barrier(ctx)  # no rank tears gloo down while another still evaluates and writes
        return result
    except RuntimeError as exc:
        if not ctx.active:
            raise
        step = _checkpoint_step(out)
        raise ProviderError(f"rank {ctx.rank} of {ctx.world} lost a peer ({str(exc).splitlines()[0][:160]}); "
                            f"the last checkpoint {out} ({step}) is intact",
                            "fix the failed rank, then rerun the same torchrun command with --resume") from None
    finally:
        ddp.close(ctx)


def _checkpoint_step(out: Path) -> str:
    try:
        ck = load_checkpoint(out)
        return f"step {ck.metrics.get('steps_run')}"
    except InputError:
        return "none written yet"


def _run(teacher, out, scfg, cfg, queries, dev, ctx, resume, quiet, stop_after) -> DistillResult:
    model = new_student(scfg, teacher, cfg.seed).to(dev)
    train_model: torch.nn.Module = model
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=True if dev.type == "cuda" else None)  # None: AdamW's own default
    gen = torch.Generator(dev).manual_seed(ddp.rank_seed(cfg.seed, ctx.rank))
    train_q, held_q = _split_user_queries(teacher, queries, cfg.seed)
    stream = QueryStream(teacher, train_q, cfg.mix, gen)
    labeler = stream.teacher
    main = ctx.is_main
    per_rank = cfg.batch_size // ctx.world
    val_sets, val_targets = {}, {}
    if main:
        val_stream = QueryStream(teacher, train_q, cfg.mix, torch.Generator(dev).manual_seed(cfg.seed + 7919))
        # Selection and early stopping use a fixed sampled validation set; real held-out queries are only
        # reported, so the fidelity quoted for them is on queries used neither to train nor to choose.
        val_sets = {"sampled": val_stream.sample(cfg.n_val_sampled)}
        if held_q is not None and len(held_q):
            val_sets["heldout"] = torch.from_numpy(held_q).to(dev)
        val_targets = {k: labeler(v) for k, v in val_sets.items()}
    answers = teacher.answers
    train_config = {**cfg.to_dict(), "queries_sha256": _sha256(queries)}

    best_state: dict[str, torch.Tensor] | None
    start, best, best_step, best_state, bad = 0, -1.0, 0, None, 0
    history: dict[str, list] = {"step": [], "loss": [], **{f"val_{k}_cosine": [] for k in val_sets}}
    elapsed_before = 0.0
    if resume:
        if not out.is_file():
            raise InputError(f"--resume but {out} does not exist", "drop --resume to start a new run")
        ck = load_checkpoint(out)
        if ck.teacher_sha256 != teacher.fingerprint() or ck.config != scfg or ck.resume is None \
                or ck.train_config != train_config:
            raise InputError(f"{out} was made with another teacher, architecture, queries or config",
                             "resume with the same arguments, or drop --resume")
        r = ck.resume
        gens = r.get("generators", [r["generator"]])
        if len(gens) != ctx.world:
            raise InputError(f"{out} was written by a run on {len(gens)} rank(s), this one has {ctx.world}",
                             f"resume with --nproc-per-node × --nnodes = {len(gens)}")
        if ck.complete:  # nothing left to do: the finished run is the result
            return DistillResult(ck, {"checkpoint": str(out), "metrics": ck.metrics, "history": ck.history,
                                      "wall_seconds": r.get("elapsed", 0.0), "already_complete": True})
        model.load_state_dict(r["model"])
        opt.load_state_dict(r["optimizer"])
        gen.set_state(gens[ctx.rank])
        torch.set_rng_state(r["torch_rng"])
        start, best, best_step, bad, best_state = r["step"], r["best"], r["best_step"], r["bad"], r["best_state"]
        history, elapsed_before = ck.history, r.get("elapsed", 0.0)

    def save(step: int, complete: bool, gens: list, extra: dict | None = None) -> StudentCheckpoint:
        metrics = {"best_step": best_step, "steps_run": step, "selection": "val_sampled_cosine", **(extra or {})}
        state = best_state if best_state is not None else _cpu_state(model)
        ck = StudentCheckpoint(scfg, {k: v.clone() for k, v in state.items()}, teacher.fingerprint(),
                               train_config, metrics, history, complete,
                               {"step": step, "model": _cpu_state(model), "optimizer": _cpu_tree(opt.state_dict()),
                                "generator": gens[0], "generators": gens, "world_size": ctx.world,
                                "torch_rng": torch.get_rng_state(), "best": best, "best_step": best_step, "bad": bad,
                                "best_state": best_state, "elapsed": elapsed_before + time.perf_counter() - t0})
        save_checkpoint(out, ck)
        return ck

    t0 = time.perf_counter()
    train_model.train()
    bar = None
    if not quiet and main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc="distill", unit="step", file=sys.stderr, dynamic_ncols=True)
    step, stopped_early = start, False
    while step < cfg.steps:
        q, target = stream.batch(per_rank)
        loss = train_step(train_model, opt, q, target, step, cfg)
        step += 1
        if bar is not None:
            bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            gens = ddp.gather_states(ctx, gen.get_state())
            stop = False
            if main:
                ev = {k: evaluate(model, v, val_targets[k], answers) for k, v in val_sets.items()}
                history["step"].append(step)
                history["loss"].append(loss.detach().item())  # the only read-back of the loss
                for k in val_sets:
                    history[f"val_{k}_cosine"].append(ev[k]["mean_cosine"])
                score = ev["sampled"]["mean_cosine"]
                if score > best + cfg.min_delta:
                    best, best_step, bad = score, step, 0
                    best_state = _cpu_state(model)
                else:
                    bad += 1
                if bar is not None:
                    bar.set_postfix(loss=f"{history['loss'][-1]:.2e}", val_cos=f"{score:.5f}")
                stop = bad >= cfg.patience
                if not stop:
                    save(step, False, gens)
            if ddp.broadcast_flag(ctx, stop, dev):
                stopped_early = True
                break
            if stop_after is not None and step >= stop_after:
                if bar is not None:
                    bar.close()
                return DistillResult(load_checkpoint(out) if main else None, {"interrupted_at": step})
    if bar is not None:
        bar.close()
    gens = ddp.gather_states(ctx, gen.get_state())
    if not main:
        return DistillResult(None, {"rank": ctx.rank, "steps_run": step})
    assert best_state is not None, "the last step always validates and sets best_state"
    model.load_state_dict(best_state)
    final = {k: evaluate(model, v, val_targets[k], answers) for k, v in val_sets.items()}
    wall = elapsed_before + time.perf_counter() - t0
    ck = save(step, True, gens, {"final": final, "stopped_early": stopped_early})
    report = {"checkpoint": str(out), "student": scfg.to_dict(), "train_config": train_config,
              "teacher_sha256": teacher.fingerprint(), "device": str(dev), "wall_seconds": round(wall, 2),
              "threads": torch.get_num_threads(), "world_size": ctx.world, "metrics": ck.metrics,
              "history": history}
    write_report(out, report)
    return DistillResult(ck, report)


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _cpu_tree(obj):
    """The optimizer state with every tensor on the CPU (a CUDA checkpoint resumes anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_tree(v) for v in obj]
    return obj


def _sha256(queries: np.ndarray | None) -> str:
    import hashlib

    return "" if queries is None else hashlib.sha256(np.ascontiguousarray(queries, np.float32).tobytes()).hexdigest()


def write_report(out: Path, report: dict) -> None:
    """``<out>.report.json`` (curves, metrics, wall time) and ``<out>.report.png`` (loss and val cosine)."""
    import json

    from ..atomic import write_bytes_atomic
    from ..writers import png_bytes

    write_bytes_atomic(out.with_name(out.name + ".report.json"),
                       (json.dumps(report, indent=2, sort_keys=True, default=float) + "\n").encode())

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = report["history"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.semilogy(h["step"], h["loss"])
    ax1.set(xlabel="step", ylabel="training loss", title="loss")
    for k in h:
        if k.startswith("val_"):
            ax2.plot(h["step"], [1 - c for c in h[k]], label=k[4:-7])
    ax2.set_yscale("log")
    ax2.set(xlabel="step", ylabel="1 − mean cosine (log)", title="validation (student vs teacher)")
    ax2.legend()
    fig.tight_layout()
    data = png_bytes(fig)
    plt.close(fig)
    write_bytes_atomic(out.with_name(out.name + ".report.png"), data)

