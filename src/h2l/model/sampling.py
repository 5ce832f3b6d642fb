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


def near_centroid_queries(keys: np.ndarray, temperature: float, n: int, seed: int) -> np.ndarray:
    """Seeded queries near one centroid each: unit centroid plus isotropic noise of norm 0.2–0.6."""
    rng = np.random.default_rng(seed)
    c = (keys * temperature).T.astype(np.float64)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    idx = rng.integers(0, len(c), n)
    noise = rng.standard_normal((n, c.shape[1]))
    noise *= rng.uniform(0.2, 0.6, (n, 1)) / np.linalg.norm(noise, axis=1, keepdims=True)
    return (c[idx] + noise).astype(np.float32)


def far_off_queries(keys: np.ndarray, temperature: float, n: int, seed: int) -> np.ndarray:
    """Seeded queries far from every centroid: equal mixes of 8 random centroids plus noise of norm 1–2."""
    rng = np.random.default_rng(seed)
    c = (keys * temperature).T.astype(np.float64)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    out = np.empty((n, c.shape[1]))
    for i in range(n):
        mix = c[rng.choice(len(c), size=min(8, len(c)), replace=False)].mean(axis=0)
        noise = rng.standard_normal(c.shape[1])
        out[i] = mix / max(np.linalg.norm(mix), 1e-12) + noise / np.linalg.norm(noise) * rng.uniform(1.0, 2.0)
    return out.astype(np.float32)
