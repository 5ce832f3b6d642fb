"""The ``h2l`` command line: parse, call, render.  No domain logic lives here.

Every :class:`h2l.errors.H2LError` becomes ``error: <problem>. fix: <fix>`` on
stderr and its documented exit code; Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..atomic import check_output_file
from .render import (out, print_bench, print_demo_summary, print_report, print_routing_profile, print_summary,
                     print_sweep_tables)
from ..errors import EXIT_INTERRUPTED, H2LError, InputError, UsageError
from .params import Choices, PositiveInts, Shares

app = typer.Typer(name="h2l", help="Distil multi-head LDA routing teachers into students; ship both as ONNX.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
teacher_app = typer.Typer(help="Import, build and inspect teachers.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
err = Console(stderr=True, highlight=False, soft_wrap=True)


def handled(fn):
    """Map domain errors to one line and an exit code at the CLI boundary."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except H2LError as exc:
            err.print(f"error: {exc.one_line()}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("error: interrupted; no partial output was written. fix: run the command again", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    return wrapper


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Format(str, Enum):
    onnx = "onnx"
    npy = "npy"


class Quantize(str, Enum):
    none = "none"
    int8 = "int8"


class Router(str, Enum):
    screen = "screen"
    ivf = "ivf"


class AskModel(str, Enum):
    teacher = "teacher"
    student = "student"
    routed = "routed"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class Provider(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"
    all = "all"


# ------------------------------------------------------------------ teacher

@teacher_app.command("import")
@handled
def teacher_import(
    out_path: Annotated[Path, typer.Option("--out", help="Teacher .npz to write.")],
    lda_db: Annotated[Optional[Path], typer.Option("--lda-db", help="UnifyWeaver lda.db.")] = None,
    mh_id: Annotated[Optional[int], typer.Option("--mh-id", help="Projection id (lda.db default 1).")] = None,
    npy_dir: Annotated[Optional[Path], typer.Option("--npy-dir", help="Folder of per-head .npy files.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="τ for --npy-dir.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
) -> None:
    """Import a UnifyWeaver teacher (lda.db or a folder of .npy files) into a teacher .npz."""
    from ..importers.unifyweaver import import_lda_db, import_npy_dir
    from ..importers.npz import save_npz

    if (lda_db is None) == (npy_dir is None):
        raise UsageError("pass exactly one of --lda-db or --npy-dir", "see `h2l teacher import --help`")
    check_output_file(out_path, force)
    if lda_db is not None:
        teacher = import_lda_db(lda_db, 1 if mh_id is None else mh_id)
    else:
        if temperature is None:
            raise UsageError("--npy-dir needs --temperature (the folder does not store τ)", "pass e.g. --temperature 0.1")
        teacher = import_npy_dir(npy_dir, temperature, mh_id)
    save_npz(teacher, out_path)
    out.print(f"wrote {out_path}: N = {teacher.n_heads}, d = {teacher.dim}, τ = {teacher.temperature:g}")


@teacher_app.command("info")
@handled
def teacher_info(
    path: Annotated[Path, typer.Argument(help="Teacher .npz.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    routing: Annotated[bool, typer.Option("--routing/--no-routing", help="Effective heads and the candidates a "
                                          "router needs (256 near-centroid queries).")] = True,
) -> None:
    """Show a teacher's size, temperature, ids, stored queries, and how routable it is."""
    from ..importers.npz import load_npz

    t = load_npz(path)
    qs = t.queries
    info = {"path": str(path), "name": t.name, "n_heads": t.n_heads, "dim": t.dim, "temperature": t.temperature,
            "embedding_model": t.embedding_model, "cluster_ids": list(t.cluster_ids),
            "train_queries": 0 if qs is None else len(qs.train), "heldout_queries": 0 if qs is None else len(qs.heldout),
            "sha256": t.fingerprint()}
    if routing:
        from ..model.routing_profile import teacher_profile

        info["routing"] = teacher_profile(t.keys, t.answers, t.temperature)
    if as_json:
        emit_json(info)
        return
    for k, v in info.items():
        if k == "routing":
            continue
        if k == "cluster_ids":
            v = ", ".join(v[:8]) + (f", … ({len(v)} in all)" if len(v) > 8 else "")
        out.print(f"{k:16} {v}", markup=False)
    if routing:
        print_routing_profile(info["routing"])


@teacher_app.command("build")
@handled
def teacher_build(
    qa: Annotated[list[Path], typer.Option("--qa", help="Q-A JSON (UnifyWeaver) or JSONL; repeatable.")],
    out_path: Annotated[Path, typer.Option("--out", help="Teacher .npz to write.")],
    model: Annotated[str, typer.Option("--model", help="Embedding model.")] = "all-MiniLM-L6-v2",
    temperature: Annotated[float, typer.Option("--temperature", help="Routing temperature τ.")] = 0.1,
    holdout: Annotated[int, typer.Option("--holdout-per-cluster", help="Queries per cluster held out.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split.")] = 0,
    embeddings: Annotated[Optional[Path], typer.Option("--embeddings", help="Precomputed embedding cache .npz.")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Build a teacher from Q-A text: one head per cluster, held-out queries stored with it."""
    from ..importers.embed import cached_embedder, load_cache
    from ..importers.qa import build_teacher, parse_qa_files, retrieval_quality
    from ..importers.npz import save_npz

    check_output_file(out_path, force)
    clusters = parse_qa_files(qa, model=model)
    cache = load_cache(embeddings) if embeddings is not None else None
    teacher = build_teacher(clusters, cached_embedder(cache, model, progress=not as_json), temperature=temperature,
                            holdout_per_cluster=holdout, seed=seed, model=model, name=out_path.stem)
    save_npz(teacher, out_path)
    qs = teacher.queries
    quality = retrieval_quality(teacher, qs.heldout, qs.heldout_labels) if len(qs.heldout) else {}
    if as_json:
        emit_json({"out": str(out_path), "n_heads": teacher.n_heads, "dim": teacher.dim,
                   "temperature": teacher.temperature, "train_queries": len(qs.train),
                   "heldout_queries": len(qs.heldout), "retrieval": quality})
        return
    out.print(f"wrote {out_path}: N = {teacher.n_heads}, d = {teacher.dim}, τ = {teacher.temperature:g}, "
              f"{len(qs.train)} training and {len(qs.heldout)} held-out queries")
    if quality:
        table = Table(title=f"retrieval of the true cluster on {len(qs.heldout)} held-out queries")
        for col in ("method", "Recall@1", "MRR"):
            table.add_column(col)
        labels = {"plain_cosine": "plain cosine (query · answer)", "projection": "multi-head projection",
                  "routing": "routing weights (top head)"}
        for k, v in quality.items():
            table.add_row(labels[k], f"{v['recall_at_1']:.1%}", f"{v['mrr']:.3f}")
        out.print(table)


@app.command()
@handled
def arch(
    n: Annotated[int, typer.Argument(help="Number of teacher heads N.")],
    embed_dim: Annotated[int, typer.Option("--embed-dim", help="Embedding dimension d.")] = 384,
    prefer_heads: Annotated[int, typer.Option("--prefer-heads", help="Tie-break toward this H.")] = 4,
    max_heads: Annotated[int, typer.Option("--max-heads", help="Largest H considered.")] = 8,
    ff_dim: Annotated[int, typer.Option("--ff-dim", help="Feed-forward width.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Size a student: (H, L) with H^L ≥ N, H | d, fewest layers, least overshoot; and the recipe distill picks."""
    from dataclasses import asdict

    from ..model.sizing import arch_candidates, recipe

    cands = arch_candidates(n, embed_dim, ff_dim=ff_dim, max_heads=max_heads, prefer_heads=prefer_heads)
    rec = recipe(n, embed_dim)
    if as_json:
        emit_json({"n": n, "dim": embed_dim, "choice": asdict(cands[0]), "candidates": [asdict(c) for c in cands],
                   "recipe": asdict(rec)})
        return
    table = Table(title=f"students for N = {n}, d = {embed_dim}, ff = {ff_dim}")
    for col in ("", "H", "L", "H^L", "params", "MACs/query", "MACs folded"):
        table.add_column(col, justify="right")
    for i, c in enumerate(cands[:6]):
        table.add_row("→" if i == 0 else "", str(c.heads), str(c.layers), str(c.capacity), f"{c.params:,}",
                      f"{c.macs_unfolded:,}", f"{c.macs_folded:,}")
    out.print(table)
    c = cands[0]
    out.print(f"choice: --heads {c.heads} --layers {c.layers}.  Note: with one query token attention folds away, "
              "so H changes neither parameters nor cost; L does.")
    slots = f" --slots {rec.slots}" if rec.slots else ""
    out.print(f"`h2l distill` with no flags picks: --arch {rec.arch} --heads {rec.heads} --layers {rec.layers} "
              f"--ff-dim {rec.ff_dim}{slots} --steps {rec.steps}  ({rec.shipped_params:,} shipped parameters, "
              f"{rec.macs_folded:,} MACs/query vs the flat teacher's {rec.teacher_macs:,}; basis: {rec.basis})")


@app.command()
@handled
def distill(
    teacher: Annotated[Path, typer.Argument(help="Teacher .npz.")],
    out_path: Annotated[Path, typer.Option("--out", help="Student checkpoint to write.")],
    queries: Annotated[Optional[Path], typer.Option("--queries", help="Extra user queries (.npy n×d).")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="Attention heads H [default: from N].")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Encoder layers L [default: from N].")] = None,
    ff_dim: Annotated[Optional[int], typer.Option("--ff-dim", help="Feed-forward width [default: from N].")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Student: lean (Q/K dropped), transformer "
                                                "(literal seed graph) or memory (+ M slots) [default: from N].")] = None,
    slots: Annotated[Optional[int], typer.Option("--slots", help="Memory slots M for --arch memory.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps (batches of fresh queries) "
                                                 "[default: from N, see `h2l arch N`].")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Queries per step (global: split over "
                                            "torchrun ranks).")] = 1024,
    precision: Annotated[str, typer.Option("--precision", help="fp32, or on CUDA tf32 / bf16.")] = "fp32",
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")] = 3e-3,
    cosine_weight: Annotated[float, typer.Option("--cosine-weight", help="λ in (1−λ)·MSE + λ·(1−cos).")] = 0.7,
    mix: Annotated[list, typer.Option("--mix", parser=Shares(3), metavar="FLOATS",
                                      help="Sampler shares: centroid mixes, perturbed, pairs.")] = "0.5,0.25,0.25",
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between validations.")] = 50,
    patience: Annotated[int, typer.Option("--patience", help="Validations without gain before stopping.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights and the query stream.")] = 0,
    device: Annotated[Device, typer.Option("--device", help="Where torch trains.")] = Device.cpu,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run at --out.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar (CI logs).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final metrics as JSON.")] = False,
) -> None:
    """Distil a teacher into a student on a stream of teacher-labelled fresh queries.

    With no architecture flags the student and steps come from N (`h2l arch N` shows them).  Under
    `torchrun --nproc-per-node K -m h2l distill ...` the run is data-parallel; rank 0 writes --out.
    """
    from ..distill.sampler import SamplerMix
    from ..distill.train import TrainConfig
    from ..distill.train import distill as run_distill
    from ..importers.queries import load_npy_queries
    from ..model.student import choose_student
    from ..model.teacher import check_queries
    from ..importers.npz import load_npz

    t = load_npz(teacher)
    scfg, steps = choose_student(t.n_heads, t.dim, arch=arch, heads=heads, layers=layers, ff_dim=ff_dim,
                                 slots=slots, steps=steps)
    if not resume:
        check_output_file(out_path, force)
    q = None if queries is None else check_queries(load_npy_queries(queries), t.dim, what="--queries")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, cosine_weight=cosine_weight, eval_every=eval_every,
                      patience=patience, seed=seed, mix=SamplerMix(*mix), precision=precision)
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


# ------------------------------------------------------------------ export / verify

@app.command()
@handled
def export(
    teacher: Annotated[Path, typer.Option("--teacher", help="Teacher .npz.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle folder to create.")],
    fmt: Annotated[Format, typer.Option("--format", help="onnx (bundle) or npy (UnifyWeaver layouts).")] = Format.onnx,
    student: Annotated[Optional[Path], typer.Option("--student", help="Student checkpoint from `h2l distill`.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    no_fold: Annotated[bool, typer.Option("--no-fold", help="Keep the literal torch graph.")] = False,
    quantize: Annotated[Quantize, typer.Option("--quantize", help="int8: dynamic int8 student weights "
                                               "(output projection stays float32).")] = Quantize.none,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Student-vs-teacher gate at export.")] = 0.98,
    mh_id: Annotated[int, typer.Option("--mh-id", help="Projection id in npy file names.")] = 1,
    routed: Annotated[bool, typer.Option("--routed", help="Add teacher_routed.onnx (docs/routing.md).")] = False,
    router: Annotated[Router, typer.Option("--router", help="screen: proven bound; ivf: k-means groups, "
                                           "an estimate only.")] = Router.screen,
    candidates: Annotated[Optional[int], typer.Option("--candidates", help="Routed: K heads scored exactly "
                                                      "(default: chosen from the teacher).")] = None,
    with_encoder: Annotated[bool, typer.Option("--with-encoder", help="Add encoder.onnx + tokenizer.json "
                                               "(all-MiniLM-L6-v2) so the bundle takes text.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    sign_key: Annotated[Optional[Path], typer.Option("--sign-key", help="Private key from `h2l keygen`: "
                                                     "publish the bundle signed (manifest.sig).")] = None,
) -> None:
    """Export the teacher (and student) as a verified bundle, or as UnifyWeaver .npy files."""
    from ..importers.npz import load_npz

    if fmt is Format.npy:
        given = [flag for flag, on in (("--student", student is not None), ("--json", as_json),
                                       ("--quantize", quantize is not Quantize.none), ("--no-fold", no_fold),
                                       ("--sign-key", sign_key is not None), ("--routed", routed),
                                       ("--candidates", candidates is not None), ("--with-encoder", with_encoder)) if on]
        if given:
            raise UsageError(f"--format npy writes the teacher's vectors only; {', '.join(given)} does not apply",
                             f"drop {', '.join(given)} or use --format onnx")
    elif not routed and (candidates is not None or router is not Router.screen):
        raise UsageError("--router and --candidates apply to the routed teacher", "add --routed, or drop them")
    t = load_npz(teacher)
    if fmt is Format.npy:
        from ..exporters.npy import export_npy

        written = export_npy(t, out_dir, mh_id=mh_id, force=force)
        out.print(f"wrote {len(written)} .npy files to {out_dir} (float32 little-endian, shape (d,))")
        return
    from ..export import export_onnx

    res = export_onnx(t, out_dir, student=student, fold_graph=not no_fold, force=force, min_cosine=min_cosine,
                      quantize=quantize.value, sign_key=sign_key, routed=routed, router=router.value,
                      candidates=candidates, with_encoder=with_encoder)
    if as_json:
        emit_json(res.manifest)
        return
    out.print(f"wrote bundle {res.out}")
    for entry in res.manifest["files"]:
        out.print(f"  {entry['path']:44} {entry['bytes']:>10} B  sha256 {entry['sha256'][:16]}…", markup=False)
    print_summary(res.manifest["verification"].get("summary", {}))
    if routed:
        report = json.loads((res.out / "reports" / "routing.json").read_text())
        out.print(report["note"], markup=False)
        out.print(report["verdict"], markup=False)


@app.command()
@handled
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    provider: Annotated[Provider, typer.Option("--provider", help="cpu, cuda, auto (CUDA if usable) or all.")]
    = Provider.auto,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Gate on mean student-vs-teacher cosine.")] = 0.98,
    queries: Annotated[Optional[Path], typer.Option("--queries", help=".npy (n×d), Q-A JSON or JSONL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Also write each check as a JUnit XML test "
                                                  "case to this file (written on failure too).")] = None,
    public_key: Annotated[Optional[Path], typer.Option("--public-key", help="Pinned KEY.pub: refuse (exit 5) "
                                                       "a bundle it did not sign.")] = None,
) -> None:
    """Check integrity, the I/O contract, golden vectors and parity; non-zero exit on any failure."""
    from ..verify.checks import raise_for_failures, verify_bundle

    if junit is not None:
        check_output_file(junit, force=True)  # a missing folder fails now, not after the checks
    if public_key is not None and queries is not None:  # refuse an unsigned bundle before embedding queries for it
        from ..bundle.signing import verify as check_signed

        check_signed(bundle, public_key)
    q, labels = (None, None) if queries is None else _load_queries(queries, bundle)
    report = verify_bundle(bundle, provider=provider.value, min_cosine=min_cosine, queries=q, labels=labels,
                           public_key=public_key)
    if junit is not None:
        from ..atomic import write_bytes_atomic
        from ..verify.junit import junit_xml

        write_bytes_atomic(junit, junit_xml(report, str(bundle)))
    if as_json:
        emit_json(report.to_dict())
    else:
        print_report(report)
    if public_key is not None:  # verify_bundle refused (exit 5) unless the pinned key signed it
        from ..bundle.signing import key_id, load_public_key

        err.print(f"signature: valid, key id {key_id(load_public_key(public_key))}", markup=False)
    raise_for_failures(report)


@app.command()
@handled
def keygen(
    out_path: Annotated[Path, typer.Option("--out", help="Private key to write (0600); KEY.pub goes beside it.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make an ed25519 key pair for signing bundles: keep KEY private, pin KEY.pub in services."""
    from ..bundle.signing import keygen as make_keys

    kid = make_keys(out_path, force=force)
    out.print(f"wrote {out_path} (private, mode 0600) and {out_path}.pub; key id {kid}", markup=False)


@app.command()
@handled
def sign(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    key: Annotated[Path, typer.Option("--key", help="Private key from `h2l keygen`.")],
) -> None:
    """Check a bundle's hashes, then sign its manifest (writes manifest.sig atomically)."""
    from ..bundle.signing import sign_bundle

    kid = sign_bundle(bundle, key)
    out.print(f"signed {bundle}/manifest.json; key id {kid}", markup=False)


def _load_queries(path: Path, bundle: Path):
    from ..verify.queries import load_bundle_queries

    return load_bundle_queries(path, bundle)


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
    sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    sys.stdout.flush()


@app.command()
@handled
def bench(
    bundle: Annotated[Optional[Path], typer.Argument(help="Bundle folder (omit with --sweep).")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="Synthetic teachers over --n instead of a bundle.")] = False,
    n: Annotated[list, typer.Option("--n", parser=PositiveInts(), metavar="INTS", help="Sweep: teacher sizes N.")]
    = "16,64,256,1024,4096",
    d: Annotated[int, typer.Option("--d", help="Sweep: embedding dimension.")] = 384,
    providers: Annotated[list, typer.Option("--providers", parser=Choices("cpu", "torch", "cuda"), metavar="NAMES",
                                            help="Any of cpu, cuda, torch.")] = "cpu,torch",
    batch: Annotated[list, typer.Option("--batch", parser=PositiveInts(), metavar="INTS", help="Batch sizes.")]
    = "1,32",
    threads: Annotated[int, typer.Option("--threads", help="Pinned intra-op/torch/BLAS threads.")] = 1,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Student .pt: adds torch eager, "
                                                        "unfolded and int8 variants.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Short timings for tests and CI.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--out", help="Also write the JSON report here.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Sweep: write latency vs N as PNG "
                                                 "(and <stem>_batch<B>.png with fidelity, per batch size).")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="Sweep: τ of the synthetic teachers.")] = 0.1,
    routed: Annotated[bool, typer.Option("--routed/--no-routed", help="Sweep: include the routed teacher.")] = True,
    candidates: Annotated[Optional[int], typer.Option("--candidates", help="Sweep: routed K (default: as "
                                                      "export chooses it).")] = None,
) -> None:
    """Time teacher and student variants (p50/p90/p99, pinned threads); --sweep finds the crossover N."""
    from ..bench.suites import bench_bundle, bench_sweep, plot_sweep

    provs, batches, ns = set(providers), batch, n
    if sweep == (bundle is not None):
        raise UsageError("pass a bundle folder or --sweep (not both)", "see `h2l bench --help`")
    if "cuda" in provs:
        from ..bench.suites import torch_cuda
        from ..errors import ProviderError
        from ..runtime.sessions import cuda_status

        ok, reason = cuda_status()
        if not ok and not torch_cuda():
            raise ProviderError(f"--providers cuda, but CUDA is unusable here: {reason}; torch sees no GPU either",
                                "drop cuda from --providers")
    if sweep:
        report = bench_sweep(ns, dim=d, providers=provs, batches=batches, threads=threads, quick=quick,
                             temperature=temperature, routed=routed, candidates=candidates, checkpoint=checkpoint)
        if plot is not None:
            from ..bench.routed import plot_sweep_batches

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


def main() -> None:  # pragma: no cover - console script entry
    import logging

    # the application, not the library, decides logging: errors only (onnxruntime's quantizer advises on WARNING)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    app()


if __name__ == "__main__":  # python -m h2l.cli.commands; `python -m h2l` is the usual form
    main()
