"""``h2l ask``, ``bench``, ``demo`` and ``ort-lib``: use a bundle the way a service would."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError, UsageError
from .app import AskModel, app, emit_json, err, handled
from .params import Choices, PositiveInts, list_default, renamed
from .render import out, print_bench, print_demo_summary, print_sweep_tables

PROVIDERS = Choices("cpu", "torch", "cuda")
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\u2028\u2029\x85"}


def json_line(obj) -> str:
    """One JSON line, UTF-8 text kept, but U+2028, U+2029 and U+0085 escaped: str.splitlines (and JavaScript)
    break lines there, and an answer holding one must still be one line of output."""
    return json.dumps(obj, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


@app.command()
@handled
def ask(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder exported with --with-encoder.")],
    texts: Annotated[list[str], typer.Argument(help="One or more questions (quote each).")],
    model: Annotated[Optional[AskModel], typer.Option("--model", help="teacher, student or routed "
                                                      "(default: the student when the bundle has one).")] = None,
    no_embedding: Annotated[bool, typer.Option("--no-embedding", help="Leave the 384 floats out.")] = False,
    threads: Annotated[int, typer.Option("--threads", help="onnxruntime intra-op threads (0: its default).")] = 1,
    public_key: Annotated[Optional[Path], typer.Option("--public-key", help="Pinned KEY.pub: refuse (exit 5) "
                                                       "a bundle it did not sign.")] = None,
) -> None:
    """Answer text questions: one JSON line per text on stdout (text, top_cluster, top_weight, answer,
    embedding, truncated); notes go to stderr."""
    from ..ask import open_asker

    asker = open_asker(bundle, None if model is None else model.value, threads=threads or None,
                       public_key=public_key)
    rows = asker.ask(texts, embedding=not no_embedding)
    err.print(f"note: model {asker.model}; " + ("answers from answers.jsonl" if asker.answers is not None
              else "this bundle has no answers.jsonl, so answer is null (cluster ids only)"), markup=False)
    for i, r in enumerate(rows):
        if r["truncated"]:
            err.print(f"note: text #{i + 1} was cut to {asker.encoder.max_seq_length} tokens", markup=False)
    sys.stdout.write("".join(json_line(r) for r in rows))
    sys.stdout.flush()


@app.command()
@handled
def bench(
    ctx: typer.Context,
    bundle: Annotated[Optional[Path], typer.Argument(help="Bundle folder (omit with --sweep).")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="Synthetic teachers over --n instead of a bundle.")] = False,
    n: Annotated[list, typer.Option("--n", parser=PositiveInts(), metavar="INTS", help="Sweep: teacher sizes N.")]
    = list_default("16,64,256,1024,4096"),
    embed_dim: Annotated[int, typer.Option("--embed-dim", help="Sweep: embedding dimension d.")] = 384,
    provider: Annotated[list, typer.Option("--provider", parser=PROVIDERS, metavar="NAMES",
                                           help="Any of cpu, cuda, torch, comma-separated.")]
    = list_default("cpu,torch"),
    batch: Annotated[list, typer.Option("--batch", parser=PositiveInts(), metavar="INTS", help="Batch sizes.")]
    = list_default("1,32"),
    threads: Annotated[int, typer.Option("--threads", help="Pinned intra-op/torch/BLAS threads.")] = 1,
    student: Annotated[Optional[Path], typer.Option("--student", help="Student checkpoint from `h2l distill`: adds "
                                                    "torch eager, unfolded and int8 variants.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Short timings for tests and CI.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--out", help="Also write the JSON report here.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Sweep: write latency vs N as PNG "
                                                 "(and <stem>_batch<B>.png with fidelity, per batch size).")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="Sweep: τ of the synthetic teachers.")] = 0.1,
    routed: Annotated[bool, typer.Option("--routed/--no-routed", help="Sweep: include the routed teacher.")] = True,
    candidates: Annotated[Optional[int], typer.Option("--candidates", help="Sweep: routed K (default: as "
                                                      "export chooses it).")] = None,
    # old spellings, hidden: --d, --providers, --checkpoint
    old_d: Annotated[Optional[int], typer.Option("--d", hidden=True)] = None,
    old_providers: Annotated[Optional[list], typer.Option("--providers", parser=PROVIDERS, hidden=True)] = None,
    old_checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", hidden=True)] = None,
) -> None:
    """Time teacher and student variants (p50/p90/p99, pinned threads); --sweep finds the crossover N."""
    from ..bench.suites import bench_bundle, bench_sweep, plot_sweep

    dim = renamed(ctx, "embed_dim", embed_dim, "old_d", old_d)
    provs = set(renamed(ctx, "provider", provider, "old_providers", old_providers))
    checkpoint = renamed(ctx, "student", student, "old_checkpoint", old_checkpoint)
    batches, ns = batch, n
    if sweep == (bundle is not None):
        raise UsageError("pass a bundle folder or --sweep (not both)", "see `h2l bench --help`")
    if "cuda" in provs:
        from ..bench.suites import torch_cuda
        from ..errors import ProviderError
        from ..runtime.sessions import cuda_status

        ok, reason = cuda_status()
        if not ok and not torch_cuda():
            raise ProviderError(f"--provider cuda, but CUDA is unusable here: {reason}; torch sees no GPU either",
                                "drop cuda from --provider")
    if bundle is None:  # --sweep (the check above makes the two the same)
        report = bench_sweep(ns, dim=dim, providers=provs, batches=batches, threads=threads, quick=quick,
                             temperature=temperature, routed=routed, candidates=candidates, checkpoint=checkpoint)
        if plot is not None:
            from ..bench.sweep_fidelity import plot_sweep_batches

            plot_sweep(report, plot)
            plot_sweep_batches(report, plot)
    else:
        report = bench_bundle(bundle, checkpoint=checkpoint, providers=provs, batches=batches, threads=threads,
                              quick=quick)
    if json_out is not None:
        from ..atomic import write_bytes_atomic

        write_bytes_atomic(json_out, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    if as_json:
        emit_json(report)
        return
    print_bench(report)
    if sweep:
        print_sweep_tables(report)


@app.command()
@handled
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Demo output folder.")] = Path("artifacts/demo"),
    steps: Annotated[int, typer.Option("--steps", help="Distillation steps.")] = 800,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it is not a previous demo.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run the whole pipeline on the shipped demo data: teacher, distill, export, verify, bench."""
    from ..demo import run_demo

    res = run_demo(out_dir, steps=steps, force=force, log=lambda m: out.print(m, markup=False), quiet=quiet)
    print_demo_summary(res.summary)


@app.command("ort-lib")
@handled
def ort_lib() -> None:
    """Print the path of the onnxruntime shared library the Python wheel ships (for ORT_DYLIB_PATH)."""
    from ..runtime.sessions import library_path

    path = library_path()
    if not path:
        raise InputError("the installed onnxruntime wheel ships no shared library", "reinstall onnxruntime-gpu")
    sys.stdout.write(path + "\n")
