"""Sliced Wasserstein distance: closed forms on shifted clouds, symmetry, seeding, sizes."""

from __future__ import annotations

import numpy as np
import pytest

from raydiff.metrics.swd import projections, sliced_wasserstein


def cloud(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def test_identical_clouds_are_at_distance_zero():
    a = cloud(200, 16, 0)
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, a[::-1]) == 0.0  # order does not matter


def test_a_shift_gives_its_projected_length():
    # b = a + μ: every projection is shifted by θ·μ, so W₂² = (θ·μ)² exactly, and
    # E_θ (θ·μ)² = |μ|²/D for θ uniform on the sphere
    a, mu = cloud(300, 32, 1), np.full(32, 0.5)
    sw = sliced_wasserstein(a, a + mu, num_projections=2000, seed=3)
    assert sw == pytest.approx(np.sqrt(np.mean((mu @ projections(32, 2000, seed=3)) ** 2)), rel=1e-9)
    assert sw == pytest.approx(np.linalg.norm(mu) / np.sqrt(32), rel=0.05)


def test_symmetric_and_seeded():
    a, b = cloud(100, 8, 2), cloud(100, 8, 3) * 2.0
    assert sliced_wasserstein(a, b, seed=7) == sliced_wasserstein(b, a, seed=7)
    assert sliced_wasserstein(a, b, seed=7) == sliced_wasserstein(a.copy(), b.copy(), seed=7)
    assert sliced_wasserstein(a, b, seed=7) != sliced_wasserstein(a, b, seed=8)


def test_different_sizes_compare_quantile_functions():
    a = cloud(400, 8, 4)
    same_law = cloud(1000, 8, 5)
    other_law = cloud(1000, 8, 6) + 3.0
    near, far = sliced_wasserstein(a, same_law), sliced_wasserstein(a, other_law)
    assert near < 0.2 < 2.0 < far
    assert sliced_wasserstein(a, np.repeat(a, 2, axis=0)) < 0.05  # the same points, each twice


def test_projections_are_unit_vectors():
    theta = projections(5, 50, seed=0)
    assert theta.shape == (5, 50)
    assert np.allclose(np.linalg.norm(theta, axis=0), 1.0)


def test_mismatched_dimensions_raise():
    with pytest.raises(ValueError, match="same D"):
        sliced_wasserstein(cloud(4, 3, 0), cloud(4, 2, 0))
