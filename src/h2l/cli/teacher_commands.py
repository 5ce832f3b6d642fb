"""``h2l teacher import|info|build`` and ``h2l arch``: get a teacher, look at it, size its student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..atomic import check_output_file
from ..errors import UsageError
from .app import FederatedRouting, app, emit_json, handled, teacher_app
from .params import positional
from .render import out, print_routing_profile

# ------------------------------------------------------------------ teacher

@teacher_app.command("import")
@handled
def teacher_import(
    out_path: Annotated[Path, typer.Option("--out", help="Teacher .npz to write.")],
    lda_db: Annotated[Optional[Path], typer.Option("--lda-db", help="UnifyWeaver lda.db (W_path heads included).")]
    = None,
    mh_id: Annotated[Optional[int], typer.Option("--mh-id", help="Projection id (lda.db default 1).")] = None,
    npy_dir: Annotated[Optional[Path], typer.Option("--npy-dir", help="Folder of per-head .npy files.")] = None,
    federated: Annotated[Optional[Path], typer.Option("--federated", help="UnifyWeaver federated model .pkl "
                                                      "(read by an allow-list unpickler, never executed).")] = None,
    routing: Annotated[Optional[FederatedRouting], typer.Option("--routing", help="--federated: route over cluster "
                       "centroids (FederatedProjectionWrapper) or training queries (infer_pearltrees_federated).")]
    = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="--federated: keep the top-k keys (UnifyWeaver's "
                                                 "default is 10); omit for all keys.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="τ for --npy-dir.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
) -> None:
    """Import a UnifyWeaver teacher (lda.db, a folder of .npy files, or a federated model) into a teacher .npz."""
    from ..importers.npz import save_npz

    given = [f for f, v in (("--lda-db", lda_db), ("--npy-dir", npy_dir), ("--federated", federated)) if v]
    if len(given) != 1:
        raise UsageError("pass exactly one of --lda-db, --npy-dir or --federated"
                         + (f" (got {' and '.join(given)})" if given else ""), "see `h2l teacher import --help`")
    if federated is None and (routing is not None or top_k is not None):
        raise UsageError("--routing and --top-k apply to --federated only", "drop them, or import a federated model")
    if temperature is not None and npy_dir is None:
        raise UsageError(f"{given[0]} stores τ, so --temperature would be ignored", "drop --temperature")
    if mh_id is not None and federated is not None:
        raise UsageError("--mh-id applies to --lda-db and --npy-dir only", "drop --mh-id")
    check_output_file(out_path, force)
    if lda_db is not None:
        from ..importers.lda_db import import_lda_db

        teacher = import_lda_db(lda_db, 1 if mh_id is None else mh_id)
    elif federated is not None:
        from ..importers.federated import import_federated

        teacher = import_federated(federated, (routing or FederatedRouting.centroid).value, top_k)
    else:
        from ..importers.npy_dir import import_npy_dir

        assert npy_dir is not None  # exactly one of the three, checked above
        if temperature is None:
            raise UsageError("--npy-dir needs --temperature (the folder does not store τ)",
                             "pass e.g. --temperature 0.1")
        teacher = import_npy_dir(npy_dir, temperature, mh_id)
    save_npz(teacher, out_path)
    t = teacher
    kind = "" if t.is_flat else f", {t.head_kind} heads, {t.n_keys} keys, {t.routing.describe()}"
    out.print(f"wrote {out_path}: N = {teacher.n_heads}, d = {teacher.dim}, τ = {teacher.temperature:g}{kind}",
              markup=False)


def teacher_summary(t) -> dict[str, Any]:
    """What `teacher info` shows about the model family (the same keys for every teacher)."""
    s = t.scoring
    return {"head_kind": t.head_kind, "n_keys": t.n_keys,
            "scoring": {"query_norm": s.query_norm, "eps": s.eps, "normalize_keys": s.normalize_keys},
            "key_routing": {"top_k": t.routing.top_k, "renormalize": t.routing.renormalize},
            "normalize_output": t.normalize_output, "shared_heads": t.key_heads is not None,
            "w_bytes": 0 if t.head_weights is None else int(t.head_weights.nbytes),
            "targets": 0 if t.targets is None else len(t.targets.ids), "format": "flat" if t.is_flat else "general"}


@teacher_app.command("info")
@handled
def teacher_info(
    path: Annotated[Optional[Path], typer.Argument(help="Teacher .npz.", metavar="TEACHER", show_default=False)]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    routing: Annotated[bool, typer.Option("--routing/--no-routing", help="Effective heads and the candidates a "
                                          "router needs (256 near-centroid queries; answer heads only).")] = True,
    old_teacher: Annotated[Optional[Path], typer.Option("--teacher", hidden=True)] = None,  # as export spelt it
) -> None:
    """Show a teacher's size, family (heads, keys, scoring, routing), ids, stored queries, and how routable it is."""
    from ..importers.npz import load_npz

    path = positional(path, old_teacher, "the teacher .npz", "--teacher", "`h2l teacher info T.npz`")
    t = load_npz(path)
    qs = t.queries
    info: dict[str, Any] = {
        "path": str(path), "name": t.name, "n_heads": t.n_heads, "dim": t.dim, "temperature": t.temperature,
        "embedding_model": t.embedding_model, "cluster_ids": list(t.cluster_ids),
        "train_queries": 0 if qs is None else len(qs.train),
        "heldout_queries": 0 if qs is None else len(qs.heldout),
        "sha256": t.fingerprint(), **teacher_summary(t)}
    profile_note = None
    if routing:
        if t.head_kind == "answer" and t.key_heads is None and t.scoring.is_default:
            from ..model.routing_profile import teacher_profile

            info["routing"] = teacher_profile(t.keys, t.answers, t.temperature)
        else:
            profile_note = ("routing profile: skipped (it measures answer-head teachers with one unit key per head; "
                            f"this one has {', '.join(t.general_features())})")
            info["routing"], info["routing_note"] = None, profile_note
    if as_json:
        emit_json(info)
        return
    for k, v in info.items():
        if k in ("routing", "routing_note"):
            continue
        if k == "cluster_ids":
            v = ", ".join(v[:8]) + (f", … ({len(v)} in all)" if len(v) > 8 else "")
        elif k == "scoring":
            v = t.scoring.describe()
        elif k == "key_routing":
            v = t.routing.describe()
        out.print(f"{k:16} {v}", markup=False)
    if info.get("routing"):
        print_routing_profile(info["routing"])
    elif profile_note:
        out.print(profile_note, markup=False)


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
    from ..importers.npz import save_npz
    from ..importers.qa import build_teacher, parse_qa_files, retrieval_quality

    check_output_file(out_path, force)
    clusters = parse_qa_files(qa, model=model)
    cache = load_cache(embeddings, model) if embeddings is not None else None
    teacher = build_teacher(clusters, cached_embedder(cache, model, progress=not as_json), temperature=temperature,
                            holdout_per_cluster=holdout, seed=seed, model=model, name=out_path.stem)
    save_npz(teacher, out_path)
    qs = teacher.queries
    assert qs is not None, "build_teacher always stores the held-out split"
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
