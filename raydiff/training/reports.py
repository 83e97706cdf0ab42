"""What a trial reports: the report contract (keys listed in docs/results.md).

Every report carries the trial's static facts, its metrics and onsets so far, the search
objectives (metrics/objectives.py) and the stop decision (metrics/stop.py), computed once here per
evaluation: the onsets by every definition are computed once (`Onsets.of`) and the stop decision,
τ per definition and the evaluations to come all read them. Pure: no torch.

A report is O(1) in the trial's length: the evaluation history's series (`Onsets.series`) feed the
decision here but are not reported (the driver gets every report, writes a row per report and
keeps the last one per trial in Tune's experiment state; a thousand trials of long histories made
that O(history) per result). What a reader needs of the history is in the metrics rows, or a
scalar here (`tau_prev_step`: the evaluation before the onset, for the budget planner).

Lengths are in optimizer steps and in images seen (images = steps × B).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from raydiff import measures
from raydiff.config import ExperimentConfig
from raydiff.metrics.objectives import objective_values
from raydiff.metrics.stop import decide, onsets, stop_fields, stop_onset

if typing.TYPE_CHECKING:  # annotations only: a report reads the state's history, step and clock
    from raydiff.data import ImageData
    from raydiff.training.state import TrainState


HISTORY_KEYS = ("mem_frac", "mem_frac_lo", "mem_frac_hi", "fid")  # per evaluation, beside each definition's fields


def history_keys() -> tuple[str, ...]:
    """The fields of a history row: HISTORY_KEYS and what every onset definition's rule reads
    (raydiff/measures: a test's fraction, its raw variant's, the loss probes)."""
    fields = [*HISTORY_KEYS]
    for d in measures.definitions():
        m = measures.get(d.measure)
        fields += [measures.raw_column(m.history[0])] if d.raw else list(m.history)
    return tuple(dict.fromkeys(fields))


def history_row(step: int, b: int, wall_s: float, metrics: dict[str, Any]) -> dict[str, Any]:
    """One evaluation as the compact history row the onset rules read."""
    row = {"step": step, "images_seen": step * b, "wall_s": wall_s}
    row.update({k: metrics.get(k) for k in history_keys()})
    return row


def history_series(cfg: ExperimentConfig, history: list[dict[str, Any]]) -> dict[str, list]:
    """The evaluation history as the report carries it: the steps and the series of every onset
    definition this trial measures (the stop decision and `raydiff analyze` read them)."""
    out = {
        "history_steps": [h.get("step") for h in history],
        "history_mem_frac": [h.get("mem_frac") for h in history],
        "history_refined": [bool(h.get("refined")) for h in history],  # refinement's snapshot rows (the loss onset's rule reads them)
    }
    for name in cfg.definitions:
        out.update(measures.series_of(history, measures.definition(name)))
    return out


@dataclass(frozen=True)
class Onsets:
    """One evaluation's onsets, computed once: the history's series, τ by every definition the
    trial measures (None: not fired yet) and the stop rule's τ. The report, the stop decision and
    the schedule of the evaluations to come all read this one computation."""

    series: dict[str, list]
    found: dict[str, int | None]
    tau: int | None

    @classmethod
    def of(cls, cfg: ExperimentConfig, history: list[dict[str, Any]]) -> "Onsets":
        series = history_series(cfg, history)
        found = onsets(series, cfg.stop)
        return cls(series, found, stop_onset(found, cfg.stop))

    def summary(self) -> dict[str, Any]:
        """τ by every onset definition (None: not fired, or not measured) and the stop rule's."""
        return {"tau_mem_step": self.tau, **{d.tau_column: self.found.get(d.name) for d in measures.definitions()}}

    def prev_step(self) -> int | None:
        """The last evaluation step before the stop rule's τ (0: τ is the first evaluation; None: no
        τ yet): the onset lies in (prev_step, τ], which the budget planner fits to
        (tune/planner.BudgetPlanner.observe)."""
        if self.tau is None:
            return None
        return max((s for s in self.series.get("history_steps") or () if s is not None and s < self.tau), default=0)


def onset_summary(cfg: ExperimentConfig, history: list[dict[str, Any]]) -> dict[str, Any]:
    """τ by every onset definition (None: not fired, or not measured) and the stop rule's
    (`tau_mem_step`), from the evaluation history, by the rules the stop decision uses."""
    return Onsets.of(cfg, history).summary()


def static_fields(cfg: ExperimentConfig, ts: "TrainState", data: "ImageData") -> dict[str, Any]:
    return {
        "params": ts.params,
        "n_train": data.x_train.shape[0],
        "batch_size": cfg.batch,
        "lr": cfg.train.lr,
        "budget_steps": cfg.budget_steps,
        "budget_reason": cfg.budget_reason,
        "resumed_from_step": ts.step,  # the checkpoint step this run resumed from (0: fresh)
    }


def evaluation_report(
    cfg: ExperimentConfig, static: dict, ts: "TrainState", metrics: dict, loss: float, onset: Onsets | None = None
) -> dict[str, Any]:
    """The report of an evaluation (ts.history ends with its row), with the stop decision; `onset`:
    the history's onsets if the caller has them (Onsets.of), else computed here."""
    b = cfg.batch
    onset = onset or Onsets.of(cfg, ts.history)
    tau = onset.tau
    out = {
        **static,
        **metrics,
        **ts.history[-1],
        "loss": loss,
        "diverged": False,
        **onset.summary(),
        "tau_mem_images": None if tau is None else tau * b,
        "tau_mem_seconds": _wall_at(ts.history, tau),
        # search objectives, in every report (an Optuna search reads them; see metrics/objectives.py)
        **objective_values(ts.history, tau, ts.step, b),
        "tau_prev_step": onset.prev_step(),  # the evaluation before τ: the budget planner reads it
    }
    # the decision reads the history's series; the report does not carry them (O(1) per report)
    return {**out, **stop_fields(decide({**out, **onset.series}, cfg.stop, onset.found))}


def interim_report(cfg: ExperimentConfig, static: dict, ts: "TrainState", metrics: dict, row: dict) -> dict[str, Any]:
    """A snapshot evaluation (refinement) or a fidelity-only one, reported before the evaluation
    that follows it: without the history, a checkpoint or a decision (that evaluation's report
    carries them)."""
    onset = onset_summary(cfg, ts.history)
    out = {**static, **metrics, **row, **onset, "diverged": False}
    return {**out, **objective_values(ts.history, onset["tau_mem_step"], row["step"], cfg.batch), **stop_fields(None)}


def diverged_report(cfg: ExperimentConfig, static: dict, ts: "TrainState") -> dict[str, Any]:
    b = cfg.batch
    out = {
        **static, "step": ts.step, "images_seen": ts.step * b, "wall_s": ts.wall_s,
        "loss": float("nan"), "diverged": True, "diverged_step": ts.step, "tau_mem_step": None,
        **objective_values(ts.history, None, ts.step, b, diverged=True),
    }  # fmt: skip
    return {**out, **stop_fields(decide(out, cfg.stop))}


def _wall_at(history: list[dict[str, Any]], step: int | None) -> float | None:
    if step is None:
        return None
    return next(h["wall_s"] for h in history if h["step"] == step)
