"""Power-law fits of τ_mem in log space, with bootstrap intervals.

    log τ = c + α·log N + β·log B + γ·log η + δ·log P  (+ ε,  ε ~ Normal(0, σ²))

over the axes the sweep actually varied (an axis with one value carries no information and is
left out). Two estimators:

    ols    least squares over the trials with an onset (censored trials left out, and named)
    tobit  maximum likelihood with right-censoring: a trial without an onset contributes
           P(log τ > log steps_done) = 1 − Φ((log steps_done − μ)/σ) instead of a density

Dropping censored trials selects on the outcome (the slowest trials go missing), which biases
the exponents towards zero; tobit keeps them as the lower bounds they are. Intervals are
percentile bootstraps that resample grid points: replicate seeds of one point move together
(resampling them one by one treats correlated draws as independent, and the intervals come out
too narrow). A resample that loses an axis's spread, or whose censored likelihood has no
maximum, is skipped; the usable fraction is always reported, and below MIN_USABLE there is no
interval (NaN): the few resamples that could be fitted are the lucky ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

AXES = {"n_train": "alpha", "batch_size": "beta", "lr": "gamma", "params": "delta"}
SYMBOLS = {"n_train": "N", "batch_size": "B", "lr": "η", "params": "P"}
GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "c": "c"}
TIME_AXES = tuple(a for a in AXES if a != "params")  # N, B, η: a trial's own settings, what normalized time divides out
METHODS = ("ols", "tobit")
LOG_SIGMA_MIN = float(np.log(1e-4))  # a residual spread below 0.01 % in τ is no fit but a degenerate likelihood
MAX_EXPONENT = 20.0  # |exponent| beyond this is a likelihood running off to infinity, not a scaling law
MIN_USABLE = 0.8  # below this fraction of usable resamples the bootstrap gives no interval


@dataclass(frozen=True)
class Coefficient:
    axis: str  # const | n_train | batch_size | lr | params
    name: str  # c | alpha | beta | gamma | delta
    value: float
    lo: float
    hi: float

    @property
    def symbol(self) -> str:
        return GREEK.get(self.name, self.name)


@dataclass(frozen=True)
class PowerLawFit:
    target: str  # what τ means (the onset definition)
    method: str  # ols | tobit
    axes: list[str]
    intercept: Coefficient
    coefficients: list[Coefficient]
    r2: float  # over the trials with an onset (for tobit: of the latent mean on those trials)
    sigma: float  # residual standard deviation in log space
    n_trials: int  # trials in the fit
    n_censored: int  # of which censored (tobit only; ols fits none)
    n_boot: int  # bootstrap resamples that were usable
    level: float
    n_boot_requested: int = 0
    n_points: int = 0  # grid points resampled (replicates of a point resampled together)
    trials: list[str] = field(default_factory=list)  # the trials fitted
    excluded: list[str] = field(default_factory=list)  # censored trials left out (ols), named
    boot: np.ndarray = field(default=None, repr=False, compare=False)  # [n_boot, 1 + axes]: (c, α, …) draws

    def coef(self, axis: str) -> Coefficient:
        return next(c for c in self.coefficients if c.axis == axis)

    @property
    def usable(self) -> float:
        """The fraction of the requested bootstrap resamples that could be fitted."""
        return self.n_boot / self.n_boot_requested if self.n_boot_requested else float("nan")

    @property
    def boot_unreliable(self) -> bool:
        """Too few resamples could be fitted (degenerate: an axis lost, σ → 0): no interval is
        given, since one resting on the lucky few would be too narrow."""
        return self.n_boot_requested > 0 and self.n_boot < MIN_USABLE * self.n_boot_requested

    def coefs_text(self) -> str:
        """One line: each exponent with its interval (or why none), R², the trial count, the
        usable fraction of resamples."""
        def ci(c: Coefficient) -> str:
            return "[no interval]" if not np.isfinite(c.lo) else f"[{c.lo:+.3f}, {c.hi:+.3f}]"

        cs = ", ".join(f"{c.symbol} = {c.value:+.3f} {ci(c)}" for c in self.coefficients)
        cens = f", {self.n_censored} censored" if self.n_censored else ""
        pts = f" at {self.n_points} points" if self.n_points and self.n_points != self.n_trials else ""
        use = f", {self.usable:.0%} of resamples usable" if self.n_boot_requested else ""
        return f"{cs}  ({self.method}, R² = {self.r2:.3f}, {self.n_trials} trials{pts}{cens}{use})"

    def log_predict(self, values: dict[str, np.ndarray], draws: bool = False) -> np.ndarray:
        """log τ at the given axis values; with draws=True, one row per bootstrap resample."""
        cols = [np.log(np.asarray(values[a], dtype=float)) for a in self.axes]
        X = np.column_stack([np.ones_like(cols[0] if cols else np.ones(1))] + cols)  # [m, 1 + axes]
        if draws:
            return self.boot @ X.T  # [n_boot, m]
        beta = np.array([self.intercept.value] + [c.value for c in self.coefficients])
        return X @ beta

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "boot"}
        d["usable"] = self.usable
        d["intercept"] = dict(vars(self.intercept))
        d["coefficients"] = [dict(vars(c)) for c in self.coefficients]
        return d


def _design(x: dict[str, np.ndarray], n: int) -> np.ndarray:
    return np.column_stack([np.ones(n)] + [np.log(np.asarray(x[a], dtype=float)) for a in x])  # [n, 1 + axes]


def _ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, y, rcond=None)[0]


def _tobit_terms(theta: np.ndarray, Xo: np.ndarray, yo: np.ndarray, Xc: np.ndarray, yc: np.ndarray):
    """Log-likelihood, gradient and Hessian in θ = (b, log σ) of y = Xb + σε, observed rows
    (Xo, yo) and right-censored rows (Xc, yc: the true y lies above).

    Observed rows add log φ(z) − log σ, censored rows log(1 − Φ(z)), with z = (y − Xb)/σ.
    With λ = φ(z)/(1 − Φ(z)) (the hazard; dλ/dz = λ(λ − z)) the derivatives are closed-form.
    """
    b, ls = theta[:-1], theta[-1]
    s = np.exp(ls)
    zo, zc = (yo - Xo @ b) / s, (yc - Xc @ b) / s
    logsf = special.log_ndtr(-zc)
    lam = np.exp(-0.5 * zc**2 - 0.5 * np.log(2 * np.pi) - logsf)
    q = 1.0 + zc * (lam - zc)
    ll = -0.5 * float(zo @ zo) - len(zo) * ls + float(logsf.sum())
    grad = np.append(Xo.T @ zo / s + Xc.T @ lam / s, float(zo @ zo) - len(zo) + float(lam @ zc))
    k = Xo.shape[1]
    H = np.empty((k + 1, k + 1))
    H[:k, :k] = -(Xo.T @ Xo) / s**2 - (Xc.T * (lam * (lam - zc))) @ Xc / s**2
    H[:k, k] = H[k, :k] = -2.0 * (Xo.T @ zo) / s - (Xc.T @ (lam * q)) / s
    H[k, k] = -2.0 * float(zo @ zo) - float((lam * zc) @ q)
    return ll, grad, H


def _identified(X: np.ndarray, y: np.ndarray, cens: np.ndarray) -> bool:
    """Whether the onsets alone pin down every coefficient and leave a residual. Otherwise a plane
    passes through every onset (or some direction is constrained only by lower bounds) and the
    censored likelihood grows without bound (σ → 0 or an exponent → ∞): no maximum to find."""
    Xo, yo = X[~cens], y[~cens]
    if len(yo) <= X.shape[1] or np.linalg.matrix_rank(Xo) < X.shape[1]:
        return False
    r = yo - Xo @ _ols(Xo, yo)
    return float(r @ r) > 1e-12 * len(yo)


def _tobit(X: np.ndarray, y: np.ndarray, cens: np.ndarray, start: np.ndarray | None = None) -> np.ndarray | None:
    """MLE of θ = (b, log σ) by Newton's method with a backtracking line search (about a
    millisecond, so thousands of bootstrap refits stay cheap). None when there is no maximum:
    σ collapsing or a coefficient running away (censoring can leave the likelihood unbounded)."""
    obs = ~cens
    if start is None:
        b0 = _ols(X[obs], y[obs]) if obs.sum() >= X.shape[1] else _ols(X, y)
        start = np.append(b0, np.log(max(float(np.std(y[obs] - X[obs] @ b0)), 0.05)))
    data = (X[obs], y[obs], X[cens], y[cens])
    with np.errstate(all="ignore"):  # trial steps may overflow; they are rejected by the line search
        return _newton(np.array(start, dtype=float), data)


def _newton(theta: np.ndarray, data: tuple) -> np.ndarray | None:
    ll, g, H = _tobit_terms(theta, *data)
    for _ in range(40):  # Newton converges in under 10 steps when a maximum exists
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            return None
        if not g @ step > 0:  # not an ascent direction (Hessian not negative definite here): go uphill
            step = g / max(1.0, float(np.abs(g).max()))
        step *= min(1.0, 5.0 / max(float(np.abs(step).max()), 1e-300))  # never jump more than e⁵ at once
        for t in 0.5 ** np.arange(12):
            new = theta + t * step
            ll_new, g_new, H_new = _tobit_terms(new, *data)
            if np.isfinite(ll_new) and ll_new >= ll - 1e-12:
                break
        else:
            return None
        converged = abs(ll_new - ll) < 1e-10 and np.abs(new - theta).max() < 1e-7
        theta, ll, g, H = new, ll_new, g_new, H_new
        if theta[-1] < LOG_SIGMA_MIN or np.abs(theta[1:-1]).max(initial=0) > MAX_EXPONENT:
            return None  # σ → 0 or an exponent → ∞: the likelihood has no maximum
        if converged or np.abs(g).max() < 1e-8:
            return theta if np.all(np.isfinite(theta)) else None
    return None


def fit_power_law(
    x: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    censored: np.ndarray | None = None,
    method: str = "ols",
    target: str = "tau_mem_step",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    trials: list[str] | None = None,
    excluded: list[str] | None = None,
    groups: list | None = None,
) -> PowerLawFit:
    """Fit log y on log x[axis] for every axis given.

    `censored` marks rows whose y is a lower bound (the last step trained); only tobit may use
    them. `groups` names each row's grid point (replicate seeds share one): the bootstrap draws
    points with replacement and takes all of a drawn point's rows (None: every row its own
    point). Needs at least one residual degree of freedom: more trials than coefficients (tobit
    also estimates σ) and, for tobit, at least two onsets.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    axes = list(x)
    y = np.asarray(y, dtype=float)
    n = len(y)
    cens = np.zeros(n, bool) if censored is None else np.asarray(censored, bool)
    if method == "ols" and cens.any():
        raise ValueError("ols cannot fit censored trials: leave them out or use tobit")
    X = _design(x, n)
    ly = np.log(y)
    k = X.shape[1] + (method == "tobit")  # parameters estimated
    what = f"{', '.join(SYMBOLS.get(a, a) for a in axes) or 'a constant'}"
    if n <= k:
        raise ValueError(f"need more than {k} trials to fit {what} with {method} (have {n})")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError(f"the trials do not separate the axes {what} (collinear design)")
    n_obs = int((~cens).sum())
    if method == "tobit" and not _identified(X, ly, cens):
        raise ValueError(
            f"tobit needs the trials with an onset ({n_obs}) to determine all {X.shape[1]} coefficients with a residual left"
        )

    if method == "ols":
        coef = _ols(X, ly)
        sigma = float(np.sqrt(np.sum((ly - X @ coef) ** 2) / (n - X.shape[1])))
    else:
        theta = _tobit(X, ly, cens)
        if theta is None:
            raise ValueError("the censored likelihood has no maximum (σ → 0): too few onsets")
        coef, sigma = theta[:-1], float(np.exp(theta[-1]))
    obs = ~cens
    resid = ly[obs] - X[obs] @ coef
    ss_tot = float(((ly[obs] - ly[obs].mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")

    rng = np.random.default_rng(seed)
    boots = []
    start = None if method == "ols" else np.append(coef, np.log(sigma))
    members = point_rows(groups, n)  # [points]: the row indices of each grid point
    for _ in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
        Xb, yb, cb = X[idx], ly[idx], cens[idx]
        if np.linalg.matrix_rank(Xb) < X.shape[1]:  # a resample that lost an axis's spread says nothing
            continue
        if method == "ols":
            boots.append(_ols(Xb, yb))
        elif _identified(Xb, yb, cb) and (th := _tobit(Xb, yb, cb, start)) is not None:
            boots.append(th[:-1])
    boot = np.array(boots) if boots else np.full((1, X.shape[1]), np.nan)
    a = (1.0 - level) / 2.0
    if n_boot and len(boots) >= MIN_USABLE * n_boot:
        lo, hi = np.nanquantile(boot, [a, 1.0 - a], axis=0)
    else:  # no interval rather than one from the lucky few
        lo = hi = np.full(X.shape[1], np.nan)
    names = ["c"] + [AXES.get(ax, ax) for ax in axes]
    cs = [Coefficient(ax, nm, float(coef[i]), float(lo[i]), float(hi[i])) for i, (ax, nm) in enumerate(zip(["const"] + axes, names))]
    return PowerLawFit(
        target, method, axes, cs[0], cs[1:], r2, sigma, n, int(cens.sum()), len(boots), level, n_boot, len(members),
        list(trials or []), list(excluded or []), boot,
    )  # fmt: skip


def point_rows(groups: list | None, n: int) -> list[np.ndarray]:
    """The row indices of each grid point, in order of first appearance (None: one row each)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    if len(groups) != n:
        raise ValueError(f"groups names {len(groups)} rows, the fit has {n}")
    out: dict = {}
    for i, g in enumerate(groups):
        out.setdefault(g, []).append(i)
    return [np.array(v) for v in out.values()]


def varied_axes(rows: list, candidates=tuple(AXES)) -> list[str]:
    """The axes on which the given trials (dicts or objects with those attributes) take more than one value."""
    def get(r, a):
        return r.get(a) if isinstance(r, dict) else getattr(r, a, None)

    return [a for a in candidates if len({get(r, a) for r in rows if get(r, a) is not None}) > 1]
