"""Seeded synthetic teachers shaped like real embedding spaces (for tests, sweeps and fidelity runs).

Centroids are drawn around a few dozen topic directions so that neighbouring
heads have cosine roughly 0.2–0.7, as real sentence embeddings do; answers
sit near their centroid.  Held-out queries are noisy copies of centroids.
"""

from __future__ import annotations

import numpy as np

from .teacher import QuerySet, Teacher, make_teacher


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_teacher(n: int, dim: int = 384, *, temperature: float = 0.1, topics: int | None = None,
                      spread: float = 0.9, queries_per_head: int = 0, heldout_per_head: int = 0,
                      seed: int = 0, name: str | None = None) -> Teacher:
    """A teacher with ``n`` heads; optionally with stored train/held-out queries per head."""
    rng = np.random.default_rng(seed)
    topics = topics or max(2, min(48, int(round(np.sqrt(n) * 2))))
    topic_dirs = _unit(rng.standard_normal((topics, dim)))
    assign = rng.integers(0, topics, n)
    cents = _unit(topic_dirs[assign] + spread * _unit(rng.standard_normal((n, dim))))
    answers = _unit(cents + 0.6 * _unit(rng.standard_normal((n, dim))))
    queries = None
    if queries_per_head or heldout_per_head:
        def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
            labels = np.repeat(np.arange(n), k)
            q = _unit(cents[labels] + 0.55 * _unit(rng.standard_normal((len(labels), dim))))
            return q.astype(np.float32), labels.astype(np.int64)
        queries = QuerySet(*draw(queries_per_head), *draw(heldout_per_head))
    return make_teacher(cents.astype(np.float32), answers.astype(np.float32), temperature,
                        [f"c{i}" for i in range(n)], name=name or f"synthetic_n{n}_d{dim}", queries=queries)

