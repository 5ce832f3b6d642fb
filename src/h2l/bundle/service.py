"""``h2l.Bundle``: a bundle opened for serving, checked the way the Rust and Go runtimes check it.

``Bundle.open`` validates the manifest against its schema, checks every listed
file's size and sha256, builds each model's onnxruntime session from the very
bytes it hashed (``InferenceSession(bytes)``: no re-open by path, so nothing can
swap a file between the check and the load), and compares each session's I/O
with the manifest's contract.  Sessions are safe to call from several threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, IntegrityError, ProviderError
from ..runtime.sessions import Runner, contract_diff, contract_of, make_runner
from .reader import open_bundle

PROJECTED = "projected_embedding"
MODELS = ("auto", "teacher", "student", "routed")


class Bundle:
    """An opened, verified bundle: ``dim``, ``models``, ``project(q, model=...)``.  Build it with :meth:`open`."""

    def __init__(self, root: Path, manifest: dict, runners: dict[str, Runner]) -> None:
        self.root = root
        self.manifest = manifest
        self._runners = runners

    @classmethod
    def open(cls, path: str | Path, *, provider: str = "cpu", threads: int | None = None,
             public_key=None) -> "Bundle":
        """Open and verify ``path`` (schema, sha256 of every file, I/O contract); raises an h2l error otherwise.

        ``public_key`` (KEY.pub path or its bytes) pins the publisher: an unsigned bundle, one signed by
        another key, or a manifest changed after signing is refused (IntegrityError, exit 5)."""
        opened = open_bundle(path, defer_models=True, public_key=public_key)
        runners: dict[str, Runner] = {}
        for name, meta in opened.models.items():
            data = opened.read_verified(meta["file"])
            try:
                runners[name] = make_runner(data, provider, threads=threads)
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
        return cls(opened.root, opened.manifest, runners)

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

    def project(self, q: np.ndarray, model: str = "auto") -> np.ndarray:
        """Projected embeddings, float32 [batch, d], for queries q of shape (d,) or (batch, d).

        ``model``: "auto" (the student when the bundle has one, else the teacher), "teacher", "student" or "routed".
        """
        if model not in MODELS:
            raise InputError(f"model {model!r} is not one of {', '.join(MODELS)}", "pass model='auto'")
        name = ("student" if "student" in self._runners else "teacher") if model == "auto" else model
        if name not in self._runners:
            raise InputError(f"this bundle has no {name} model (it has {', '.join(self._runners)})",
                             "pass model='auto' or one of the bundle's models")
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
        out = self._runners[name].run(q)[PROJECTED]
        return np.ascontiguousarray(out, np.float32)

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, dim={self.dim}, models={list(self._runners)})"
