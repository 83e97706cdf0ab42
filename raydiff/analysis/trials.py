"""Per-trial quantities re-read from the evaluation series.

τ_mem comes from the metrics rows through the very onset functions the stopper uses
(raydiff.metrics.onset), under an onset `Definition`: the trial's own stop rule by default, or
another mem_frac threshold, or Marion & Wu's loss divergence, optionally with the crossing
interpolated in log(step). Every trial ends in one of four states:

    onset      τ_mem observed
    censored   finished without an onset under this definition: τ_mem > the last step it trained
    excluded   diverged, errored, or without evaluation rows: named, never fitted
    running    no row in trials.parquet yet: named, never fitted

Beside τ_mem, each trial gets τ_gen (`generalization_time`): the first evaluation whose FID is
within 5% of the best FID the trial reached at or before its onset. The step of the best FID
itself is a poor estimator on the plateau around the minimum, where FID noise alone decides which
evaluation wins; the first step within 5% of it is where the model stopped improving measurably.
Bonnaire et al. (2025) find τ_gen ≈ constant in n while τ_mem ∝ n.

Trials that share every setting but the training seed (`train.seed`, trials.parquet `seed`) are
replicates of one grid point (`point_key`); the fits use each as an observation.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from raydiff import measures

from raydiff.analysis.fits import AXES
from raydiff.config import StopConfig, normalized_time
from raydiff.config.schema import build
from raydiff.errors import ConfigError
from raydiff.metrics.onset import interpolated_onset, loss_divergence_onset, mem_onset
from raydiff.results_folder import Sweep, reference_minima


@dataclass(frozen=True)
class Definition:
    """What τ_mem means. None fields take each trial's own stop rule (its config's `stop`)."""

    # mem_frac: a fixed level of a memorization fraction; rise_start: where that fraction's rise
    # begins, back-extrapolated (`rise_start`: no rise time in it); loss: the loss divergence
    kind: str = "mem_frac"  # mem_frac | rise_start | loss
    threshold: float | None = None  # mem_frac threshold; None: the trial's stop.mem_frac_threshold
    patience: int | None = None  # consecutive evaluations; None: the trial's stop.patience
    interpolate: bool = False  # mem_frac only: crossing interpolated in log(step) (interpolated_onset)
    # which fraction (an onset definition's name, raydiff/measures): pixel (the `mem_frac`
    # column), features (SSCD: `mem_frac_features`, or `mem_frac` where only features is measured),
    # pixel_raw (`mem_frac_raw`). None: `mem_frac`, the trial's memorization test
    series: str | None = None

    def label(self, stop: StopConfig | None = None) -> str:
        if self.kind == "loss":
            s = stop or StopConfig()
            return f"loss divergence (gap {s.loss_gap:g}, window {s.loss_window})"
        name = series_label(self.series)
        if self.kind == "rise_start":
            return f"start of {name}'s rise (back-extrapolated)"
        thr = self.threshold if self.threshold is not None else (stop.mem_frac_threshold if stop else None)
        pat = self.patience if self.patience is not None else (stop.patience if stop else None)
        thr_s = "stop rule's" if thr is None else f"{thr:g}"
        pat_s = "" if pat is None else f", patience {pat}"
        return f"{name} ≥ {thr_s}{pat_s}" + (", interpolated" if self.interpolate else "")


def series_label(series: str | None) -> str:
    """A fraction's name in tables: mem_frac, or its definition's (raydiff/measures' label)."""
    if series is None or series not in measures.definition_names():
        return "mem_frac"
    d = measures.definition(series)
    if d.raw:
        return "mem_frac (raw weights)"
    m = measures.get(d.measure)
    return m.fraction_label or f"mem_frac ({d.label})"


def headline_definition(stop: StopConfig, interpolate: bool = False) -> Definition:
    """The onset definition a space declares as its headline τ_mem (stop.headline): the loss
    divergence, or a memorization fraction's fixed level. None: `mem_frac`, the trial's test."""
    if stop.headline == "loss":
        return Definition(kind="loss")
    return Definition(interpolate=interpolate, series=stop.headline)


def series_column(series: str | None, rows: list[dict]) -> str:
    """The metrics column a fraction named by an onset definition (raydiff/measures) lives in: its
    own (mem_frac_features, mem_frac_raw, …), or `mem_frac` where the trial reported it there
    (its only test, in folders from before the registry)."""
    if series is None or series not in measures.definition_names():
        return "mem_frac"
    d = measures.definition(series)
    if d.raw or any(r.get(d.field) is not None for r in rows):
        return d.field
    return "mem_frac"


@dataclass(frozen=True)
class TrialStats:
    trial_id: str
    status: str  # trials.parquet status, or "running"
    state: str  # onset | censored | excluded | running
    reason: str  # why excluded / censored, "" otherwise
    n_train: int | None
    batch_size: int | None
    lr: float | None
    params: int | None
    model: str | None
    steps_done: int | None  # last step trained (the last evaluation for a running trial)
    n_evals: int
    tau: float | None  # τ_mem (optimizer steps) under the definition; float when interpolated
    tau_recorded: int | None  # trials.parquet tau_mem_step (the stopper's rule, as recorded)
    tau_normalized: float | None  # τ·(N_min/N)·(B/B_min)·(η/η_min)
    censor_step: int | None  # censored: τ_mem lies beyond this step
    mem_rate: float | None  # d mem_frac / d step from the onset on (least squares); per step; None: see mem_rate_note
    peak_fid: float | None  # the lowest FID at or before the onset (all evaluations when none)
    peak_fid_step: int | None
    seed: int | None = None  # train.seed: replicates share everything else (`point`)
    point: str = ""  # the grid point: a digest of the trial's settings without its seed (point_key)
    tau_gen: int | None = None  # τ_gen (steps): first FID within TAU_GEN_WITHIN of its best before onset
    tau_gen_censored: bool = False  # no onset and FID still at its best at the last FID: τ_gen ≥ tau_gen
    mem_rate_note: str = ""  # why an onset trial has no mem_rate ("not measurable: stopped at onset")
    # τ under the fraction's 95% interval (mem_frac_lo/_hi) in place of the fraction: the earliest
    # onset the binomial noise allows (the upper ends cross first) and the latest (the lower ends;
    # None: they never cross, τ beyond the last evaluation). A bisection's single noisy snapshot
    # moves τ within this bracket. Fixed-level definitions only
    tau_lo: float | None = None
    tau_hi: float | None = None
    mem_rate_series: str = "mem_frac"  # the fraction mem_rate is the slope of (SSCD's where measured)
    peak_swd: float | None = None  # Marion & Wu's peak fidelity: the lowest SWD at or before the onset
    peak_swd_step: int | None = None

    def value(self, axis: str) -> float | None:
        return getattr(self, axis)

    def to_dict(self) -> dict:
        return asdict(self)


def stop_rule(trial: dict | None, sweep: Sweep) -> StopConfig:
    """A trial's stop rule from its recorded config, else the search space's, else the default."""
    for raw in (_config_of(trial), (sweep.search_space or {})):
        stop = (raw or {}).get("stop")
        if isinstance(stop, dict):
            try:  # built as the config layer builds it (lists → tuples), keys it no longer knows left out
                return build(StopConfig, {k: v for k, v in stop.items() if k in StopConfig.__dataclass_fields__}, "stop")
            except (TypeError, ConfigError):
                pass
    return StopConfig()


def _config_of(trial: dict | None) -> dict | None:
    if not trial or not trial.get("config"):
        return None
    try:
        return json.loads(trial["config"])
    except json.JSONDecodeError:
        return None


def memorization_test(trial: dict | None) -> str:
    """Which test the trial's `mem_frac` is: the first memorization test of `eval.measures`, or,
    by the older switch, `features` when it measured only that; else `pixel`."""
    ev = (_config_of(trial) or {}).get("eval") or {}
    names = ev.get("measures")
    if names:
        tests = [n for n in names if n in measures.REGISTRY and measures.get(n).kind == "memorization"]
        return tests[0] if tests else "pixel"
    return "features" if ev.get("memorization_space") == "features" else "pixel"


def recorded_onset(t: dict, stop: StopConfig) -> int | None:
    """The recorded τ that the onset re-read from mem_frac must agree with: `tau_mem_step`, unless
    the stop rule names other definitions (`stop.on`), in which case tau_mem_step is theirs and
    the memorization test's own column (`tau_mem_pixel_step`, `tau_mem_features_step`) is the one."""
    if stop.headline and f"tau_mem_{stop.headline}_step" in t:  # the space's headline definition's column
        return t.get(f"tau_mem_{stop.headline}_step")
    own = memorization_test(t)
    if stop.on and tuple(stop.on) != (own,) and f"tau_mem_{own}_step" in t:
        return t.get(f"tau_mem_{own}_step")
    return t.get("tau_mem_step")


def onset_of(rows: list[dict], d: Definition, stop: StopConfig) -> float | None:
    steps = [r["step"] for r in rows]
    if d.kind == "loss":
        train, test = [r.get("train_loss") for r in rows], [r.get("test_loss") for r in rows]
        refined = [bool(r.get("refined")) for r in rows]  # refinement's snapshot rows narrow the onset, never confirm it
        s = loss_divergence_onset(steps, train, test, stop.loss_gap, stop.loss_window, refined)
        return None if s is None else float(s)
    thr = stop.mem_frac_threshold if d.threshold is None else d.threshold
    pat = stop.patience if d.patience is None else d.patience
    fracs = [r.get(series_column(d.series, rows)) for r in rows]
    if d.kind == "rise_start":
        s = rise_start(steps, fracs, thr, pat)
    else:
        s = interpolated_onset(steps, fracs, thr, pat) if d.interpolate else mem_onset(steps, fracs, thr, pat)
    return None if s is None else float(s)


RATE_STOPPED = "not measurable: stopped at onset"
RATE_NOT_YET = "not measurable yet: no evaluation past the onset's confirmation"


RISE_TOP = 0.5  # the rise fitted by rise_start: from the crossing up to the first fraction at or above this


def rise_start(steps: list[int], fracs: list[float], threshold: float, patience: int) -> float | None:
    """Where the fraction's rise begins, free of its rise time: a line f = a + b·log(step) through
    the rise (the last evaluation before the fixed-level crossing, then the crossing and on, up to
    the first at or above RISE_TOP), back-extrapolated to the floor (the median fraction over the
    first half of the evaluations before the crossing: before the rise). A fixed level τ_0.1 is that start plus the time the rise takes to climb to 0.1: when the
    climb is slower at larger N, τ_0.1's exponent carries it; this one does not. Never later
    than the fixed-level onset; None without a crossing or a rise (fewer than two points, or flat)."""
    fixed = mem_onset(steps, fracs, threshold, patience)
    if fixed is None:
        return None
    keep = [k for k, f in enumerate(fracs) if f is not None]  # fidelity-only evaluations carry no fraction
    steps, fracs = [steps[k] for k in keep], [fracs[k] for k in keep]
    i = steps.index(fixed)
    early = fracs[: i // 2]  # the first half of the evaluations before the crossing: before any rise
    floor = float(np.median(early)) if early else 0.0
    j = i
    while j + 1 < len(steps) and fracs[j] < RISE_TOP:
        j += 1
    lo = i - 1 if i > 0 and fracs[i - 1] > floor else i
    pts = [(math.log(steps[k]), fracs[k]) for k in range(lo, j + 1)]
    if len({x for x, _ in pts}) < 2:
        return None
    x, y = np.array(pts).T
    slope, icpt = np.polyfit(x, y, 1)
    if not slope > 0:
        return None
    return float(min(fixed, math.exp((floor - icpt) / slope)))


def onset_bracket(rows: list[dict], d: Definition, stop: StopConfig) -> tuple[float | None, float | None]:
    """(τ_lo, τ_hi): the fixed-level onset of the fraction's upper and lower interval ends."""
    if d.kind != "mem_frac":
        return None, None
    column = series_column(d.series, rows)
    rows = [r for r in rows if r.get(column) is not None and r.get(f"{column}_lo") is not None]
    if not rows:
        return None, None
    thr = stop.mem_frac_threshold if d.threshold is None else d.threshold
    pat = stop.patience if d.patience is None else d.patience
    steps = [r["step"] for r in rows]
    early = mem_onset(steps, [r[f"{column}_hi"] for r in rows], thr, pat)
    late = mem_onset(steps, [r[f"{column}_lo"] for r in rows], thr, pat)
    return (None if early is None else float(early)), (None if late is None else float(late))


def rate_column(rows: list[dict]) -> str:
    """Marion & Wu's memorization rate is the SSCD score's slope: mem_frac_features where
    measured, else mem_frac (the trial's own test)."""
    return "mem_frac_features" if any(_finite(r.get("mem_frac_features")) for r in rows) else "mem_frac"


def mem_rate(rows: list[dict], onset: float, patience: int, running: bool = False, column: str = "mem_frac") -> tuple[float | None, str]:
    """(slope, "") of the fraction `column` (rate_column: the SSCD score's where measured) against
    step over the evaluations from the onset evaluation on, or (None, why) when the trial measured
    nothing past the evaluation that confirmed its onset (the `patience`-th from the onset on): a
    trial the stopper ended there saw the fraction only around the threshold, and a slope through
    those few noisy values is no rate of memorization (it can even come out negative).
    `stop.continue_for` keeps a trial training past its onset."""
    pts = [(r["step"], r[column]) for r in rows if r["step"] >= math.floor(onset) and _finite(r.get(column))]
    if len(pts) <= max(patience, 1) or len({s for s, _ in pts}) < 2:
        return None, RATE_NOT_YET if running else RATE_STOPPED
    s, m = np.array(pts, dtype=float).T
    return float(np.polyfit(s, m, 1)[0]), ""


def peak_fidelity(rows: list[dict], onset: float | None, column: str = "fid") -> tuple[float | None, int | None]:
    """The lowest `column` (fid, or sliced_wasserstein: Marion & Wu's peak fidelity) at or before the onset."""
    pts = [(r[column], r["step"]) for r in rows if _finite(r.get(column)) and (onset is None or r["step"] <= onset)]
    if not pts:
        return None, None
    fid, step = min(pts)
    return float(fid), int(step)


def trial_stats(sweep: Sweep, d: Definition = Definition()) -> list[TrialStats]:
    """One TrialStats per trial that landed (finished or running), in a stable order."""
    minima = reference_minima(sweep)
    out = []
    for t in sweep.trials:
        rows = sweep.evals.get(t["trial_id"], [])
        out.append(_stats(t["trial_id"], t, rows, d, stop_rule(t, sweep), minima))
    for tid in sweep.running:
        out.append(_stats(tid, None, sweep.evals[tid], d, stop_rule(None, sweep), minima))
    return sorted(out, key=_order)


def _order(s: TrialStats):
    return (s.state == "running", *((s.value(a) is None, s.value(a) or 0) for a in AXES), s.trial_id)


def _stats(tid: str, t: dict | None, rows: list[dict], d: Definition, stop: StopConfig, minima) -> TrialStats:
    t = t or {}
    status = t.get("status") or "running"
    last_eval = rows[-1]["step"] if rows else None
    steps_done = t.get("steps_done") if t.get("steps_done") is not None else last_eval
    onset = onset_of(rows, d, stop) if rows else None
    reason, censor = "", None
    if status == "running":
        state = "running"
        reason = f"still running (last evaluation at step {last_eval})"
    elif status in ("diverged", "error"):
        state = "excluded"
        reason = f"{status}: {t.get('stop_reason') or t.get('error') or 'no reason recorded'}"
    elif not rows:
        state, reason = "excluded", "no evaluation rows in metrics/"
    elif any(t.get(a) is None or not t.get(a) > 0 for a in AXES):
        state, reason = "excluded", "an axis value (N, B, η, P) is missing"
    elif onset is not None:
        state = "onset"
    else:
        state = "censored"
        censor = int(max(steps_done or 0, last_eval or 0))
        reason = f"no onset by step {censor}" + (f" ({status})" if status != "budget" else " (step budget spent)")
    n, b, lr = t.get("n_train"), t.get("batch_size"), t.get("lr")
    norm = normalized_time(onset, n, b, lr, minima) if (onset is not None and n and b and lr) else None
    rcol = rate_column(rows)
    rate, rate_note = (None, "")
    if onset is not None:
        rate, rate_note = mem_rate(rows, onset, stop.patience if d.patience is None else d.patience, status == "running", rcol)
    fid, fid_step = peak_fidelity(rows, onset)
    swd, swd_step = peak_fidelity(rows, onset, "sliced_wasserstein")
    lo, hi = onset_bracket(rows, d, stop) if state == "onset" else (None, None)
    gen, gen_cens = generalization_time(rows, onset) if state in ("onset", "censored") else (None, False)
    return TrialStats(
        trial_id=tid, status=status, state=state, reason=reason,
        n_train=n, batch_size=b, lr=lr, params=t.get("params"), model=t.get("model"),
        steps_done=steps_done, n_evals=len(rows), tau=onset if state in ("onset", "running") else None,
        tau_recorded=recorded_onset(t, stop), tau_normalized=norm if state == "onset" else None,
        censor_step=censor, mem_rate=rate, mem_rate_note=rate_note, peak_fid=fid, peak_fid_step=fid_step,
        seed=t.get("seed"), point=point_key(t) if t else "", tau_gen=gen, tau_gen_censored=gen_cens,
        tau_lo=lo, tau_hi=hi, mem_rate_series=rcol, peak_swd=swd, peak_swd_step=swd_step,
    )  # fmt: skip


TAU_GEN_WITHIN = 0.05  # τ_gen: the first evaluation with FID ≤ (1 + this) × its best before onset


def generalization_time(rows: list[dict], onset: float | None, within: float = TAU_GEN_WITHIN) -> tuple[int | None, bool]:
    """(τ_gen, censored). τ_gen is the first evaluation whose FID is within `within` (relative)
    of the lowest FID among the evaluations at or before the onset (all of them when there is
    none). Censored (a lower bound) when the trial has no onset and its best FID is its last FID:
    FID was still falling when the trial stopped, so a later, lower best may move τ_gen on.
    (None, False) without any FID."""
    pts = [(int(r["step"]), float(r["fid"])) for r in rows if _finite(r.get("fid")) and (onset is None or r["step"] <= onset)]
    if not pts:
        return None, False
    best = min(f for _, f in pts)
    first = next(s for s, f in pts if f <= best * (1.0 + within))  # FID ≥ 0: a relative margin
    censored = onset is None and pts[-1][1] == best  # still improving at its last FID
    return first, censored


# settings that do not make a different grid point: the seed itself, where the data and the
# weights live, the step budget (it decides censoring, not τ), the device
NOT_POINT = {"train": ("seed", "max_steps", "budget_scaling", "budget_ref_n", "budget_ref_batch", "device"),
             "data": ("root", "download")}  # fmt: skip
POINT_COLUMNS = ("dataset", "model", "params", "n_train", "batch_size", "lr", "objective")


def point_key(t: dict) -> str:
    """The trial's grid point, a short digest: its recorded config without the seed (NOT_POINT),
    or, for a row without a config, its trials.parquet columns (POINT_COLUMNS). Trials with the
    same key and different seeds are replicates."""
    cfg = _config_of(t)
    if isinstance(cfg, dict):
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
        for section, keys in NOT_POINT.items():
            for k in keys:
                (cfg.get(section) or {}).pop(k, None)
        what = cfg
    else:
        what = {c: t.get(c) for c in POINT_COLUMNS}
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]


def fmt_value(axis: str, v: float) -> str:
    """An axis value as people write it: N=512, B=16, η=1e-4, P=92.7M."""
    if axis == "lr":
        return f"{v:.0e}".replace("e-0", "e-") if float(f"{v:.0e}") == v else f"{v:.2g}"
    if axis == "params":
        return f"{v / 1e6:.3g}M" if v >= 1e5 else f"{v / 1e3:.3g}k"
    return f"{v:g}"


def normalized_steps(steps: np.ndarray, s: TrialStats, minima: dict[str, float]) -> np.ndarray | None:
    """Steps in Marion & Wu's normalized time units (None when the trial's axes are unknown)."""
    if not (s.n_train and s.batch_size and s.lr):
        return None
    return normalized_time(steps, s.n_train, s.batch_size, s.lr, minima)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
