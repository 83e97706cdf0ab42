"""Per-trial quantities re-read from the evaluation series.

τ_mem comes from the metrics rows through the very onset functions the stopper uses
(raydiff.metrics.onset), under an onset `Definition`: the trial's own stop rule by default, or
another mem_frac threshold, or Marion & Wu's loss divergence, optionally with the crossing
interpolated in log(step). Every trial ends in one of four states:

    onset      τ_mem observed
    censored   finished without an onset under this definition: τ_mem > the last step it trained
    excluded   diverged, errored, or without evaluation rows: named, never fitted
    running    no row in trials.parquet yet: named, never fitted
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from raydiff.analysis.fits import AXES
from raydiff.config import StopConfig
from raydiff.metrics.onset import interpolated_onset, loss_divergence_onset, mem_onset
from raydiff.results_folder import Sweep, reference_minima


@dataclass(frozen=True)
class Definition:
    """What τ_mem means. None fields take each trial's own stop rule (its config's `stop`)."""

    kind: str = "mem_frac"  # mem_frac | loss
    threshold: float | None = None  # mem_frac threshold; None: the trial's stop.mem_frac_threshold
    patience: int | None = None  # consecutive evaluations; None: the trial's stop.patience
    interpolate: bool = False  # mem_frac only: crossing interpolated in log(step) (interpolated_onset)

    def label(self, stop: StopConfig | None = None) -> str:
        if self.kind == "loss":
            s = stop or StopConfig()
            return f"loss divergence (gap {s.loss_gap:g}, window {s.loss_window})"
        thr = self.threshold if self.threshold is not None else (stop.mem_frac_threshold if stop else None)
        pat = self.patience if self.patience is not None else (stop.patience if stop else None)
        thr_s = "stop rule's" if thr is None else f"{thr:g}"
        pat_s = "" if pat is None else f", patience {pat}"
        return f"mem_frac ≥ {thr_s}{pat_s}" + (", interpolated" if self.interpolate else "")


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
    mem_rate: float | None  # d mem_frac / d step from the onset on (least squares); per step
    peak_fid: float | None  # the lowest FID at or before the onset (all evaluations when none)
    peak_fid_step: int | None

    def value(self, axis: str) -> float | None:
        return getattr(self, axis)

    def to_dict(self) -> dict:
        return asdict(self)


def stop_rule(trial: dict | None, sweep: Sweep) -> StopConfig:
    """A trial's stop rule from its recorded config, else the search space's, else the default."""
    for raw in (_config_of(trial), (sweep.search_space or {})):
        stop = (raw or {}).get("stop")
        if isinstance(stop, dict):
            try:
                return StopConfig(**{k: v for k, v in stop.items() if k in StopConfig.__dataclass_fields__})
            except TypeError:
                pass
    return StopConfig()


def _config_of(trial: dict | None) -> dict | None:
    if not trial or not trial.get("config"):
        return None
    try:
        return json.loads(trial["config"])
    except json.JSONDecodeError:
        return None


def onset_of(rows: list[dict], d: Definition, stop: StopConfig) -> float | None:
    steps = [r["step"] for r in rows]
    if d.kind == "loss":
        s = loss_divergence_onset(
            steps, [r.get("train_loss") for r in rows], [r.get("test_loss") for r in rows], stop.loss_gap, stop.loss_window
        )
        return None if s is None else float(s)
    thr = stop.mem_frac_threshold if d.threshold is None else d.threshold
    pat = stop.patience if d.patience is None else d.patience
    fracs = [r.get("mem_frac") for r in rows]
    s = interpolated_onset(steps, fracs, thr, pat) if d.interpolate else mem_onset(steps, fracs, thr, pat)
    return None if s is None else float(s)


def mem_rate(rows: list[dict], onset: float) -> float | None:
    """Slope of mem_frac against step over the evaluations from the onset evaluation on."""
    pts = [(r["step"], r["mem_frac"]) for r in rows if r["step"] >= math.floor(onset) and _finite(r.get("mem_frac"))]
    if len({s for s, _ in pts}) < 2:
        return None
    s, m = np.array(pts, dtype=float).T
    return float(np.polyfit(s, m, 1)[0])


def peak_fidelity(rows: list[dict], onset: float | None) -> tuple[float | None, int | None]:
    pts = [(r["fid"], r["step"]) for r in rows if _finite(r.get("fid")) and (onset is None or r["step"] <= onset)]
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
    norm = None
    if onset is not None and n and b and lr:
        norm = onset * (minima["n_train"] / n) * (b / minima["batch_size"]) * (lr / minima["lr"])
    rate = mem_rate(rows, onset) if onset is not None else None
    fid, fid_step = peak_fidelity(rows, onset)
    return TrialStats(
        trial_id=tid, status=status, state=state, reason=reason,
        n_train=n, batch_size=b, lr=lr, params=t.get("params"), model=t.get("model"),
        steps_done=steps_done, n_evals=len(rows), tau=onset if state in ("onset", "running") else None,
        tau_recorded=t.get("tau_mem_step"), tau_normalized=norm if state == "onset" else None,
        censor_step=censor, mem_rate=rate, peak_fid=fid, peak_fid_step=fid_step,
    )  # fmt: skip


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
    return steps * (minima["n_train"] / s.n_train) * (s.batch_size / minima["batch_size"]) * (s.lr / minima["lr"])


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
