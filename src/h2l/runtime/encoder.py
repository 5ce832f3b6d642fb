"""Text → query embedding with the bundle's tokenizer.json and encoder.onnx (no sentence-transformers).

The tokenizer file carries its own truncation (128) and fixed padding (128);
both are replaced here: truncation to the manifest's ``max_seq_length`` (what
sentence-transformers applies) and no padding, so ids equal the golden ids
and a batch is padded only to its longest text (pad id, attention mask 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DependencyError, InputError
from .sessions import Runner, make_runner

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def check_text(text, i: int = 0) -> str:
    """Refuse what the encoder cannot mean: non-strings, empty or whitespace-only text, NUL bytes.

    (The BERT normaliser would silently turn all of these into ``[CLS] [SEP]`` or drop the NUL.)
    """
    if not isinstance(text, str):
        raise InputError(f"text #{i + 1} is {type(text).__name__}, not a string", "pass text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: how Python passes on invalid UTF-8 from argv
        raise InputError(f"text #{i + 1} is not valid UTF-8", "pass UTF-8 text") from None
    if "\x00" in text:
        raise InputError(f"text #{i + 1} contains a NUL byte", "remove NUL characters from the text")
    if not text.strip():
        raise InputError(f"text #{i + 1} is empty or whitespace only", "ask a question with some words in it")
    return text


@dataclass(frozen=True)
class Tokenized:
    """One text's token ids (with [CLS]/[SEP]) and whether truncation cut it."""

    ids: tuple[int, ...]
    truncated: bool


def load_tokenizer(path: str | Path | bytes, max_seq_length: int) -> Tokenizer:
    """A tokenizers.Tokenizer from a file (or its bytes), truncating at ``max_seq_length``, never padding."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - a core dependency
        raise DependencyError("the tokenizers package is not installed", "pip install tokenizers") from None
    try:
        tok = Tokenizer.from_str(path.decode()) if isinstance(path, bytes) else Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the Rust library raises its own exception type
        name = "tokenizer.json" if isinstance(path, bytes) else Path(path).name
        raise InputError(f"{name} is not a readable tokenizer ({str(exc)[:120]})",
                         "re-export the bundle") from None
    tok.no_padding()
    tok.enable_truncation(max_seq_length)
    return tok


def tokenize(tok: Tokenizer, texts: list[str]) -> list[Tokenized]:
    encs = tok.encode_batch([check_text(t, i) for i, t in enumerate(texts)])
    return [Tokenized(tuple(e.ids), bool(e.overflowing)) for e in encs]


def pad(batch: list[Tokenized], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 [batch, longest]."""
    width = max(len(t.ids) for t in batch)
    ids = np.full((len(batch), width), pad_id, np.int64)
    mask = np.zeros((len(batch), width), np.int64)
    for i, t in enumerate(batch):
        ids[i, : len(t.ids)] = t.ids
        mask[i, : len(t.ids)] = 1
    return ids, mask


@dataclass(frozen=True)
class TextEncoder:
    """A tokenizer and an encoder session: ``embed(texts)`` → (embeddings [n, d], truncated flags)."""

    tokenizer: Tokenizer
    runner: Runner
    pad_id: int = 0

    @property
    def max_seq_length(self) -> int:
        trunc = self.tokenizer.truncation
        assert trunc is not None, "load_tokenizer always enables truncation"
        return int(trunc["max_length"])

    def run_ids(self, batch: list[Tokenized]) -> np.ndarray:
        ids, mask = pad(batch, self.pad_id)
        sess = self.runner.session
        out = sess.run([sess.get_outputs()[0].name], {"input_ids": ids, "attention_mask": mask})[0]
        return np.ascontiguousarray(out, np.float32)

    def embed(self, texts: list[str], batch: int = 1) -> tuple[np.ndarray, list[bool], list[Tokenized]]:
        """One text per call by default: padding never enters the numbers a runtime compares."""
        toks = tokenize(self.tokenizer, list(texts))
        parts = [self.run_ids(toks[i:i + batch]) for i in range(0, len(toks), batch)]
        return np.concatenate(parts), [t.truncated for t in toks], toks


def make_text_encoder(tokenizer_path: str | Path | bytes, encoder_path: str | Path | bytes, max_seq_length: int, *,
                      pad_id: int = 0, provider: str = "cpu", threads: int | None = None) -> TextEncoder:
    return TextEncoder(load_tokenizer(tokenizer_path, max_seq_length),
                       make_runner(encoder_path, provider, threads), pad_id)
