"""``h2l ask``: text in, answer out, from a bundle with an encoder (the Python reference for Rust and Go).

One result per text, in order: ``text``, ``top_cluster``, ``top_weight``, ``answer`` (or None when the
bundle has no answers.jsonl), ``embedding`` (the query embedding; dropped with embedding=False) and
``truncated``.  Teacher and routed teacher: the head of largest routing weight and that weight.
Student: the cluster whose answer embedding is nearest the projection, and that cosine.
Every text is checked before any is answered, so bad input gives an error and no partial output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle.answers import default_model, open_text_encoder, read_answers, top
from .bundle.reader import BundleReader, open_bundle
from .errors import InputError
from .exporters.onnx_teacher import teacher_arrays
from .runtime.encoder import TextEncoder
from .runtime.sessions import Runner, make_runner

MODELS = ("teacher", "student", "routed")


@dataclass(frozen=True, eq=False)
class Asker:
    bundle: BundleReader
    model: str
    encoder: TextEncoder
    runner: Runner
    answer_embeddings: np.ndarray  # (N, d), the teacher's
    answers: list[str] | None

    def ask(self, texts: list[str], embedding: bool = True) -> list[dict]:
        emb, truncated, _ = self.encoder.embed(list(texts))
        k, w = top(self.model, self.runner.run(emb), self.answer_embeddings)
        ids = self.bundle.manifest["teacher"]["cluster_ids"]
        out = []
        for i, text in enumerate(texts):
            row = {"text": text, "top_cluster": ids[int(k[i])], "top_weight": float(w[i]),
                   "answer": None if self.answers is None else self.answers[int(k[i])]}
            if embedding:
                row["embedding"] = [float(x) for x in emb[i]]
            row["truncated"] = truncated[i]
            out.append(row)
        return out


def open_asker(root, model: str | None = None, *, provider: str = "cpu", threads: int | None = None,
               public_key=None) -> Asker:
    """Open (and integrity-check) a bundle for asking; ``model`` None picks the student when there is one.

    ``public_key`` (KEY.pub path or bytes) pins the publisher, as in ``h2l.Bundle.open``."""
    # each model is hashed on the bytes it is built from
    bundle = open_bundle(root, defer_models=True, public_key=public_key)
    model = model or default_model(bundle.models)
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}", f"use one of {', '.join(MODELS)}")
    if model not in bundle.models:
        raise InputError(f"bundle {bundle.root} has no {model} model (it has {', '.join(sorted(bundle.models))})",
                         "pick one it has with --model")
    encoder = open_text_encoder(bundle, provider, threads)
    teacher_bytes = bundle.read_verified(bundle.models["teacher"]["file"])
    _, answer_emb = teacher_arrays(teacher_bytes)
    model_bytes = teacher_bytes if model == "teacher" else bundle.read_verified(bundle.models[model]["file"])
    runner = make_runner(model_bytes, provider, threads)
    return Asker(bundle, model, encoder, runner, answer_emb, read_answers(bundle))
