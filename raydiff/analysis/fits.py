"""Power-law fits of τ_mem, in log space, with bootstrap intervals.

    log τ = c + α·log N + β·log B + γ·log η + δ·log P

by least squares over the axes the sweep actually varied (an axis with one value carries no
information and is left out). Intervals are percentile bootstraps that resample trials.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

AXES = {"n_train": "alpha", "batch_size": "beta", "lr": "gamma", "params": "delta"}
SYMBOLS = {"n_train": "N", "batch_size": "B", "lr": "η", "params": "P"}


@dataclass(frozen=True)
class Coefficient:
    axis: str  # n_train | batch_size | lr | params
    name: str  # alpha | beta | gamma | delta
    value: float
    lo: float
    hi: float


@dataclass(frozen=True)
class PowerLawFit:
    target: str
    axes: list[str]
    intercept: float
    coefficients: list[Coefficient]
    r2: float
    n_trials: int
    n_boot: int
    level: float
    excluded: list[str] = field(default_factory=list)  # trial ids left out (censored), named

    def coef(self, axis: str) -> Coefficient:
        return next(c for c in self.coefficients if c.axis == axis)

    def predict(self, values: dict[str, np.ndarray]) -> np.ndarray:
        out = np.full(np.shape(values[self.axes[0]]) if self.axes else (), self.intercept, dtype=float)
        for c in self.coefficients:
            out = out + c.value * np.log(values[c.axis])
        return np.exp(out)

    def to_dict(self) -> dict:
        return asdict(self)


def _lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, y, rcond=None)[0]


def fit_power_law(
    x: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    target: str = "tau_mem_step",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    excluded: list[str] | None = None,
) -> PowerLawFit:
    """Fit log y on log x[axis] for every axis given. Needs more trials than coefficients."""
    axes = list(x)
    y = np.asarray(y, dtype=float)
    cols = [np.log(np.asarray(x[a], dtype=float)) for a in axes]
    X = np.column_stack([np.ones_like(y)] + cols)
    ly = np.log(y)
    n, k = X.shape
    if n <= k - 1 or n < 2:
        raise ValueError(f"need more than {k - 1} trials with an onset to fit {', '.join(axes)} (have {n})")
    coef = _lstsq(X, ly)
    resid = ly - X @ coef
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")

    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        Xb = X[idx]
        if np.linalg.matrix_rank(Xb) < k:  # a resample that lost an axis's spread says nothing
            continue
        boots.append(_lstsq(Xb, ly[idx]))
    boots = np.array(boots) if boots else np.full((1, k), np.nan)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(boots, [a, 1.0 - a], axis=0)
    coefs = [Coefficient(ax, AXES.get(ax, ax), float(coef[i + 1]), float(lo[i + 1]), float(hi[i + 1])) for i, ax in enumerate(axes)]
    return PowerLawFit(target, axes, float(coef[0]), coefs, r2, n, len(boots), level, list(excluded or []))


def varied_axes(rows: list[dict], candidates=tuple(AXES)) -> list[str]:
    """The axes on which the given trials take more than one value."""
    return [a for a in candidates if len({r.get(a) for r in rows if r.get(a) is not None}) > 1]
