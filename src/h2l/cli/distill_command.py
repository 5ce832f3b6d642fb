"""``h2l distill``: one process, or data-parallel under torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..atomic import check_output_file
from .app import Arch, Device, Precision, app, emit_json, handled
from .params import Shares, list_default, positional
from .render import out


@app.command()
@handled
def distill(
    out_path: Annotated[Path, typer.Option("--out", help="Student checkpoint to write.")],
    teacher: Annotated[Optional[Path], typer.Argument(help="Teacher .npz.", metavar="TEACHER",
                                                      show_default=False)] = None,
    queries: Annotated[Optional[Path], typer.Option("--queries", help="Extra user queries (.npy n×d).")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="Attention heads H [default: from N].")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Encoder layers L [default: from N].")] = None,
    ff_dim: Annotated[Optional[int], typer.Option("--ff-dim", help="Feed-forward width [default: from N].")] = None,
    arch: Annotated[Optional[Arch], typer.Option("--arch", help="Student: lean (Q/K dropped), transformer "
                                                "(literal seed graph) or memory (+ M slots) "
                                                "[default: from N].")] = None,
    slots: Annotated[Optional[int], typer.Option("--slots", help="Memory slots M for --arch memory.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps (batches of fresh queries) "
                                                 "[default: from N, see `h2l arch N`].")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Queries per step (global: split over "
                                            "torchrun ranks).")] = 1024,
    precision: Annotated[Precision, typer.Option("--precision", help="fp32, or on CUDA tf32 / bf16.")]
    = Precision.fp32,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")] = 3e-3,
    cosine_weight: Annotated[float, typer.Option("--cosine-weight", help="λ in (1−λ)·MSE + λ·(1−cos).")] = 0.7,
    mix: Annotated[list, typer.Option("--mix", parser=Shares(3), metavar="FLOATS",
                                      help="Sampler shares: centroid mixes, perturbed, pairs.")]
    = list_default("0.5,0.25,0.25"),
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between validations.")] = 50,
    patience: Annotated[int, typer.Option("--patience", help="Validations without gain before stopping.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights and the query stream.")] = 0,
    device: Annotated[Device, typer.Option("--device", help="Where torch trains.")] = Device.cpu,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run at --out.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar (CI logs).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final metrics as JSON.")] = False,
    old_teacher: Annotated[Optional[Path], typer.Option("--teacher", hidden=True)] = None,  # as export spelt it
) -> None:
    """Distil a teacher into a student on a stream of teacher-labelled fresh queries.

    With no architecture flags the student and steps come from N (`h2l arch N` shows them).  Under
    `torchrun --nproc-per-node K -m h2l distill ...` the run is data-parallel; rank 0 writes --out.
    """
    from ..distill.sampler import SamplerMix
    from ..distill.train import TrainConfig
    from ..distill.train import distill as run_distill
    from ..importers.npz import load_npz
    from ..importers.queries import load_npy_queries
    from ..model.student import choose_student
    from ..model.teacher import check_queries

    t = load_npz(positional(teacher, old_teacher, "the teacher .npz", "--teacher", "`h2l distill T.npz --out S.pt`"))
    scfg, steps = choose_student(t.n_heads, t.dim, arch=None if arch is None else arch.value, heads=heads,
                                 layers=layers, ff_dim=ff_dim, slots=slots, steps=steps)
    if not resume:
        check_output_file(out_path, force)
    q = None if queries is None else check_queries(load_npy_queries(queries), t.dim, what="--queries")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, cosine_weight=cosine_weight, eval_every=eval_every,
                      patience=patience, seed=seed, mix=SamplerMix(*mix), precision=precision.value)
    res = run_distill(t, out_path, student=scfg, config=cfg, queries=q,
                      device=device.value, resume=resume, quiet=quiet or as_json)
    if res.checkpoint is None:  # a torchrun rank other than 0: rank 0 reports
        return
    final = res.checkpoint.metrics["final"]
    if as_json:
        emit_json({"checkpoint": str(out_path), "wall_seconds": res.report["wall_seconds"], "final": final})
        return
    out.print(f"wrote {out_path} in {res.report['wall_seconds']:.0f} s (report: {out_path}.report.json, .png)")
    labels = {"heldout": "held-out real queries (never trained on, not used to choose)",
              "sampled": "validation queries (sampled, used to choose the checkpoint)"}
    for k, v in final.items():
        out.print(f"  {labels[k]}, n={v['n']}: mean cos {v['mean_cosine']:.5f}, min {v['min_cosine']:.5f}, "
                  f"p5 {v['p5_cosine']:.5f}, top-1 agreement {v['top1_agreement']:.1%}")
