"""The memorized fraction's interval is exact Clopper–Pearson (issue 13): Beta quantiles, not a
bootstrap, so 0/128 is [0, 0.0284], not [0, 0]. Table cases against closed forms and against
the defining property (the binomial tail at each end is exactly (1 − level)/2)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from raydiff.metrics.memorization import Fraction, clopper_pearson, fraction_with_interval

N = 128


def flags(k: int, n: int = N) -> np.ndarray:
    return np.arange(n) < k


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        # closed forms at the ends: hi(0) = 1 − (α/2)^(1/n), lo(n) = (α/2)^(1/n)
        pytest.param(0, 128, 0.0, 1 - 0.025 ** (1 / 128), id="0/128"),
        pytest.param(128, 128, 0.025 ** (1 / 128), 1.0, id="128/128"),
        pytest.param(0, 10, 0.0, 1 - 0.025 ** (1 / 10), id="0/10"),
        pytest.param(1, 1, 0.025, 1.0, id="1/1"),
        # published values (e.g. Clopper & Pearson 1934 tables; R binom.test)
        pytest.param(1, 10, 0.002529, 0.445016, id="1/10"),
        pytest.param(5, 10, 0.187086, 0.812914, id="5/10"),
    ],
)
def test_clopper_pearson_table(k, n, lo, hi):
    got = clopper_pearson(k, n)
    assert got == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))
    f = fraction_with_interval(flags(k, n))
    assert f == Fraction(k / n, got[0], got[1])


def test_the_ends_of_128_samples():
    none, every = fraction_with_interval(flags(0)), fraction_with_interval(flags(N))
    assert (none.value, none.lo) == (0.0, 0.0) and none.hi == pytest.approx(0.0284, abs=5e-5)
    assert (every.value, every.hi) == (1.0, 1.0) and every.lo == pytest.approx(0.9716, abs=5e-5)


def test_half_is_symmetric():
    f = fraction_with_interval(flags(64))
    assert f.value == 0.5 and f.lo + f.hi == pytest.approx(1.0, abs=1e-12) and 0.40 < f.lo < 0.42


def test_k_and_n_minus_k_mirror():
    for k in range(N + 1):
        lo, hi = clopper_pearson(k, N)
        lo2, hi2 = clopper_pearson(N - k, N)
        assert lo == pytest.approx(1 - hi2, abs=1e-12) and hi == pytest.approx(1 - lo2, abs=1e-12)


def test_monotone_in_k_and_brackets_the_fraction():
    ivs = [clopper_pearson(k, N) for k in range(N + 1)]
    lo, hi = np.array(ivs).T
    assert np.all(np.diff(lo) > 0) and np.all(np.diff(hi) > 0)
    p = np.arange(N + 1) / N
    assert np.all(lo <= p) and np.all(p <= hi) and lo[0] == 0.0 and hi[-1] == 1.0
    assert np.all(hi - lo > 0)


@pytest.mark.parametrize("k", [1, 3, 17, 64, 100, 127])
def test_each_end_leaves_exactly_two_and_a_half_percent(k):
    """The definition: P(X ≥ k | p = lo) = 0.025 and P(X ≤ k | p = hi) = 0.025."""
    lo, hi = clopper_pearson(k, N)
    assert binom.sf(k - 1, N, lo) == pytest.approx(0.025, rel=1e-6)
    assert binom.cdf(k, N, hi) == pytest.approx(0.025, rel=1e-6)


def test_coverage_is_at_least_the_level():
    """Exact intervals never under-cover: over p on a grid, P(lo ≤ p ≤ hi) ≥ 0.95."""
    ivs = np.array([clopper_pearson(k, N) for k in range(N + 1)])
    for p in np.linspace(0.001, 0.999, 97):
        covers = (ivs[:, 0] <= p) & (p <= ivs[:, 1])
        assert binom.pmf(np.arange(N + 1), N, p)[covers].sum() >= 0.95 - 1e-9, p


def test_wider_level_wider_interval_and_empty_and_bad_counts():
    a, b = clopper_pearson(10, N, 0.9), clopper_pearson(10, N, 0.99)
    assert b[0] < a[0] and a[1] < b[1]
    assert all(np.isnan(v) for v in clopper_pearson(0, 0))
    f = fraction_with_interval(np.array([], dtype=bool))
    assert np.isnan(f.value) and np.isnan(f.lo) and np.isnan(f.hi)
    with pytest.raises(ValueError):
        clopper_pearson(5, 4)
