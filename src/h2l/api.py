"""The public Python API, one function per pipeline stage (re-exported lazily by :mod:`h2l`).

    teacher = h2l.load_teacher("teacher.npz")          # or an lda.db, a folder of .npy heads, a federated .pkl
    result  = h2l.distill_teacher(teacher, "s.pt", steps=2000)
    h2l.export_bundle(teacher, "bundle", student="s.pt")
    report  = h2l.verify_bundle("bundle")              # raises on a failed check
    bundle  = h2l.Bundle("bundle")                     # schema, sha256, I/O contract, like Rust and Go
    vecs    = bundle.project(queries)                  # float32 [batch, d]; student if shipped, else teacher
    rows    = bundle.ask(["How do I fix a flat?"], top_k=3)   # text bundles: what `h2l ask` prints, top 3

Names never shadow a subpackage (``h2l.distill`` is the subpackage, ``h2l.distill_teacher`` the function).
Heavy imports (torch, onnxruntime) happen inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundle.service import Bundle
from .bundle.signing import PublicKeyLike
from .model.teacher import Teacher

__all__ = ["Teacher", "Bundle", "load_teacher", "save_teacher", "distill_teacher", "export_bundle",
           "verify_bundle"]


def load_teacher(path: str | Path, *, mh_id: int | None = None, temperature: float | None = None,
                 routing: str = "centroid", top_k: int | None = None) -> Teacher:
    """Read a teacher: an h2l ``.npz``, a UnifyWeaver ``lda.db`` (projection ``mh_id``, default 1),
    a folder of UnifyWeaver ``.npy`` heads (needs ``temperature``), or a UnifyWeaver federated
    model ``.pkl`` (``routing`` centroid|query, ``top_k``; read without running pickle code)."""
    from .errors import InputError

    path = Path(path)
    if path.suffix == ".pkl":
        from .importers.federated import import_federated

        return import_federated(path, routing, top_k)
    if path.is_dir():
        from .importers.npy_dir import import_npy_dir

        if temperature is None:
            raise InputError("a folder of .npy heads does not store τ", "pass temperature=, e.g. 0.1")
        return import_npy_dir(path, temperature, mh_id)
    if path.suffix == ".db":
        from .importers.lda_db import import_lda_db

        return import_lda_db(path, 1 if mh_id is None else mh_id)
    from .importers.npz import load_npz

    return load_npz(path)


def save_teacher(teacher: Teacher, path: str | Path) -> None:
    """Write ``teacher`` as an h2l ``.npz`` (atomic; equal teachers give equal bytes)."""
    from .importers.npz import save_npz

    save_npz(teacher, path)


def distill_teacher(teacher: Teacher, out: str | Path, *, arch: str | None = None, heads: int | None = None,
                    layers: int | None = None, ff_dim: int | None = None, slots: int | None = None,
                    steps: int | None = None, batch_size: int = 1024, seed: int = 0, device: str = "cpu",
                    queries: np.ndarray | None = None, resume: bool = False, force: bool = False,
                    quiet: bool = True, **train):
    """Distil ``teacher`` into a student checkpoint at ``out``; returns the DistillResult (checkpoint, report).

    Architecture and steps left as None come from N, exactly as ``h2l distill`` picks them (``h2l arch N``).
    An existing ``out`` is refused (OutputError, exit 4) unless ``force`` (replace it) or ``resume``
    (continue it), as ``h2l distill`` does.
    Extra keyword arguments go to :class:`h2l.distill.train.TrainConfig` (lr, cosine_weight, precision, ...).
    """
    from .atomic import check_output_file
    from .distill.train import TrainConfig, distill
    from .model.student import choose_student

    student, steps = choose_student(teacher.n_heads, teacher.dim, arch=arch, heads=heads, layers=layers,
                                    ff_dim=ff_dim, slots=slots, steps=steps)
    if not resume:
        check_output_file(Path(out), force)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, seed=seed, **train)
    return distill(teacher, out, student=student, config=cfg, queries=queries, device=device, resume=resume,
                   quiet=quiet)


def export_bundle(teacher: Teacher, out: str | Path, *, student: str | Path | None = None, force: bool = False,
                  fold: bool = True, quantize: str = "none", min_cosine: float = 0.98, seed: int = 0,
                  routed: bool = False, router: str = "screen", candidates: int | None = None,
                  with_encoder: bool = False, sign_key: str | Path | None = None):
    """Write a verified bundle to ``out`` (nothing is left on failure); returns the ExportResult (out, manifest).

    The keywords are ``h2l export``'s flags: ``routed``/``router``/``candidates`` add teacher_routed.onnx,
    ``with_encoder`` adds encoder.onnx and tokenizer.json, ``sign_key`` publishes it signed."""
    from .export import export_onnx

    return export_onnx(teacher, out, student=student, fold_graph=fold, force=force, min_cosine=min_cosine,
                       seed=seed, quantize=quantize, routed=routed, router=router, candidates=candidates,
                       with_encoder=with_encoder, sign_key=sign_key)


def verify_bundle(path: str | Path, *, provider: str = "auto", min_cosine: float = 0.98,
                  queries: np.ndarray | None = None, labels: np.ndarray | None = None,
                  public_key: PublicKeyLike | None = None, check: bool = True):
    """Run every check of ``h2l verify``; returns the VerifyReport, and with ``check`` raises on any failure.

    ``provider``: "auto" (as ``h2l verify``: CPU, plus CUDA where it really runs), "cpu", "cuda" or "all".
    ``public_key`` (KEY.pub path, its bytes or an Ed25519PublicKey) refuses, before anything else, a bundle
    that key did not sign."""
    from .verify.checks import verify_bundle as run_checks
    from .verify.report import raise_for_failures

    report = run_checks(path, provider=provider, min_cosine=min_cosine, queries=queries, labels=labels,
                        public_key=public_key)
    if check:
        raise_for_failures(report)
    return report
