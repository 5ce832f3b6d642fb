"""``verify --queries``: a query file read for one bundle (Q-A text embedded with the model its manifest names).

This sits in verify, not importers, because it opens a bundle (layer 6); the
file formats themselves are read by :mod:`h2l.importers.queries`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle.reader import open_bundle
from ..importers.queries import load_query_file


def load_bundle_queries(path: str | Path, bundle: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(queries, labels or None) for ``bundle``: its embedding model and cluster ids label Q-A text."""
    if Path(path).suffix == ".npy":
        return load_query_file(Path(path))
    doc = open_bundle(bundle, check_hashes=False).manifest  # validated; verify re-checks the hashes
    return load_query_file(Path(path), embedding_model=doc["teacher"]["embedding_model"] or None,
                           cluster_ids=doc["teacher"]["cluster_ids"])
