"""``h2l.Bundle``: a bundle opened for serving, checked the way the Rust and Go runtimes check it.

``Bundle(path)`` validates the manifest against its schema, checks every listed
file's size and sha256, builds each model's onnxruntime session from the very
bytes it hashed (``InferenceSession(bytes)``: no re-open by path, so nothing can
swap a file between the check and the load), and compares each session's I/O
with the manifest's contract.  Sessions are safe to call from several threads.

    b = h2l.Bundle("bundle")                          # provider "auto": CUDA when usable, else CPU
    b.project(queries)                                # float32 [batch, d]
    b.embed(["How do I fix a flat tyre?"])            # float32 [n, 384]  (bundles exported --with-encoder)
    b.ask(["How do I fix a flat tyre?"], top_k=3)     # what `h2l ask` prints, plus the top_k heads
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, IntegrityError, ProviderError
from ..exporters import PROJECTED_NAME, WEIGHTS_NAME
from ..exporters.onnx_routed import TOP_HEADS, TOP_WEIGHTS
from ..exporters.onnx_teacher import teacher_arrays
from ..model.teacher import NORM_EPS
from ..runtime.encoder import TextEncoder, load_tokenizer
from ..runtime.sessions import Runner, contract_diff, contract_of, cuda_status, make_runner
from .answers import default_model, read_answers
from .reader import open_bundle
from .signing import PublicKeyLike

MODELS = ("auto", "teacher", "student", "routed")
PROVIDERS = ("auto", "cpu", "cuda")


def resolve_provider(provider: str) -> str:
    """auto → "cuda" when a CUDA session really runs here (runtime.sessions.cuda_status), else "cpu"."""
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}", "use auto, cpu or cuda")
    if provider == "auto":
        return "cuda" if cuda_status()[0] else "cpu"
    return provider


class Bundle:
    """An opened, verified bundle: ``dim``, ``models``, ``project``, and for text bundles ``embed`` and ``ask``.

    ``provider``: "auto" (the default, as ``h2l verify``: CUDA when usable, else CPU), "cpu" or "cuda"
    (refused with ProviderError, exit 7, where CUDA does not really run).  ``public_key`` (a KEY.pub path, its
    PEM bytes or an Ed25519PublicKey) pins the publisher: an unsigned bundle, one signed by another key, or a
    manifest changed after signing is refused (IntegrityError, exit 5).  Every failure is an h2l error with its
    exit code and a one-line fix."""

    def __init__(self, path: str | Path, *, provider: str = "auto", threads: int | None = None,
                 public_key: PublicKeyLike | None = None) -> None:
        self.provider = resolve_provider(provider)  # an unusable provider is refused before any file is read
        opened = open_bundle(path, defer_models=True, public_key=public_key)
        runners: dict[str, Runner] = {}
        unit_answers = None  # the student's answers are ranked by cosine to these
        for name, meta in opened.models.items():
            data = opened.read_verified(meta["file"])
            if name == "teacher" and "student" in opened.models:
                a = np.asarray(teacher_arrays(data)[1], np.float64)
                unit_answers = (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), NORM_EPS)).astype(np.float32)
                del a
            try:
                runners[name] = make_runner(data, self.provider, threads=threads)
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                raise IntegrityError(f"{meta['file']} does not load in onnxruntime "
                                     f"({str(exc).splitlines()[0][:160]})", "re-export the bundle") from None
            del data  # the session holds its own copy
            diff = contract_diff({"inputs": meta["inputs"], "outputs": meta["outputs"]},
                                 contract_of(runners[name].session))
            if diff:
                raise IntegrityError(f"{meta['file']} does not match the manifest's I/O contract ({'; '.join(diff)})",
                                     "re-export the bundle")
        tok = opened.manifest.get("tokenizer")
        self._encoder = None if tok is None or "encoder" not in runners else TextEncoder(
            load_tokenizer(opened.read_verified(tok["file"]), int(tok["max_seq_length"])), runners["encoder"],
            int(tok.get("pad_id", 0)))
        self.root, self.manifest, self._runners = opened.root, opened.manifest, runners
        self._unit_answers = unit_answers
        self._answers = read_answers(opened)

    @classmethod
    def open(cls, path: str | Path, *, provider: str = "auto", threads: int | None = None,
             public_key: PublicKeyLike | None = None) -> Bundle:
        """The same as ``Bundle(path, ...)``."""
        return cls(path, provider=provider, threads=threads, public_key=public_key)

    @property
    def dim(self) -> int:
        """The embedding dimension d every projecting model takes and returns."""
        return int(self.manifest["teacher"]["dim"])

    @property
    def models(self) -> tuple[str, ...]:
        """Names of the models this bundle ships (``teacher`` always; ``student``, ``routed``, ``encoder`` optional)."""
        return tuple(self._runners)

    @property
    def cluster_ids(self) -> list[str]:
        return list(self.manifest["teacher"]["cluster_ids"])

    @property
    def teacher_sha256(self) -> str:
        return str(self.manifest["teacher"]["sha256"])

    def _model(self, model: str) -> str:
        if model not in MODELS:
            raise InputError(f"model {model!r} is not one of {', '.join(MODELS)}", "pass model='auto'")
        name = default_model(self._runners) if model == "auto" else model
        if name not in self._runners:
            raise InputError(f"this bundle has no {name} model (it has {', '.join(self._runners)})",
                             "pass model='auto' or one of the bundle's models")
        return name

    def project(self, q: np.ndarray, model: str = "auto") -> np.ndarray:
        """Projected embeddings, float32 [batch, d], for queries q of shape (d,) or (batch, d).

        ``model``: "auto" (the student when the bundle has one, else the teacher), "teacher", "student" or "routed".
        """
        name = self._model(model)
        q = np.asarray(q)
        if q.dtype.kind not in "fiu":
            raise InputError(f"queries have dtype {q.dtype}, expected float32", "pass a float32 array (batch, d)")
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] != self.dim:
            raise InputError(f"queries have shape {q.shape}, expected (batch, {self.dim})",
                             f"pass a non-empty (batch, {self.dim}) array")
        with np.errstate(over="ignore"):  # cast first: a float64 beyond float32's range becomes Inf, refused below
            q = np.ascontiguousarray(q, np.float32)
        bad = ~np.isfinite(q).all(axis=1)
        if bad.any():  # the projection would be NaN; Rust and Go refuse with these words
            raise InputError(f"query {int(np.argmax(bad))} contains NaN or Inf", "pass finite float32 queries")
        out = self._runners[name].run(q)[PROJECTED_NAME]
        return np.ascontiguousarray(out, np.float32)

    def _text_encoder(self) -> TextEncoder:
        if self._encoder is None:
            raise InputError(f"bundle {self.root} has no encoder (it takes query embeddings, not text)",
                             "re-export it with `h2l export --with-encoder`, or call project() with embeddings")
        return self._encoder

    def embed(self, texts: str | Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Query embeddings of ``texts`` by the bundle's own encoder: float32 [n, 384] ([384] for one str).

        ``batch_size`` texts go through the encoder per call, padded to the longest (as sentence-transformers
        does); ``h2l ask`` and ``ask`` embed one text per call, which differs from a batch by float rounding."""
        one = isinstance(texts, str)
        items = _texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size {batch_size!r} is not an integer ≥ 1", "pass batch_size=32")
        emb = self._text_encoder().embed(items, batch=batch_size)[0]
        return emb[0] if one else emb

    def ask(self, texts: str | Sequence[str], top_k: int = 1, *, model: str = "auto",
            embedding: bool = False) -> list[dict] | dict:
        """Answer text questions: per text, what ``h2l ask`` prints for it (``text``, ``top_cluster``,
        ``top_weight``, ``answer``, ``truncated``, and ``embedding`` when asked for), plus ``top``: the
        ``top_k`` best heads, best first, each ``{cluster_id, weight, answer}``.  One dict for one str.

        Teacher and routed teacher rank heads by routing weight; the student by the cosine between its
        projection and each head's answer embedding (``answer`` is None for bundles without answers.jsonl)."""
        one = isinstance(texts, str)
        items = _texts(texts)
        name = self._model(model)
        limit = int(self.manifest["models"]["routed"]["candidates"]) if name == "routed" else len(self.cluster_ids)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limit:
            raise InputError(f"top_k {top_k!r} is not an integer from 1 to {limit} (the {name} model ranks {limit} "
                             "heads)", f"pass top_k between 1 and {limit}")
        emb, truncated, _ = self._text_encoder().embed(items)  # one text per call, as `h2l ask`
        heads, weights = self._ranked(name, self._runners[name].run(emb), top_k)
        ids, answers = self.cluster_ids, self._answers
        rows = []
        for i, text in enumerate(items):
            top = [{"cluster_id": ids[int(k)], "weight": float(w),
                    "answer": None if answers is None else answers[int(k)]}
                   for k, w in zip(heads[i], weights[i], strict=True)]
            row: dict[str, object] = {"text": text, "top_cluster": top[0]["cluster_id"], "top_weight": top[0]["weight"],
                   "answer": top[0]["answer"]}
            if embedding:
                row["embedding"] = [float(x) for x in emb[i]]
            row["truncated"] = truncated[i]
            row["top"] = top
            rows.append(row)
        return rows[0] if one else rows

    def _ranked(self, name: str, outs: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(head indices, weights) [batch, k], best first; ties keep head order (argmax picks the first)."""
        if name == "routed":
            w = np.asarray(outs[TOP_WEIGHTS], np.float64)
            order = np.argsort(-w, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(np.asarray(outs[TOP_HEADS]), order, 1), np.take_along_axis(w, order, 1)
        if WEIGHTS_NAME in outs:
            w = np.asarray(outs[WEIGHTS_NAME], np.float64)
        else:  # the student: cosine between its projection and each answer embedding
            assert self._unit_answers is not None, "kept whenever the bundle has a student"
            p = np.asarray(outs[PROJECTED_NAME], np.float64)
            p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), NORM_EPS)
            w = p @ self._unit_answers.T.astype(np.float64)
        order = np.argsort(-w, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(w, order, 1)

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, dim={self.dim}, models={list(self._runners)}, provider={self.provider!r})"


def _texts(texts: str | Sequence[str]) -> list[str]:
    items = [texts] if isinstance(texts, str) else list(texts) if isinstance(texts, Sequence) else None
    if not items:
        raise InputError("no texts given", "pass a string or a non-empty list of strings")
    return items
