"""Seeded query samplers shared by verify, export and bench (numpy only)."""

from __future__ import annotations

import numpy as np


def sampled_queries(keys: np.ndarray, temperature: float, n: int, seed: int) -> np.ndarray:
    """Seeded queries around and between centroids (1–3 centroid mixes plus noise of norm 0.2–1.0)."""
    rng = np.random.default_rng(seed)
    c = (keys * temperature).T.astype(np.float64)
    n_heads, d = c.shape
    out = np.empty((n, d))
    for i in range(n):
        k = rng.integers(1, min(3, n_heads) + 1)
        idx = rng.choice(n_heads, size=k, replace=False)
        mix = rng.dirichlet(np.ones(k)) @ c[idx]
        noise = rng.standard_normal(d)
        out[i] = mix / np.linalg.norm(mix) + noise / np.linalg.norm(noise) * rng.uniform(0.2, 1.0)
    return out.astype(np.float32)
