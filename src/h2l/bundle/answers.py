"""The text side of a bundle: answers.jsonl, golden texts, and the top cluster of a model's outputs.

    answers.jsonl        one {"cluster_id", "answer"} line per head, head order (Q-A teachers only)
    golden/texts.json    [{text, input_ids, truncated, top_cluster, top_clusters}]
    golden/encoder.query_embedding.npy   float32 [n_texts, 384], one text per encoder call

``top_cluster`` in texts.json is what ``ask`` answers by default (the student
when the bundle has one, else the teacher); ``top_clusters`` holds every model's.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import IntegrityError
from ..exporters import PROJECTED_NAME, WEIGHTS_NAME
from ..metrics import unit_rows
from .reader import BundleReader

#: Accents (composed and decomposed), mixed case, CJK, emoji, punctuation runs, control whitespace,
#: one text between the file's 128 and sentence-transformers' 256 tokens (the truncation trap) and
#: one longer than 256 (truncated).
TEXTS: tuple[str, ...] = (
    "How do I fix a flat tyre?",
    "Café crème brûlée, naïve façade: Ünïcödé àccents in Zürich",
    "Cafe\u0301 vs Café (decomposed vs composed)",
    "MiXeD CaSe QuEsTiOn ABOUT Brakes AND Gears",
    "自行车的刹车怎么调？ブレーキの調整方法は？자전거 브레이크",
    "my chain keeps slipping 🚲🔧😭 help!!! 👍🏽",
    "why?!?!... ,,,;;; --- *** ((( ))) ???",
    "line one\n\tline two\r\nline three",
    "How do I read CSV files in UnifyWeaver?",
    " ".join(f"step {i}: check the brake pads, cables and rims." for i in range(14)),  # 184 tokens
    " ".join(f"Sentence number {i} about wheels, spokes, hubs and bearings." for i in range(40)),
)


def answers_jsonl(cluster_ids, texts) -> bytes:
    return "".join(json.dumps({"cluster_id": c, "answer": a}, ensure_ascii=False, sort_keys=True) + "\n"
                   for c, a in zip(cluster_ids, texts, strict=True)).encode("utf-8")


def json_lines(text: str) -> list[str]:
    """Lines of a JSON-lines text, split at "\\n" only.

    ``str.splitlines`` also splits at U+2028, U+2029 and U+0085, which a JSON string may hold raw (and
    :func:`answers_jsonl` writes raw): an answer holding one would split its own line.  A final "\\n" ends
    the last line."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_answers(bundle: BundleReader) -> list[str] | None:
    """Answer texts in head order, or None when the bundle has none (lda.db teachers)."""
    meta = bundle.manifest.get("answers")
    if meta is None:
        return None
    ids = bundle.manifest["teacher"]["cluster_ids"]
    try:
        rows = [json.loads(line) for line in json_lines(bundle.read_verified(meta["file"]).decode("utf-8"))]
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{meta['file']} is not JSON lines ({exc})", "re-export the bundle") from None
    if len(rows) != meta["count"] or [r.get("cluster_id") for r in rows] != ids \
            or not all(isinstance(r.get("answer"), str) for r in rows):
        raise IntegrityError(f"{meta['file']} does not hold one answer per head in the teacher's cluster order",
                             "re-export the bundle")
    return [r["answer"] for r in rows]


def top(model: str, outs: dict[str, np.ndarray], answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(head index, weight) per row: largest routing weight (teacher, routed), else nearest answer by cosine."""
    if model == "routed":
        w = np.asarray(outs["top_weights"], np.float64)
        k = np.argmax(w, axis=1)
        rows = np.arange(len(w))
        return np.asarray(outs["top_heads"])[rows, k].astype(np.int64), w[rows, k]
    if WEIGHTS_NAME in outs:
        w = np.asarray(outs[WEIGHTS_NAME], np.float64)
        k = np.argmax(w, axis=1)
        return k, w[np.arange(len(w)), k]
    cos = unit_rows(outs[PROJECTED_NAME]) @ unit_rows(answers).T  # guarded: a zero row scores 0, never NaN
    k = np.argmax(cos, axis=1)
    return k, cos[np.arange(len(cos)), k]


def default_model(models) -> str:
    return "student" if "student" in models else "teacher"


def read_golden_texts(bundle: BundleReader) -> list[dict]:
    rel = bundle.manifest["golden"].get("texts")
    if rel is None:
        return []
    try:
        rows = json.loads(bundle.read_verified(rel).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{rel} is not valid JSON ({exc})", "re-export the bundle") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"text", "input_ids", "truncated",
                                                                       "top_cluster"} <= set(r) for r in rows):
        raise IntegrityError(f"{rel} is not a list of {{text, input_ids, truncated, top_cluster}}",
                             "re-export the bundle")
    return rows


def open_text_encoder(bundle: BundleReader, provider: str = "cpu", threads: int | None = None):
    """The bundle's tokenizer + encoder.onnx, truncating at the MANIFEST's max_seq_length."""
    from ..errors import InputError
    from ..runtime.encoder import make_text_encoder

    tok = bundle.manifest.get("tokenizer")
    if "encoder" not in bundle.models or tok is None:
        raise InputError(f"bundle {bundle.root} has no encoder (it takes query embeddings, not text)",
                         "re-export it with `h2l export --with-encoder`, or pass embeddings")
    return make_text_encoder(bundle.read_verified(tok["file"]), bundle.read_verified(bundle.models["encoder"]["file"]),
                             int(tok["max_seq_length"]), pad_id=int(tok.get("pad_id", 0)), provider=provider,
                             threads=threads)
