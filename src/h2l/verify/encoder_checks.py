"""Checks of a bundle's text side: tokenizer ids, encoder embeddings, top clusters, answers, and
encoder.onnx against sentence-transformers (skipped with the reason when it is not installed)."""

from __future__ import annotations

import numpy as np

from ..bundle.answers import read_answers, read_golden_texts, top
from ..bundle.reader import BundleReader
from ..errors import IntegrityError
from ..exporters.encoder_reference import ST_MAX_ABS, ST_MIN_COSINE, compare_to_st, st_reference
from ..runtime.encoder import TextEncoder, load_tokenizer, tokenize
from ..runtime.sessions import Runner
from .report import Check


def check_answers(bundle: BundleReader) -> list[Check]:
    if "answers" not in bundle.manifest:
        return []
    try:
        read_answers(bundle)
        return [Check("answers", "-", "answers_jsonl", True, "integrity")]
    except IntegrityError as exc:
        return [Check("answers", "-", "answers_jsonl", False, "integrity", detail=exc.message)]


def _encoder(bundle: BundleReader, runner: Runner) -> TextEncoder:
    tok = bundle.manifest["tokenizer"]
    return TextEncoder(load_tokenizer(bundle.read_verified(tok["file"]), int(tok["max_seq_length"])), runner,
                       int(tok.get("pad_id", 0)))


def check_encoder(bundle: BundleReader, runner: Runner, runners: dict[str, Runner], answers: np.ndarray, atol: float,
                  summary: dict) -> list[Check]:
    """Golden texts through the bundle's own tokenizer and encoder: ids, truncation, embeddings, top clusters."""
    p = runner.provider
    tok_meta = bundle.manifest.get("tokenizer")
    enc_len = bundle.models["encoder"].get("max_seq_length")
    rows = read_golden_texts(bundle)
    if tok_meta is None or not rows or tok_meta["max_seq_length"] != enc_len:
        return [Check("encoder", p, "text_contract", False, "integrity",
                      detail="the manifest needs tokenizer, golden.texts and equal max_seq_length in "
                             "tokenizer and models.encoder")]
    enc = _encoder(bundle, runner)
    texts = [r["text"] for r in rows]
    toks = tokenize(enc.tokenizer, texts)
    bad = [i for i, (t, r) in enumerate(zip(toks, rows, strict=True)) if list(t.ids) != r["input_ids"]]
    checks = [Check("encoder", p, "golden:input_ids", not bad, "integrity",
                    detail=f"text #{bad[0] + 1} tokenizes differently" if bad else "")]
    bad_t = [i for i, (t, r) in enumerate(zip(toks, rows, strict=True)) if t.truncated != r["truncated"]]
    checks.append(Check("encoder", p, "golden:truncated", not bad_t, "integrity",
                        detail=f"text #{bad_t[0] + 1}" if bad_t else ""))
    one = np.concatenate([enc.run_ids([t]) for t in toks])
    err = float(np.abs(one.astype(np.float64) - bundle.golden_output("encoder", "query_embedding")).max())
    checks.append(Check("encoder", p, "golden:query_embedding", err <= atol, "parity", err, atol))
    err_b = float(np.abs(enc.run_ids(toks).astype(np.float64) - one).max())  # one padded batch
    checks.append(Check("encoder", p, "batch_consistency:golden_texts", err_b <= atol, "parity", err_b, atol))
    summary.setdefault(p, {}).setdefault("encoder", {}).update(golden_max_abs=err, padded_batch_max_abs=err_b)
    ids = bundle.manifest["teacher"]["cluster_ids"]
    for name, r in runners.items():
        want = [row.get("top_clusters", {}).get(name) for row in rows]
        if name == "encoder" or None in want:
            continue
        k, _ = top(name, r.run(one), answers)
        miss = [i for i, (j, w) in enumerate(zip(k, want, strict=True)) if ids[int(j)] != w]
        checks.append(Check(name, p, "golden:top_cluster", not miss, "parity", float(len(miss)), 0.0,
                            f"text #{miss[0] + 1}" if miss else ""))
    return checks


def check_encoder_vs_st(bundle: BundleReader) -> tuple[list[Check], str]:
    """(checks, skip reason): encoder.onnx vs sentence-transformers on the golden texts, on CPU."""
    from ..importers.embed import available
    from ..runtime.sessions import make_runner

    ok, reason = available()
    if not ok:
        return [], reason
    rows = read_golden_texts(bundle)
    if not rows or "tokenizer" not in bundle.manifest:
        return [], "no golden texts"
    enc = _encoder(bundle, make_runner(bundle.read_verified(bundle.models["encoder"]["file"]), "cpu"))
    texts = [r["text"] for r in rows]
    toks = tokenize(enc.tokenizer, texts)
    got = np.concatenate([enc.run_ids([t]) for t in toks])
    ref, ref_ids = st_reference(texts, bundle.models["encoder"].get("embedding_model", ""))
    src = compare_to_st(got, [t.ids for t in toks], ref, ref_ids)
    return [Check("encoder", "cpu", "vs_sentence_transformers:input_ids", src["ids_equal"], "parity"),
            Check("encoder", "cpu", "vs_sentence_transformers:min_cosine", src["min_cosine"] >= ST_MIN_COSINE,
                  "parity", src["min_cosine"], ST_MIN_COSINE),
            Check("encoder", "cpu", "vs_sentence_transformers:max_abs", src["max_abs_diff"] <= ST_MAX_ABS,
                  "parity", src["max_abs_diff"], ST_MAX_ABS)], ""
