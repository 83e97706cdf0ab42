"""What `raydiff sweep` prints while it runs.

One line when a trial finishes, and the trial table of `raydiff status` (raydiff/status.py)
with, per running trial, the estimated time to its expected onset (τ̂ from the budget planner's
fit: the trial's own plan in a planned grid, else a `BudgetPlanner` fed here with the onsets of
the trials finished so far) and, under it, the sweep's expected end (status.sweep_left_s). On a
terminal it is redrawn in place (at most every `interval_s`, 2 s by default, and at once
after a line so it never goes missing); when stdout is a file or a pipe it is printed at most
once per `interval_s` (60 s by default) plus once at the end, so a log gets a table a minute
however fast results arrive.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from ray import tune

from raydiff.config import BudgetPlannerConfig
from raydiff.metrics.stop import final_status
from raydiff.status import LIVE_COLUMNS, duration, format_table, onset_in_s, sweep_left_s
from raydiff.tune.callback import overrides_of
from raydiff.tune.planner import BudgetPlanner, PointInfo, group_of

RESULT_KEYS = ("n_train", "batch_size", "lr", "step", "budget_steps", "mem_frac", "tau_mem_step", "wall_s", "params")


def _isatty(out) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressCallback(tune.Callback):
    def __init__(
        self,
        out=sys.stdout,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 1,
        planned: int | None = None,
    ):
        self.interval_s = interval_s
        self.clock = clock
        self.width = width  # trials at once, for the sweep's expected end
        self.planned = planned  # trials in the sweep (None: unknown)
        self.rows: dict[str, dict[str, Any]] = {}
        self.law = BudgetPlanner(BudgetPlannerConfig(), patience=1)  # onsets seen: τ̂ for unplanned trials
        self._attach(out)

    def _attach(self, out) -> None:
        self.out = out
        self.tty = _isatty(out)
        self.every = self.interval_s if self.interval_s is not None else (2.0 if self.tty else 60.0)
        self._last_draw = None  # clock time of the last table; None: never drawn
        self._drawn_lines = 0  # lines of the table now on the terminal (TTY only)

    def __getstate__(self):  # Ray pickles callbacks with the experiment; a stream does not pickle
        state = self.__dict__.copy()
        state.update(out=None, rows={}, clock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.clock = time.monotonic
        self._attach(sys.stdout)

    # ------------------------------------------------------------------ Tune's hooks

    def _row(self, trial) -> dict[str, Any]:
        row = self.rows.get(trial.trial_id)
        if row is None:
            axes = {k.rsplit(".", 1)[-1]: v for k, v in overrides_of(trial.config).items()}
            row = {"trial_id": trial.trial_id, "status": "pending", "group": group_of(overrides_of(trial.config))}
            row.update({k: axes[k] for k in ("n_train", "batch_size", "lr") if k in axes})
            planned = (trial.config.get("planner") or {}).get("tau_mem_predicted")
            if planned is not None:
                row["tau_planned"] = float(planned)  # the planner's own τ̂ for this trial
            self.rows[trial.trial_id] = row
        return row

    @staticmethod
    def _point(row: dict[str, Any]) -> PointInfo | None:
        if any(row.get(k) is None for k in ("n_train", "batch_size", "lr", "params", "budget_steps")):
            return None
        axes = {"n_train": row["n_train"], "batch_size": row["batch_size"], "lr": row["lr"], "params": row["params"]}
        return PointInfo(index=0, axes=axes, budget=int(row["budget_steps"]), eval_every=1, group=row["group"])

    def _tau(self, row: dict[str, Any]) -> float | None:
        """τ̂ of a trial: its planned one, else the fit of the onsets finished so far."""
        if row.get("tau_planned") is not None:
            return row["tau_planned"]
        p = self._point(row)
        return self.law.plan(p).tau_predicted if p is not None else None

    def on_trial_start(self, iteration, trials, trial, **info):
        self._row(trial)["status"] = "running"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        row["status"] = "running"
        row.update({k: result[k] for k in RESULT_KEYS if result.get(k) is not None})
        if result.get("fid") is not None:  # FID is measured on some evaluations only: keep the latest
            row["fid"] = result["fid"]
        self._maybe_draw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        last = trial.last_result or {}
        row["status"] = final_status(last).status  # as the trial reported it
        tau = last.get("tau_mem_step")
        row.update({k: last[k] for k in RESULT_KEYS if last.get(k) is not None})
        p = self._point(row)
        if p is not None:  # every finished trial feeds the law (one without an onset as such)
            self.law.observe(p, tau if row["status"] == "memorized" else None, int(row.get("step") or 0), p.budget, planned=False)
        what = f"memorized at step {tau}" if row["status"] == "memorized" and tau is not None else row["status"]
        self._line(f"raydiff: trial {trial.trial_id} ({self._axes_text(row)}) finished: {what}")

    def on_trial_error(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"] = "error"
        self._line(f"raydiff: trial {trial.trial_id} ({self._axes_text(row)}) failed (see trials.parquet, column error)")

    def on_experiment_end(self, trials, **info):
        self._draw(final=True)

    # ------------------------------------------------------------------ drawing

    @staticmethod
    def _axes_text(row: dict[str, Any]) -> str:
        parts = [f"{s}={row[k]:g}" for s, k in (("N", "n_train"), ("B", "batch_size"), ("lr", "lr")) if row.get(k) is not None]
        return ", ".join(parts)

    def _erase(self) -> None:
        if self.tty and self._drawn_lines:
            self.out.write(f"\x1b[{self._drawn_lines}F\x1b[J")  # up to the table's first line, clear below
            self._drawn_lines = 0

    def _line(self, text: str) -> None:
        if self.out is None:
            return
        self._erase()
        print(text, file=self.out, flush=True)
        if self.tty and self._last_draw is not None:
            self._draw()  # the table was on screen: put it back under the line at once

    def _maybe_draw(self) -> None:
        if self._last_draw is None or self.clock() - self._last_draw >= self.every:
            self._draw()

    def _draw(self, final: bool = False) -> None:
        if self.out is None or not self.rows:
            return
        self._last_draw = self.clock()
        text = live_text(list(self.rows.values()), self._tau, self.width, self.planned)
        self._erase()
        if self.tty:  # a wrapped line would break the cursor arithmetic
            width = shutil.get_terminal_size((120, 24)).columns
            text = "\n".join(line[: width - 1] for line in text.splitlines())
        print(text, file=self.out, flush=True)
        self._drawn_lines = text.count("\n") + 1 if self.tty and not final else 0


def live_text(rows: list[dict[str, Any]], tau_of: Callable[[dict[str, Any]], float | None], width: int, planned: int | None) -> str:
    """The live table (one line per trial, with its time to onset) and the sweep's expected end."""
    table = []
    for r in sorted(rows, key=lambda r: r["trial_id"]):
        r = {**r, "tau_predicted": tau_of(r) if r.get("status") == "running" else None}
        table.append({**r, "onset_in_s": onset_in_s(r)})
    text = format_table(table, LIVE_COLUMNS)
    not_started = max(0, planned - len(rows)) if planned is not None else 0
    left = sweep_left_s(table, width, not_started)
    if left is not None:
        text += f"\nexpected end in {duration(left)} (running trials to their expected onset or budget at their speed so far)"
    return text
