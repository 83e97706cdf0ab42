"""The scaling-law analysis of a sweep: per-trial τ_mem, the joint fit, per-axis marginal fits and
the sensitivity of the exponents to the onset definition. Pure computation; text.py formats
it, report.py writes it, figures.py draws it.

Censored trials (finished without an onset) are never silently dropped nor treated as onsets:
`censored="exclude"` fits the onsets by least squares and names the censored trials in a warning;
`censored="tobit"` fits everything by maximum likelihood with right-censoring at log(steps_done).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raydiff.analysis.fits import AXES, SYMBOLS, TIME_AXES, PowerLawFit, fit_power_law, varied_axes
from raydiff.analysis.trials import Definition, TrialStats, fmt_value, stop_rule, trial_stats
from raydiff.errors import UserError
from raydiff.results_folder import Sweep

CENSORED_MODES = ("exclude", "tobit")
SENSITIVITY_THRESHOLDS = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Sensitivity:
    definition: str
    n_onset: int
    n_censored: int
    fit: PowerLawFit | None
    note: str  # why there is no fit


@dataclass(frozen=True)
class Analysis:
    sweep: Sweep
    definition: Definition
    definition_label: str
    censored_mode: str  # exclude | tobit
    stats: list[TrialStats]
    axes: list[str]  # the axes the finished trials vary
    joint: PowerLawFit | None
    joint_note: str  # why there is no joint fit ("" when there is one)
    marginal: dict[str, PowerLawFit | str]  # axis → fit, or why not
    marginal_where: dict[str, str]  # axis → which trials its marginal fit uses
    reference: dict[str, float]  # the sweep's default point (first grid values): figure lines, slices
    sensitivity: list[Sensitivity]
    warnings: list[str] = field(default_factory=list)

    def by_state(self, state: str) -> list[TrialStats]:
        return [s for s in self.stats if s.state == state]


def fit_trials(
    stats: list[TrialStats], axes: list[str], mode: str, *, target: str, n_boot: int, seed: int = 0
) -> PowerLawFit:
    """The power law over `axes` on the given trials, censored ones handled per `mode`.
    Raises ValueError (with a reason) when the trials cannot support the fit."""
    onset = [s for s in stats if s.state == "onset"]
    cens = [s for s in stats if s.state == "censored"]
    rows = onset + cens if mode == "tobit" else onset
    if not axes:
        raise ValueError("the trials vary no axis (N, B, η, P)")
    x = {a: np.array([s.value(a) for s in rows], dtype=float) for a in axes}
    y = np.array([s.tau if s.state == "onset" else s.censor_step for s in rows], dtype=float)
    return fit_power_law(
        x, y, censored=np.array([s.state == "censored" for s in rows]), method="tobit" if mode == "tobit" else "ols",
        target=target, n_boot=n_boot, seed=seed, trials=[s.trial_id for s in rows],
        excluded=[s.trial_id for s in cens] if mode != "tobit" else [],
    )  # fmt: skip


GRID_KEYS = {"n_train": "data.n_train", "batch_size": "train.batch_size", "lr": "train.lr"}


def reference_point(sweep: Sweep, stats: list[TrialStats], axes: list[str]) -> dict[str, float]:
    """The sweep's default point: each axis's first grid value (the centre of a one-factor sweep;
    docs/architecture.md: the first value is the default), else its most common value (ties: the smallest)."""
    grid = (sweep.search_space or {}).get("grid") or {}
    ref = {}
    for a in axes:
        vals = [s.value(a) for s in stats if s.value(a) is not None]
        first = (grid.get(GRID_KEYS.get(a, "")) or [None])[0]
        try:
            first = float(first) if first is not None else None
        except (TypeError, ValueError):
            first = None
        if first is not None and any(np.isclose(first, v) for v in vals):
            ref[a] = first
        elif vals:
            uniq, counts = np.unique(vals, return_counts=True)
            ref[a] = float(uniq[np.argmax(counts)])  # argmax takes the first (smallest) of a tie
    return ref


def is_one_factor(sweep: Sweep) -> bool:
    sw = (sweep.search_space or {}).get("sweep") or {}
    return sw.get("mode") == "one_factor"


def marginal_fits(
    stats: list[TrialStats], axes: list[str], ref: dict[str, float], mode: str, *, one_factor: bool, target: str,
    n_boot: int,
) -> tuple[dict[str, PowerLawFit | str], dict[str, str]]:
    """log τ on one axis alone. A one-factor sweep varies one axis at a time around its default
    point, so the fit uses the trials on that axis's line through the point (Marion & Wu's τ_mem
    against each axis); a full grid is balanced, so every trial counts (marginalizing the others)."""
    out: dict[str, PowerLawFit | str] = {}
    where: dict[str, str] = {}
    for a in axes:
        others = [o for o in axes if o != a]
        if one_factor:
            sl = [s for s in stats if all(s.value(o) is not None and np.isclose(s.value(o), ref[o]) for o in others)]
            where[a] = ", ".join(f"{SYMBOLS[o]}={fmt_value(o, ref[o])}" for o in others)
        else:
            sl, where[a] = stats, "all trials, the other axes marginalized"
        try:
            out[a] = fit_trials(sl, [a], mode, target=target, n_boot=n_boot)
        except ValueError as e:
            out[a] = f"no fit: {e}"
    return out, where


def analyze_sweep(
    sweep: Sweep, *, censored: str = "exclude", interpolate: bool = False, n_boot: int = 2000, sensitivity: bool = True
) -> Analysis:
    if censored not in CENSORED_MODES:
        raise UserError(f"--censored must be one of {', '.join(CENSORED_MODES)} (got {censored!r})")
    d = Definition(interpolate=interpolate)
    stats = trial_stats(sweep, d)
    stops = {stop_rule(t, sweep) for t in sweep.trials} or {stop_rule(None, sweep)}
    label = d.label(next(iter(stops))) if len(stops) == 1 else d.label()
    warnings = list(sweep.notes)
    if len(stops) > 1:
        warnings.append("trials differ in their stop rule: each τ_mem uses its own trial's threshold and patience")
    if not interpolate:  # the re-read onset must agree with what the sweep recorded
        for s in stats:
            if s.state in ("onset", "censored") and s.status == "memorized" and s.tau_recorded != (
                None if s.tau is None else int(s.tau)
            ):
                warnings.append(
                    f"{s.trial_id}: τ_mem re-read from metrics ({_fmt(s.tau)}) differs from trials.parquet"
                    f" ({_fmt(s.tau_recorded)}); the metrics value is used"
                )
    fitted = [s for s in stats if s.state in ("onset", "censored")]
    axes = varied_axes(fitted, AXES)
    cens = [s for s in stats if s.state == "censored"]
    if cens and censored == "exclude":
        warnings.append(
            f"{len(cens)} censored trial(s) (no onset within budget) excluded from the fits"
            f" (--censored tobit fits them): {', '.join(_censored_name(s) for s in cens)}"
        )
    for s in stats:
        if s.state == "excluded":
            warnings.append(f"{s.trial_id} excluded: {s.reason}")
    target = f"tau_mem_step [{label}]"
    try:
        joint, note = fit_trials(fitted, axes, censored, target=target, n_boot=n_boot), ""
    except ValueError as e:
        joint, note = None, f"no joint fit: {e}"
    ref = reference_point(sweep, fitted, axes)
    marg, where = {}, {}
    if len(axes) > 1:
        marg, where = marginal_fits(
            fitted, axes, ref, censored, one_factor=is_one_factor(sweep), target=target, n_boot=n_boot
        )  # fmt: skip
    # the sensitivity rows compare definitions: fewer resamples keep them cheap, the point estimates carry it
    sens = sensitivity_table(sweep, axes, censored, interpolate, max(200, n_boot // 4)) if sensitivity else []
    return Analysis(sweep, d, label, censored, stats, axes, joint, note, marg, where, ref, sens, warnings)


def sensitivity_table(sweep: Sweep, axes: list[str], mode: str, interpolate: bool, n_boot: int) -> list[Sensitivity]:
    """The joint fit again under other onset definitions: mem_frac thresholds and loss divergence."""
    defs = [Definition(threshold=t, interpolate=interpolate) for t in SENSITIVITY_THRESHOLDS] + [Definition(kind="loss")]
    stop = stop_rule(sweep.trials[0] if sweep.trials else None, sweep)
    out = []
    for d in defs:
        stats = [s for s in trial_stats(sweep, d) if s.state in ("onset", "censored")]
        n_on = sum(s.state == "onset" for s in stats)
        label = d.label(stop)
        try:
            fit, note = fit_trials(stats, axes, mode, target=f"tau_mem_step [{label}]", n_boot=n_boot), ""
        except ValueError as e:
            fit, note = None, str(e)
        out.append(Sensitivity(label, n_on, len(stats) - n_on, fit, note))
    return out


def _censored_name(s: TrialStats) -> str:
    axes = ", ".join(f"{SYMBOLS[a]}={fmt_value(a, s.value(a))}" for a in TIME_AXES if s.value(a) is not None)
    return f"{s.trial_id} ({axes}; none by step {s.censor_step})"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.3g}"
    return str(int(v)) if isinstance(v, (int, float)) else str(v)
