"""Query files for ``verify --queries`` and ``distill --queries``: .npy (n×d), Q-A JSON or JSONL.

Q-A files are embedded with the model the caller names (for verify: the
bundle's manifest, see :mod:`h2l.verify.queries`); their cluster ids become
labels, so verify can report Recall@1 of both models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .npz import load_npy


def load_npy_queries(path: Path) -> np.ndarray:
    return load_npy(path, "query file")


def load_query_file(path: Path, *, embedding_model: str | None = None,
                    cluster_ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(queries, labels or None).  Q-A text is embedded with ``embedding_model``; ids become labels.

    For a bundle's model and ids see :func:`h2l.verify.queries.load_bundle_queries` (a bundle is a higher layer).
    """
    path = Path(path)
    if path.suffix == ".npy":
        return load_npy_queries(path), None
    if path.suffix not in (".json", ".jsonl"):
        raise InputError(f"query file {path} is not .npy, .json or .jsonl", "pass embeddings (.npy) or Q-A text")
    if not embedding_model:
        raise InputError("the teacher records no embedding model, so Q-A text cannot be embedded for it",
                         "pass --queries as a .npy of embeddings")
    from .embed import embed
    from .qa import parse_qa_files

    clusters = parse_qa_files([path], model=embedding_model)
    index = {cid: i for i, cid in enumerate(cluster_ids or [])}
    texts, labels = [], []
    for c in clusters:
        if c.id not in index:
            raise InputError(f"{path}: cluster {c.id!r} is not one of the teacher's clusters",
                             "use queries for the teacher's clusters only")
        texts += [t for _, t in c.queries]
        labels += [index[c.id]] * len(c.queries)
    return embed(texts, embedding_model), np.array(labels, np.int64)
