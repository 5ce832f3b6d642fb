"""The text half of ``h2l export --with-encoder``: encoder.onnx checked against sentence-transformers,
tokenizer.json, and the golden texts every runtime reproduces (ids, truncation, embedding, top cluster).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .bundle.answers import TEXTS, default_model, top
from .errors import ParityError
from .exporters.encoder_reference import compare_to_st, st_failures, st_reference
from .exporters.onnx_common import check, serialize
from .exporters.onnx_encoder import (
    MODEL_NAME,
    make_encoder_model,
    max_seq_length,
    sentence_transformer,
    tokenizer_bytes,
)
from .model.teacher import Teacher
from .runtime.encoder import TextEncoder, load_tokenizer
from .runtime.sessions import make_runner

ENCODER_FILE = "encoder.onnx"


@dataclass(frozen=True, eq=False)
class EncoderParts:
    data: bytes  # encoder.onnx
    entry: dict  # manifest models.encoder
    tokenizer: bytes  # tokenizer.json, as the package ships it
    max_seq_length: int
    pad_id: int

    def text_encoder(self) -> TextEncoder:
        return TextEncoder(load_tokenizer(self.tokenizer, self.max_seq_length), make_runner(self.data, "cpu"),
                           self.pad_id)


@functools.lru_cache(maxsize=1)
def encoder_parts() -> EncoderParts:
    """Export MiniLM to one ONNX file and check it against sentence-transformers on the golden texts.

    Cached per process: the export is deterministic (tests/exporters/test_encoder.py checks equal bytes across
    processes), so a second bundle in one process reuses the bytes instead of 10 s of tracing.
    """
    from .exporters.onnx_common import contract

    st = sentence_transformer(MODEL_NAME)
    proto = make_encoder_model(st)
    check(proto)
    tok = tokenizer_bytes()
    length = max_seq_length(st)
    pad_id = int(load_tokenizer(tok, length).token_to_id("[PAD]") or 0)
    parts = EncoderParts(serialize(proto, ENCODER_FILE), {}, tok, length, pad_id)
    got, _, toks = parts.text_encoder().embed(list(TEXTS))
    ref, ref_ids = st_reference(TEXTS)
    source = compare_to_st(got, [t.ids for t in toks], ref, ref_ids)
    failed = st_failures(source)
    if failed:
        raise ParityError(failed, "report a bug with your torch and transformers versions")
    entry = {"file": ENCODER_FILE, "role": "encoder", "opset": proto.opset_import[0].version,
             "ir_version": proto.ir_version, **contract(proto), "embedding_model": MODEL_NAME,
             "max_seq_length": length, "quantization": "none", "source_check": source}
    return EncoderParts(parts.data, entry, tok, length, pad_id)


def golden_texts(parts: EncoderParts, files: dict[str, bytes], models: dict, teacher: Teacher):
    """(texts.json rows, embeddings [n, d]): each golden text's ids, truncation and every model's top cluster."""
    emb, _, toks = parts.text_encoder().embed(list(TEXTS))
    tops = {}
    for name, entry in models.items():
        if name != "encoder":
            k, _ = top(name, make_runner(files[entry["file"]], "cpu").run(emb), teacher.answers)
            tops[name] = k
    default = default_model(models)
    ids = teacher.cluster_ids
    rows = [{"text": t, "input_ids": list(tk.ids), "truncated": tk.truncated,
             "top_cluster": ids[int(tops[default][i])],
             "top_clusters": {m: ids[int(k[i])] for m, k in sorted(tops.items())}}
            for i, (t, tk) in enumerate(zip(TEXTS, toks, strict=True))]
    return rows, emb
