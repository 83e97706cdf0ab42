"""Sliced Wasserstein distance between two point clouds (Marion & Wu 2026: in Inception
feature space, 2,000 samples).

SW₂(P, Q) = ( E_θ W₂²(θᵀP, θᵀQ) )^½ over directions θ uniform on the sphere, estimated with a
fixed, seeded set of projections (so values are comparable across evaluations and trials). In
one dimension W₂ matches sorted values; clouds of different sizes are compared through their
quantile functions on a common grid.
"""

from __future__ import annotations

import numpy as np


def projections(dim: int, count: int, seed: int = 0) -> np.ndarray:
    """count unit directions in R^dim, [dim, count], the same for the same (dim, count, seed)."""
    theta = np.random.default_rng(seed).standard_normal((dim, count))
    return theta / np.linalg.norm(theta, axis=0, keepdims=True)


def _quantiles(sorted_proj: np.ndarray, k: int) -> np.ndarray:
    """Quantile function of each column at k mid-point levels. sorted_proj: [n, P] → [k, P]."""
    n = sorted_proj.shape[0]
    if n == k:
        return sorted_proj
    pos = (np.arange(k) + 0.5) / k * n - 0.5  # fractional index of each level
    lo = np.clip(np.floor(pos).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    w = np.clip(pos - lo, 0.0, 1.0)[:, None]
    return (1.0 - w) * sorted_proj[lo] + w * sorted_proj[hi]


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_projections: int = 1000, seed: int = 0) -> float:
    """SW₂ between the rows of a [n, D] and b [m, D]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two [n, D] arrays of the same D (got {a.shape} and {b.shape})")
    theta = projections(a.shape[1], num_projections, seed)
    pa, pb = np.sort(a @ theta, axis=0), np.sort(b @ theta, axis=0)  # [n, P], [m, P]
    k = max(len(pa), len(pb))
    return float(np.sqrt(np.mean((_quantiles(pa, k) - _quantiles(pb, k)) ** 2)))
