"""The scaling-law analysis of a sweep: per-trial τ_mem, the joint fit, per-axis marginal fits and
the sensitivity of the exponents to the onset definition. Pure computation; text.py formats
it, report.py writes it, figures.py draws it.

Censored trials (finished without an onset) are never silently dropped nor treated as onsets.
`censored="auto"` (the default) fits by maximum likelihood with right-censoring at log(steps_done)
(tobit) whenever a trial in the fit is censored, and by least squares otherwise (the two agree
then, up to σ's degrees of freedom); `"tobit"` always uses the censored likelihood; `"ols"` (alias
`"exclude"`, the old default) drops the censored trials, names them, and warns that dropping them
biases the exponents toward 0 (the slowest trials go missing: selection on the outcome).

Beside the joint fit of τ_mem: τ_gen (trials.generalization_time) fitted over the same axes, the
ratio τ_mem/τ_gen, the spread of τ_mem over replicate seeds at each grid point, and one fit per
onset definition recorded in trials.parquet (`tau_mem_*_step`; `definition_fits`), and the peak
fidelity before onset against N (`fidelity.fidelity_vs_n`: the paper's other finding).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from raydiff.analysis import findings as findings_lib
from raydiff.analysis.fidelity import FidelityVsN, fidelity_label, fidelity_vs_n
from raydiff.analysis.fits import AXES, SYMBOLS, TIME_AXES, PowerLawFit, fit_power_law, varied_axes
from raydiff.analysis.trials import (
    TAU_GEN_WITHIN, Definition, TrialStats, fmt_value, headline_definition, memorization_test, stop_rule, trial_stats,
)  # fmt: skip
from raydiff.errors import UserError
from raydiff import measures
from raydiff.results_folder import Sweep

CENSORED_MODES = ("auto", "tobit", "ols", "exclude")  # exclude: the old name of ols
CENSORED_ALIASES = {"exclude": "ols"}
DROP_BIAS = "dropping censored trials biases the exponents toward 0"
SENSITIVITY_THRESHOLDS = (0.05, 0.1, 0.2)

def definition_columns() -> tuple[tuple[str, str], ...]:
    """The onset definitions trials.parquet records, one τ column each: (column, label), the stop
    rule's first, then every definition of raydiff/measures' registry. A null τ is "did not fire"
    when measured (censored at the trial's last step: the sweep's own stop cut it), "not measured"
    otherwise (`_measured`). Columns that no trial filled (older folders, definitions not
    measured) are skipped."""
    return (("tau_mem_step", "stop rule (tau_mem_step)"), *((d.tau_column, d.label) for d in measures.definitions()))


@dataclass(frozen=True)
class Sensitivity:
    definition: str
    n_onset: int
    n_censored: int
    fit: PowerLawFit | None
    note: str  # why there is no fit


@dataclass(frozen=True)
class DefinitionFit:
    """The joint fit with τ read from one recorded onset column of trials.parquet."""

    column: str  # tau_mem_*_step
    definition: str
    onsets: dict[str, int]  # trial → τ (steps)
    censored: dict[str, int]  # trial → its last step: measured, not fired (τ ≥ that step)
    fit: PowerLawFit | None
    note: str  # why there is no fit

    @property
    def n_onset(self) -> int:
        return len(self.onsets)

    @property
    def n_censored(self) -> int:
        return len(self.censored)

    def cell(self, trial_id: str) -> str:
        """A trial's τ by this definition: the step, `≥step` (censored: a lower bound), `-` (not measured)."""
        if trial_id in self.onsets:
            return str(self.onsets[trial_id])
        return f"≥{self.censored[trial_id]}" if trial_id in self.censored else "-"

    def to_dict(self) -> dict:
        return {"column": self.column, "definition": self.definition, "n_onset": self.n_onset,
                "n_censored": self.n_censored, "onsets": self.onsets, "censored": self.censored,
                "fit": self.fit.to_dict() if self.fit else None, "note": self.note}  # fmt: skip


@dataclass(frozen=True)
class Replicates:
    """τ_mem over the replicate seeds of one grid point (trials that differ only in train.seed)."""

    point: str  # the point's key (trials.point_key)
    label: str  # its axis values: N=64, B=16, …
    trials: list[str]
    seeds: list[int | None]
    n_onset: int
    n_censored: int
    mean: float | None  # over every replicate, censored ones at their last step: a lower bound when n_censored
    sd: float | None  # over the onsets (sample sd, n − 1); None below 2 onsets
    sd_log: float | None  # sd of log τ over the onsets: comparable to a fit's σ

    @property
    def n(self) -> int:
        return len(self.trials)

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "n": self.n,
                "mean_is_lower_bound": self.n_censored > 0}  # fmt: skip


@dataclass(frozen=True)
class GenerationFits:
    """τ_gen (first FID within 5% of its best before onset) fitted like τ_mem, and τ_mem/τ_gen."""

    definition: str
    n: int  # trials with a τ_gen
    fit: PowerLawFit | None
    note: str
    ratio_fit: PowerLawFit | None  # τ_mem/τ_gen on the trials with both (censored where τ_mem is)
    ratio_note: str
    ratio_median: float | None  # over the trials with an onset and an observed τ_gen
    ratio_range: tuple[float, float] | None

    def to_dict(self) -> dict:
        return {"definition": self.definition, "n": self.n, "fit": self.fit.to_dict() if self.fit else None,
                "note": self.note, "ratio_fit": self.ratio_fit.to_dict() if self.ratio_fit else None,
                "ratio_note": self.ratio_note, "ratio_median": self.ratio_median,
                "ratio_range": list(self.ratio_range) if self.ratio_range else None}  # fmt: skip


@dataclass(frozen=True)
class Analysis:
    sweep: Sweep
    definition: Definition
    definition_label: str
    censored_mode: str  # auto | tobit | ols (requested; each fit records the method it used)
    stats: list[TrialStats]
    axes: list[str]  # the axes the finished trials vary
    joint: PowerLawFit | None
    joint_note: str  # why there is no joint fit ("" when there is one)
    marginal: dict[str, PowerLawFit | str]  # axis → fit, or why not
    marginal_where: dict[str, str]  # axis → which trials its marginal fit uses
    reference: dict[str, float]  # the sweep's default point (first grid values): figure lines, slices
    sensitivity: list[Sensitivity]
    warnings: list[str] = field(default_factory=list)
    generation: GenerationFits | None = None
    replicates: list[Replicates] = field(default_factory=list)  # every fitted point, when any has ≥ 2 replicates
    replicate_sigma: float | None = None  # pooled within-point sd of log τ_mem (points with ≥ 2 onsets)
    definitions: list[DefinitionFit] = field(default_factory=list)
    fidelity: FidelityVsN | None = None  # peak fidelity before onset against N (fidelity.fidelity_vs_n)
    headline: str = "mem_frac"  # the space's headline definition (stop.headline), what `definition` reads
    findings: list[findings_lib.Finding] = field(default_factory=list)  # the papers' findings on this sweep

    def by_state(self, state: str) -> list[TrialStats]:
        return [s for s in self.stats if s.state == state]


def resolve_mode(mode: str) -> str:
    """auto | tobit | ols, with the alias exclude → ols; a UserError for anything else."""
    if mode not in CENSORED_MODES:
        raise UserError(f"--censored must be one of {', '.join(CENSORED_MODES)} (got {mode!r})")
    return CENSORED_ALIASES.get(mode, mode)


def fit_values(
    ids: list[str], x: dict[str, np.ndarray], y: np.ndarray, cens: np.ndarray, mode: str, *, target: str, n_boot: int,
    seed: int = 0, groups: list[str] | None = None,
) -> PowerLawFit:
    """The power law of y on x, rows flagged in `cens` being lower bounds, handled per `mode`:
    auto: tobit when any row is censored, least squares otherwise; tobit; ols: censored rows
    dropped (and named in the fit's `excluded`). `groups`: each row's grid point, resampled
    together by the bootstrap. Raises ValueError when the rows cannot support it."""
    mode = CENSORED_ALIASES.get(mode, mode)
    if not x:
        raise ValueError("the trials vary no axis (N, B, η, P)")
    cens = np.asarray(cens, bool)
    tobit = mode == "tobit" or (mode == "auto" and cens.any())
    keep = np.ones(len(y), bool) if tobit else ~cens
    try:
        return fit_power_law(
            {a: v[keep] for a, v in x.items()}, np.asarray(y, float)[keep], censored=cens[keep],
            method="tobit" if tobit else "ols", target=target, n_boot=n_boot, seed=seed,
            trials=[i for i, k in zip(ids, keep) if k], excluded=[i for i, c in zip(ids, cens) if c and not tobit],
            groups=None if groups is None else [g for g, k in zip(groups, keep) if k],
        )  # fmt: skip
    except ValueError as e:
        if tobit and mode == "auto" and int((~cens).sum()) > len(x) + 1:  # enough onsets for least squares alone
            raise ValueError(f"{e} (--censored ols would fit the onsets alone, biased toward 0)") from None
        raise


def fit_trials(
    stats: list[TrialStats], axes: list[str], mode: str, *, target: str, n_boot: int, seed: int = 0
) -> PowerLawFit:
    """The power law over `axes` on the given trials, censored ones handled per `mode`.
    Raises ValueError (with a reason) when the trials cannot support the fit."""
    rows = [s for s in stats if s.state in ("onset", "censored")]
    x = {a: np.array([s.value(a) for s in rows], dtype=float) for a in axes}
    y = np.array([s.tau if s.state == "onset" else s.censor_step for s in rows], dtype=float)
    cens = np.array([s.state == "censored" for s in rows], bool)
    return fit_values(
        [s.trial_id for s in rows], x, y, cens, mode, target=target, n_boot=n_boot, seed=seed, groups=points_of(rows)
    )  # fmt: skip


def points_of(rows: list[TrialStats]) -> list[str]:
    """Each trial's grid point (its replicates share it), its own id where none is recorded."""
    return [s.point or s.trial_id for s in rows]


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
    sweep: Sweep, *, censored: str = "auto", interpolate: bool = False, n_boot: int = 2000, sensitivity: bool = True
) -> Analysis:
    mode = resolve_mode(censored)
    stops = {stop_rule(t, sweep) for t in sweep.trials} or {stop_rule(None, sweep)}
    # the space's headline τ_mem (stop.headline): what tau_mem_step means in every fit, figure and table
    first = stop_rule(sweep.trials[0] if sweep.trials else None, sweep)
    d = headline_definition(first, interpolate)
    stats = trial_stats(sweep, d)
    label = d.label(next(iter(stops))) if len(stops) == 1 else d.label()
    label += f"; headline τ_mem (stop.headline: {first.headline or 'unset, the memorization test'})"
    warnings = list(sweep.notes)
    if len(stops) > 1:
        warnings.append("trials differ in their stop rule: each τ_mem uses its own trial's threshold and patience")
    if len({s.headline for s in stops}) > 1:
        warnings.append(f"trials differ in their headline definition: all are read by the first's ({first.headline or 'mem_frac'})")
    if not interpolate and d.kind == "mem_frac":  # the re-read onset must agree with what the sweep recorded
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
    if cens and mode == "ols":
        warnings.append(
            f"--censored ols: {len(cens)} censored trial(s) (no onset within budget) dropped from the fits, and"
            f" {DROP_BIAS} (the default, --censored auto, fits them as lower bounds):"
            f" {', '.join(_censored_name(s) for s in cens)}"
        )
    for s in stats:
        if s.state == "excluded":
            warnings.append(f"{s.trial_id} excluded: {s.reason}")
    target = f"tau_mem_step [{label}]"
    try:
        joint, note = fit_trials(fitted, axes, mode, target=target, n_boot=n_boot), ""
    except ValueError as e:
        joint, note = None, f"no joint fit: {e}"
    ref = reference_point(sweep, fitted, axes)
    marg, where = {}, {}
    if len(axes) > 1:
        marg, where = marginal_fits(
            fitted, axes, ref, mode, one_factor=is_one_factor(sweep), target=target, n_boot=n_boot
        )  # fmt: skip
    # the sensitivity rows compare definitions: fewer resamples keep them cheap, the point estimates carry it
    side_boot = max(200, n_boot // 4)
    sens = sensitivity_table(sweep, axes, mode, interpolate, side_boot) if sensitivity else []
    defs = definition_fits(sweep, fitted, axes, mode, side_boot) if sensitivity else []
    if mode == "ols" and not cens and (any(r.n_censored for r in sens) or any(r.n_censored for r in defs)):
        warnings.append(f"--censored ols: the sensitivity and definition rows drop their censored trials, and {DROP_BIAS}")
    metric = fidelity_label(sweep)
    gen = generation_fits(fitted, axes, mode, n_boot, metric=metric) if fitted else None
    reps, rep_sigma = replicate_spread(fitted, axes)
    fid = fidelity_vs_n(sweep, stats, axes, ref)
    if len(fid.extractors) > 1:
        warnings.append(f"the trials measured fidelity with different extractors ({', '.join(fid.extractors)}): their values do not compare")
    an = Analysis(
        sweep, d, label, mode, stats, axes, joint, note, marg, where, ref, sens, warnings,
        generation=gen, replicates=reps, replicate_sigma=rep_sigma, definitions=defs, fidelity=fid,
        headline=first.headline or "mem_frac",
    )  # fmt: skip
    return replace(an, findings=findings_lib.evaluate(an, side_boot))


def generation_fits(fitted: list[TrialStats], axes: list[str], mode: str, n_boot: int, metric: str = "FID") -> GenerationFits:
    """τ_gen over the axes of the joint fit, and the ratio τ_mem/τ_gen (whose exponents are the
    differences of the two). A trial whose τ_gen is a lower bound is censored in the τ_gen fit and
    left out of the ratio (a bound over a bound bounds nothing); one whose τ_mem is censored is
    censored in the ratio."""
    label = f"first {metric} within {TAU_GEN_WITHIN:.0%} of its best at or before the onset"
    rows = [s for s in fitted if s.tau_gen is not None]
    if not rows:
        none = f"no trial measured {metric}: no τ_gen"
        return GenerationFits(label, 0, None, none, None, none, None, None)
    ids = [s.trial_id for s in rows]
    x = {a: np.array([s.value(a) for s in rows], dtype=float) for a in axes}
    gen = np.array([s.tau_gen for s in rows], float)
    gen_cens = np.array([s.tau_gen_censored for s in rows], bool)
    fit = ratio = None
    note = ratio_note = ""
    try:
        fit = fit_values(ids, x, gen, gen_cens, mode, target=f"tau_gen_step [{label}]", n_boot=n_boot, groups=points_of(rows))
    except ValueError as e:
        note = str(e)
    keep = ~gen_cens
    mem = np.array([s.tau if s.state == "onset" else s.censor_step for s in rows], float)
    mem_cens = np.array([s.state == "censored" for s in rows], bool)
    r = mem / gen
    try:
        ratio = fit_values(
            [i for i, k in zip(ids, keep) if k], {a: v[keep] for a, v in x.items()}, r[keep], mem_cens[keep], mode,
            target="tau_mem_step / tau_gen_step", n_boot=n_boot,
            groups=[g for g, k in zip(points_of(rows), keep) if k],
        )  # fmt: skip
    except ValueError as e:
        ratio_note = str(e)
    both = r[keep & ~mem_cens]
    med = float(np.median(both)) if len(both) else None
    span = (float(both.min()), float(both.max())) if len(both) else None
    return GenerationFits(label, len(rows), fit, note, ratio, ratio_note, med, span)


def replicate_spread(fitted: list[TrialStats], axes: list[str]) -> tuple[list[Replicates], float | None]:
    """τ_mem over replicate seeds at each grid point (trials.point_key): mean, sd, n. Every point
    is listed when any point has two or more replicates; none otherwise. Also the pooled sd of
    log τ within points (over points with ≥ 2 onsets): the noise floor a fit's σ cannot go below."""
    groups: dict[str, list[TrialStats]] = {}
    for s in fitted:
        groups.setdefault(s.point, []).append(s)
    if not any(len(g) > 1 for g in groups.values()):
        return [], None
    out, ss, dof = [], 0.0, 0
    for key, g in groups.items():
        g = sorted(g, key=lambda s: (s.seed is None, s.seed or 0, s.trial_id))
        on = np.array([s.tau for s in g if s.state == "onset"], float)
        vals = np.array([s.tau if s.state == "onset" else s.censor_step for s in g], float)
        label = ", ".join(f"{SYMBOLS[a]}={fmt_value(a, g[0].value(a))}" for a in (axes or TIME_AXES) if g[0].value(a) is not None)
        sd = float(np.std(on, ddof=1)) if len(on) > 1 else None
        sd_log = float(np.std(np.log(on), ddof=1)) if len(on) > 1 else None
        if len(on) > 1:
            ss += float(((np.log(on) - np.log(on).mean()) ** 2).sum())
            dof += len(on) - 1
        out.append(Replicates(
            key, label, [s.trial_id for s in g], [s.seed for s in g], len(on), len(g) - len(on),
            float(vals.mean()) if len(vals) else None, sd, sd_log,
        ))  # fmt: skip
    return out, (float(np.sqrt(ss / dof)) if dof else None)


def _measured(column: str, trial: dict, rows: list[dict]) -> bool:
    """Whether the trial's metrics show it measured what `column` records (a null is then "did not fire")."""
    def has(key: str) -> bool:
        return any(r.get(key) is not None for r in rows)

    if column == "tau_mem_step":
        return has("mem_frac") or has("train_loss")
    d = next((d for d in measures.definitions() if d.tau_column == column), None)
    if d is None:
        return False
    if d.rule == "loss_divergence":
        fields = measures.get(d.measure).history
        return sum(all(r.get(f) is not None for f in fields) for r in rows) >= 2
    own = memorization_test(trial) == d.measure and not d.raw  # the trial's mem_frac is this test's
    if d.field == "mem_frac":
        return own and has("mem_frac")
    return has(d.field) or (own and has("mem_frac"))


def definition_fits(sweep: Sweep, fitted: list[TrialStats], axes: list[str], mode: str, n_boot: int) -> list[DefinitionFit]:
    """One joint fit per onset definition that trials.parquet records (`definition_columns`), over
    the trials fitted above; a column no trial filled is skipped (an older folder, or nothing
    measured), one with fewer than 2 onsets is listed without a fit. A trial that measured the
    definition without its firing is censored at its last step: the sweep stopped it first."""
    by_id = {t["trial_id"]: t for t in sweep.trials}
    out = []
    for column, label in definition_columns():
        if not any(t.get(column) is not None for t in sweep.trials):
            continue
        onsets: dict[str, int] = {}
        censored: dict[str, int] = {}
        rows: list[TrialStats] = []
        for s in fitted:
            t = by_id.get(s.trial_id)
            if t is None:
                continue
            v = t.get(column)
            last = int(max(s.steps_done or 0, max((r["step"] for r in sweep.evals.get(s.trial_id, [])), default=0)))
            if v is not None:
                onsets[s.trial_id] = int(v)
            elif _measured(column, t, sweep.evals.get(s.trial_id, [])):
                censored[s.trial_id] = last
            else:
                continue
            rows.append(s)
        fit, note = None, ""
        if len(onsets) < 2:
            note = f"{len(onsets)} onset(s): at least 2 are needed"
        else:
            ids = [s.trial_id for s in rows]
            x = {a: np.array([s.value(a) for s in rows], dtype=float) for a in axes}
            y = np.array([onsets.get(i, censored.get(i)) for i in ids], float)
            c = np.array([i in censored for i in ids])
            try:
                fit = fit_values(ids, x, y, c, mode, target=f"{column} [{label}]", n_boot=n_boot, groups=points_of(rows))
            except ValueError as e:
                note = str(e)
        out.append(DefinitionFit(column, label, onsets, censored, fit, note))
    return out


def sensitivity_table(sweep: Sweep, axes: list[str], mode: str, interpolate: bool, n_boot: int) -> list[Sensitivity]:
    """The joint fit again under other onset definitions: mem_frac thresholds, the start of its
    rise (back-extrapolated: no rise time in it, trials.rise_start) and loss divergence."""
    defs = [Definition(threshold=t, interpolate=interpolate) for t in SENSITIVITY_THRESHOLDS]
    defs += [Definition(kind="rise_start"), Definition(kind="loss")]
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
