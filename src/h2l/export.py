"""``h2l export``: build graphs, check them against their sources, write a verified bundle atomically.

Order of work: build and check every graph in memory, stage the files in a
hidden sibling folder, compute golden outputs, run :func:`verify_bundle` on
the stage (CPU), write the manifest last, then publish the folder by rename.
Any failure or interrupt before the rename leaves no bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from . import __version__
from .atomic import check_output_dir, staged_dir, write_file
from .bundle.answers import answers_jsonl
from .bundle.files import file_entries
from .bundle.layout import ANSWERS_FILE, GOLDEN_ENCODER, GOLDEN_INPUTS, GOLDEN_TEXTS, MANIFEST, SIGNATURE, json_bytes
from .bundle.schema import SCHEMA_VERSION
from .bundle.signing import load_private_key, signature_bytes
from .distill.checkpoint import StudentCheckpoint, load_checkpoint_with_sha
from .errors import InputError, ParityError
from .export_encoder import ENCODER_FILE, encoder_parts, golden_texts
from .exporters import PROJECTED_NAME
from .exporters.onnx_common import check, check_size, contract, serialize
from .exporters.onnx_encoder import MODEL_NAME, TOKENIZER_FILE, check_embedding_model
from .exporters.onnx_encoder import OUTPUT as ENCODER_OUTPUT
from .exporters.onnx_student import make_folded_student_model, make_unfolded_student_model
from .exporters.onnx_teacher import make_teacher_model
from .exporters.quantize import make_int8_student_model
from .metrics import cosine
from .model.sampling import sampled_queries
from .model.student import fold, torch_forward
from .model.teacher import Teacher, require_flat
from .runtime.sessions import make_runner
from .verify.checks import verify_bundle
from .verify.report import raise_for_failures
from .writers import npy_bytes

SOURCE_ATOL = 1e-4  # folded/unfolded ONNX vs the torch model (float32 reassociation)
GOLDEN_ATOL = 1e-5


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: dict


def golden_queries(teacher: Teacher, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(inputs, kind of each row): up to 8 stored (held-out first) queries, 3 near-centroid samples,
    2 isotropic random vectors and a zero vector."""
    rows = []
    if teacher.queries is not None:
        rows = [*teacher.queries.heldout[:8]]
        rows += [*teacher.queries.train[: 8 - len(rows)]]
    kinds = ["stored"] * len(rows) + ["sampled"] * 3 + ["random"] * 2 + ["zero"]
    rng = np.random.default_rng(seed)
    rows += [*sampled_queries(teacher.keys, teacher.temperature, 3, seed)]
    rows += [*rng.standard_normal((2, teacher.dim)).astype(np.float32), np.zeros(teacher.dim, np.float32)]
    return np.stack(rows).astype(np.float32), kinds


def _student_model(ckpt: StudentCheckpoint, teacher: Teacher, fold_graph: bool, ckpt_sha: str,
                   probe: np.ndarray, quantize: str) -> tuple[bytes, dict]:
    if ckpt.teacher_sha256 != teacher.fingerprint():
        raise InputError("the student was distilled from a different teacher (teacher sha256 differs)",
                         "pass the teacher the student was distilled from, or re-run `h2l distill`")
    if ckpt.config.dim != teacher.dim:
        raise InputError(f"student d = {ckpt.config.dim} but teacher d = {teacher.dim}", "re-run `h2l distill`")
    try:
        model = ckpt.model()
    except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or shapes that differ from the config
        raise InputError(f"the student checkpoint's weights do not match its architecture "
                         f"({str(exc).splitlines()[0][:160]})",
                         "re-run `h2l distill`; do not edit checkpoints") from None
    meta = {"h2l.name": teacher.name, "h2l.teacher_sha256": teacher.fingerprint(), "h2l.checkpoint_sha256": ckpt_sha,
            "h2l.architecture": json.dumps(ckpt.config.to_dict(), sort_keys=True), "h2l.dim": str(teacher.dim),
            "h2l.n_heads": str(teacher.n_heads), "h2l.temperature": repr(teacher.temperature)}
    reference = torch_forward(model, probe)
    source: dict = {"reference": "torch (unfolded, eval)", "atol": SOURCE_ATOL}
    if fold_graph:
        folded = fold(model)
        source["numpy_fold_max_abs_diff"] = float(np.abs(folded.forward(probe) - reference).max())
        proto = make_folded_student_model(folded, meta)
    else:
        proto = make_unfolded_student_model(model, meta)
    check(proto)
    data = serialize(proto, "student.onnx")
    got = make_runner(data, "cpu").run(probe)[PROJECTED_NAME]
    source["onnx_max_abs_diff"] = float(np.abs(got - reference).max())
    if not source["onnx_max_abs_diff"] <= SOURCE_ATOL:
        raise ParityError([f"student.onnx vs torch max abs diff {source['onnx_max_abs_diff']:.3g} > {SOURCE_ATOL:g}"],
                          "export with --no-fold and report a bug")
    if quantize == "int8":
        # int8 cannot meet a float tolerance: record its distance from the exact float graph; the
        # student-vs-teacher gate in verify decides whether it ships
        proto = make_int8_student_model(proto)
        check(proto)
        data = serialize(proto, "student.onnx")
        q8 = make_runner(data, "cpu").run(probe)[PROJECTED_NAME]
        source["int8_vs_float_max_abs_diff"] = float(np.abs(q8 - got).max())
        source["int8_vs_float_min_cosine"] = float(cosine(q8, got).min())
    entry = {"file": "student.onnx", "role": "student", "opset": proto.opset_import[0].version,
             "ir_version": proto.ir_version, **contract(proto), "folded": fold_graph, "quantization": quantize,
             "architecture": ckpt.config.to_dict(), "checkpoint_sha256": ckpt_sha, "source_check": source}
    return data, entry


def versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"h2l": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "torch": torch.__version__.split("+")[0]}


def export_onnx(teacher: Teacher, out: str | Path, *, student: str | Path | None = None, fold_graph: bool = True,
                force: bool = False, min_cosine: float = 0.98, seed: int = 0, quantize: str = "none",
                sign_key: str | Path | None = None, routed: bool = False, router: str = "screen",
                candidates: int | None = None, with_encoder: bool = False) -> ExportResult:
    """Write a verified bundle to ``out``; raises (leaving no bundle) on any failed check.

    ``quantize="int8"`` ships the folded student with dynamic int8 weights (all but the output projection).
    ``sign_key`` (from ``h2l keygen``) writes manifest.sig inside the staging folder, before the publishing
    rename, so the bundle is never visible unsigned.
    ``routed`` adds ``teacher_routed.onnx`` (:mod:`h2l.exporters.routed_export`) and reports/routing.json.
    ``with_encoder`` adds encoder.onnx, tokenizer.json and golden texts (text in, answer out);
    answers.jsonl ships whenever the teacher kept its answer texts.
    """
    out = Path(out)
    require_flat(teacher, "h2l export", "export a flat teacher (lda.db without W, npy folder, h2l teacher build); "
                 "the graphs for affine, shared-head and top-k teachers are not built yet")
    if quantize not in ("none", "int8"):
        raise InputError(f"unknown quantization {quantize!r}", "use none or int8")
    if quantize == "int8" and (student is None or not fold_graph):
        raise InputError("--quantize int8 applies to a folded student", "pass --student and drop --no-fold")
    check_output_dir(out, force)  # fail fast, before any graph is built
    private_key = None if sign_key is None else load_private_key(sign_key)
    if with_encoder:
        check_embedding_model(teacher.embedding_model)
    check_size(2 * teacher.centroids.nbytes + 4096, "teacher.onnx")  # before building 2 GiB of protobuf
    t_proto = make_teacher_model(teacher)
    check(t_proto)
    files = {"teacher.onnx": serialize(t_proto, "teacher.onnx")}
    models = {"teacher": {"file": "teacher.onnx", "role": "teacher", "opset": t_proto.opset_import[0].version,
                          "ir_version": t_proto.ir_version, **contract(t_proto)}}
    del t_proto  # its bytes are in files; at N = 100k the proto is another 300 MB
    golden, golden_kinds = golden_queries(teacher, seed)
    routing_report = None
    if routed:
        from .exporters.routed_export import routed_model

        files["teacher_routed.onnx"], models["routed"], routing_report = routed_model(
            teacher, router=router, candidates=candidates, seed=seed)
    ckpt = None
    if student is not None:
        ckpt, ckpt_sha = load_checkpoint_with_sha(student)
        if not ckpt.complete:
            raise InputError(f"student checkpoint {student} is from an unfinished (interrupted) distillation",
                             f"finish it with `h2l distill ... --out {student} --resume`")
        probe = np.concatenate([golden, sampled_queries(teacher.keys, teacher.temperature, 61, seed + 1)])
        files["student.onnx"], models["student"] = _student_model(ckpt, teacher, fold_graph, ckpt_sha, probe, quantize)
    text = encoder_parts() if with_encoder else None
    if text is not None:
        files[ENCODER_FILE], models["encoder"] = text.data, text.entry
        files[TOKENIZER_FILE] = text.tokenizer
    extra: dict = {}
    if teacher.answer_texts is not None:
        files[ANSWERS_FILE] = answers_jsonl(teacher.cluster_ids, teacher.answer_texts)
        extra["answers"] = {"file": ANSWERS_FILE, "count": teacher.n_heads}
    with staged_dir(out, force) as stage:
        golden_map: dict[str, dict[str, str]] = {}
        for rel in files:  # no loop variable may keep the last file's bytes alive through verify (346 MB at N = 100k)
            write_file(stage, rel, files[rel])
        write_file(stage, GOLDEN_INPUTS, npy_bytes(golden))
        for name, entry in models.items():
            if name == "encoder":
                continue  # token ids in, not embeddings: golden texts below
            outs = make_runner(files[entry["file"]], "cpu").run(golden)
            for o in entry["outputs"]:
                rel = f"golden/{name}.{o['name']}.npy"
                write_file(stage, rel, npy_bytes(outs[o["name"]]))
                golden_map.setdefault(name, {})[o["name"]] = rel
        if routing_report is not None:
            write_file(stage, "reports/routing.json", json_bytes(routing_report))
        golden_extra: dict = {}
        if text is not None:
            texts_doc, emb = golden_texts(text, files, models, teacher)
            write_file(stage, GOLDEN_TEXTS, json_bytes(texts_doc))
            write_file(stage, GOLDEN_ENCODER, npy_bytes(emb))
            golden_map["encoder"] = {ENCODER_OUTPUT: GOLDEN_ENCODER}
            golden_extra["texts"] = GOLDEN_TEXTS
            extra["tokenizer"] = {"file": TOKENIZER_FILE, "max_seq_length": text.max_seq_length,
                                  "embedding_model": MODEL_NAME, "pad_id": text.pad_id}
        if ckpt is not None:
            write_file(stage, "reports/training.json", json_bytes(
                {"config": ckpt.config.to_dict(), "train_config": ckpt.train_config,
                 "metrics": ckpt.metrics, "history": ckpt.history}))
        manifest = {
            "schema_version": SCHEMA_VERSION, "format": "h2l-bundle", "h2l_version": __version__,
            "name": teacher.name,
            "teacher": {"n_heads": teacher.n_heads, "dim": teacher.dim, "temperature": teacher.temperature,
                        "cluster_ids": list(teacher.cluster_ids), "embedding_model": teacher.embedding_model,
                        "sha256": teacher.fingerprint()},
            "models": models,
            "golden": {"inputs": GOLDEN_INPUTS, "outputs": golden_map, "atol": GOLDEN_ATOL, "rows": golden_kinds,
                       **golden_extra},
            **extra, "files": [], "versions": versions(),
            "verification": {"passed": False, "provider": "pending", "min_cosine": min_cosine, "checks": []},
        }
        write_file(stage, MANIFEST, json_bytes({**manifest, "files": file_entries(stage)}))
        files.clear()  # on disk now: verify reads the stage (at N = 100k these bytes are 650 MB)
        report = verify_bundle(stage, provider="cpu", min_cosine=min_cosine, seed=seed)
        raise_for_failures(report)
        write_file(stage, "reports/verification.json", json_bytes(report.to_dict()))
        manifest["verification"] = {k: v for k, v in report.to_dict().items() if k != "checks"} | {
            "checks": [{"model": c.model, "check": c.check, "passed": c.passed, "value": c.value}
                       for c in report.checks if c.kind != "info"]}
        manifest["files"] = file_entries(stage)
        manifest_bytes = json_bytes(manifest)
        write_file(stage, MANIFEST, manifest_bytes)
        if private_key is not None:
            write_file(stage, SIGNATURE, signature_bytes(manifest_bytes, private_key))
    return ExportResult(out, manifest)
