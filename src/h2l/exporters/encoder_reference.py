"""encoder.onnx against sentence-transformers: the reference embeddings, the comparison and its gate.

Export applies the gate before shipping an encoder and verify applies it again on the golden texts
(skipped, with the reason, where sentence-transformers is not installed).
"""

from __future__ import annotations

import numpy as np

from ..metrics import cosine
from .onnx_encoder import MODEL_NAME, max_seq_length, sentence_transformer

#: encoder.onnx vs sentence-transformers: the verify gate, also applied at export
ST_MIN_COSINE, ST_MAX_ABS = 0.99999, 1e-4


def st_reference(texts, model: str = MODEL_NAME) -> tuple[np.ndarray, list[list[int]]]:
    """sentence-transformers' own embeddings and token ids for ``texts`` (the numbers the teacher was built on)."""
    st = sentence_transformer(model)
    emb = st.encode(list(texts), batch_size=1, convert_to_numpy=True, normalize_embeddings=True)
    ids = st.tokenizer(list(texts), truncation=True, max_length=max_seq_length(st))["input_ids"]
    return np.asarray(emb, np.float32), [list(map(int, i)) for i in ids]


def compare_to_st(got: np.ndarray, got_ids, ref: np.ndarray, ref_ids) -> dict:
    cos = cosine(got, ref)
    return {"reference": "sentence-transformers", "n_texts": len(got), "min_cosine": float(cos.min()),
            "max_abs_diff": float(np.abs(got.astype(np.float64) - ref).max()),
            "ids_equal": [list(i) for i in got_ids] == [list(i) for i in ref_ids],
            "gate": {"min_cosine": ST_MIN_COSINE, "max_abs": ST_MAX_ABS}}


def st_failures(src: dict) -> list[str]:
    out = []
    if not src["ids_equal"]:
        out.append("encoder token ids differ from sentence-transformers' tokenizer")
    if not src["min_cosine"] >= ST_MIN_COSINE:
        out.append(f"encoder vs sentence-transformers min cosine {src['min_cosine']:.7f} < {ST_MIN_COSINE}")
    if not src["max_abs_diff"] <= ST_MAX_ABS:
        out.append(f"encoder vs sentence-transformers max abs {src['max_abs_diff']:.3g} > {ST_MAX_ABS:g}")
    return out
