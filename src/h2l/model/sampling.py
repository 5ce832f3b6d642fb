"""Seeded query samplers shared by verify, export and bench (numpy only)."""

from __future__ import annotations

import numpy as np


def _centroids(keys: np.ndarray, temperature: float, idx, unit: bool = False) -> np.ndarray:
    """Rows ``idx`` of the centroids ĉ = (keys·τ)ᵀ in float64, computed for those rows only.

    The same elementwise steps as on the full matrix (float32 multiply, then float64), so the queries are
    the same as before; at N = 100k the full float64 copy was 300 MB, twice, per call."""
    c = (keys[:, np.asarray(idx)] * temperature).T.astype(np.float64)
    return c / np.linalg.norm(c, axis=-1, keepdims=True) if unit else c


def sampled_queries(keys: np.ndarray, temperature: float, n: int, seed: int) -> np.ndarray:
    """Seeded queries around and between centroids (1–3 centroid mixes plus noise of norm 0.2–1.0)."""
    rng = np.random.default_rng(seed)
    d, n_heads = keys.shape
    out = np.empty((n, d))
    for i in range(n):
        k = rng.integers(1, min(3, n_heads) + 1)
        idx = rng.choice(n_heads, size=k, replace=False)
        mix = rng.dirichlet(np.ones(k)) @ _centroids(keys, temperature, idx)
        noise = rng.standard_normal(d)
        out[i] = mix / np.linalg.norm(mix) + noise / np.linalg.norm(noise) * rng.uniform(0.2, 1.0)
    return out.astype(np.float32)


def near_centroid_queries(keys: np.ndarray, temperature: float, n: int, seed: int) -> np.ndarray:
    """Seeded queries near one centroid each: unit centroid plus isotropic noise of norm 0.2–0.6."""
    rng = np.random.default_rng(seed)
    d, n_heads = keys.shape
    idx = rng.integers(0, n_heads, n)
    noise = rng.standard_normal((n, d))
    noise *= rng.uniform(0.2, 0.6, (n, 1)) / np.linalg.norm(noise, axis=1, keepdims=True)
    return (_centroids(keys, temperature, idx, unit=True) + noise).astype(np.float32)


def far_off_queries(keys: np.ndarray, temperature: float, n: int, seed: int) -> np.ndarray:
    """Seeded queries far from every centroid: equal mixes of 8 random centroids plus noise of norm 1–2."""
    rng = np.random.default_rng(seed)
    d, n_heads = keys.shape
    out = np.empty((n, d))
    for i in range(n):
        mix = _centroids(keys, temperature, rng.choice(n_heads, size=min(8, n_heads), replace=False),
                         unit=True).mean(axis=0)
        noise = rng.standard_normal(d)
        out[i] = mix / max(np.linalg.norm(mix), 1e-12) + noise / np.linalg.norm(noise) * rng.uniform(1.0, 2.0)
    return out.astype(np.float32)
