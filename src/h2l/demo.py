"""``h2l demo``: the whole road on the data h2l ships, in a few minutes on 2 CPU cores.

Q-A text (bicycle help desk, written for h2l, with precomputed MiniLM
embeddings so no embedder is needed) → teacher → distilled student → export →
verify (CPU, and CUDA when it really runs) → a short bench → a summary of
fidelity on held-out queries, latency, files, and how Rust and Go load them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .atomic import staged_dir
from .errors import OutputError

MARKER = "demo-summary.json"
#: asked of the demo bundle at the end (neither is in bike_qa.json)
QUESTIONS = ("my back tyre keeps going flat, how do I patch it?", "the chain skips when I pedal hard")


@dataclass(frozen=True)
class DemoResult:
    out: Path
    summary: dict


def demo_data() -> tuple[Path, Path]:
    root = resources.files("h2l.data").joinpath("demo")
    return Path(str(root.joinpath("bike_qa.json"))), Path(str(root.joinpath("bike_qa.embeddings.npz")))


def may_replace(out: Path, force: bool) -> bool:
    """A previous demo folder (it holds demo-summary.json) is replaced; anything else needs --force."""
    if out.exists() and not (out / MARKER).is_file() and not force:
        raise OutputError(f"{out} exists and is not a previous demo output", "pass --force or another --out")
    return out.exists()


def run_demo(out: Path, *, steps: int = 800, force: bool = False, log=print, quiet: bool = False) -> DemoResult:
    out = Path(out)
    replace = may_replace(out, force)
    made = [p for p in reversed(out.absolute().parents) if not p.exists()]
    for p in made:  # e.g. artifacts/ on a fresh checkout; removed again if the demo fails
        p.mkdir()
    try:
        with staged_dir(out, replace) as stage:  # all or nothing, like export
            summary = _run(stage, out, steps=steps, log=log, quiet=quiet)
    except BaseException:
        for p in reversed(made):
            p.rmdir()
        raise
    return DemoResult(out, summary)


def _run(stage: Path, out: Path, *, steps: int, log, quiet: bool) -> dict:
    from .bench.suites import run_variants, variants
    from .bench.timing import pin_threads
    from .distill.train import TrainConfig, distill
    from .export import export_onnx
    from .importers.embed import cached_embedder, load_cache
    from .importers.npz import save_npz
    from .importers.qa import build_teacher, parse_qa_files, retrieval_quality
    from .verify.checks import verify_bundle
    from .verify.report import raise_for_failures

    qa, cache = demo_data()
    log(f"[1/5] teacher from {qa.name} (precomputed all-MiniLM-L6-v2 embeddings)")
    clusters = parse_qa_files([qa])
    teacher = build_teacher(clusters, cached_embedder(load_cache(cache)), temperature=0.1, holdout_per_cluster=2,
                            seed=0, name="bike_helpdesk")
    save_npz(teacher, stage / "teacher.npz")
    qs = teacher.queries
    assert qs is not None, "build_teacher always stores the held-out split"
    quality = retrieval_quality(teacher, qs.heldout, qs.heldout_labels)
    log(f"      N = {teacher.n_heads} clusters, {len(qs.train)} training / "
        f"{len(qs.heldout)} held-out queries; Recall@1 plain cosine "
        f"{quality['plain_cosine']['recall_at_1']:.1%}, projection {quality['projection']['recall_at_1']:.1%}")
    log(f"[2/5] distilling a student ({steps} steps of 1024 fresh teacher-labelled queries)")
    res = distill(teacher, stage / "student.pt", config=TrainConfig(steps=steps), quiet=quiet)
    ckpt = res.checkpoint
    assert ckpt is not None, "a single process is rank 0, which returns the checkpoint"
    from .importers.embed import available

    text_ok, text_reason = available()
    log("[3/5] exporting teacher.onnx + student.onnx (folded)" + (" + encoder.onnx and tokenizer.json"
                                                                 if text_ok else "") + " and verifying on CPU")
    if not text_ok:
        log(f"      no encoder in the bundle: {text_reason}; `pip install 'h2l[embed]'` adds text in, answer out")
    bundle = stage / "bundle"
    export_onnx(teacher, bundle, student=stage / "student.pt", with_encoder=text_ok)
    log("[4/5] verify (CPU; CUDA too when it really runs)")
    report = verify_bundle(bundle, provider="auto")
    raise_for_failures(report)
    log("[5/5] short bench (1 thread)")
    with pin_threads(1):
        fns = variants(teacher, ckpt.model(), threads=1, providers={"cpu", "torch"}, unfolded=False)
        timings = run_variants(fns, teacher.dim, [1, 32], quick=True)
    summary = {
        "bundle": str((out / "bundle").resolve()), "teacher": str(out / "teacher.npz"),
        "student": str(out / "student.pt"),
        "n_heads": teacher.n_heads, "dim": teacher.dim, "retrieval_heldout": quality,
        "distill_wall_seconds": res.report["wall_seconds"], "fidelity_heldout": ckpt.metrics["final"],
        "verify": {"passed": report.passed, "providers": list(report.providers),
                   "skipped": [list(s) for s in report.skipped], "summary": report.summary},
        "latency_us": [{"model": t.model, "variant": t.variant, "provider": t.provider, "batch": t.batch,
                        "p50_us": t.p50_us, "per_query_us": t.per_query_p50_us} for t in timings],
    }
    if text_ok:
        from .ask import open_asker

        asked = open_asker(bundle, threads=1).ask(list(QUESTIONS), embedding=False)
        summary["ask"] = [{k: r[k] for k in ("text", "top_cluster", "top_weight", "answer")} for r in asked]
        for r in asked:
            log(f"ask (Python, student): {r['text']!r} → {r['top_cluster']} ({r['top_weight']:.3f}): "
                f"{r['answer'][:90]}…")
    (stage / MARKER).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
