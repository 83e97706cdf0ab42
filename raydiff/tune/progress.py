"""What the sweep prints while it runs.

One line when a trial finishes, and a compact table of every trial: redrawn in place on a
terminal, printed at most once a minute when stdout is a file or a pipe, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray import tune

from raydiff.config import StopConfig
from raydiff.tune.callback import overrides_of
from raydiff.tune.stopper import decide


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("trial", "trial_id", "s"), ("N", "n_train", "d"), ("B", "batch_size", "d"), ("lr", "lr", ".0e"),
        ("step", "step", "d"), ("mem_frac", "mem_frac", ".3f"), ("FID", "fid", ".2f"),
        ("status", "status", "s"), ("tau_mem", "tau_mem_step", "d"),
    ]  # fmt: skip
    cells = [[name for name, _, _ in cols]] + [[_fmt(r.get(k), spec) for _, k, spec in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


class ProgressCallback(tune.Callback):
    def __init__(self, stop: StopConfig, out=sys.stdout, interval_s: float | None = None):
        self.stop = stop
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.interval_s = interval_s if interval_s is not None else (2.0 if self.tty else 60.0)
        self.rows: dict[str, dict[str, Any]] = {}
        self._last_print = 0.0
        self._lines = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["out"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.out = sys.stdout

    def _row(self, trial) -> dict[str, Any]:
        if trial.trial_id not in self.rows:
            ov = overrides_of(trial.config)
            self.rows[trial.trial_id] = {"trial_id": trial.trial_id, "status": "running", **{k.split(".")[-1]: v for k, v in ov.items()}}
        return self.rows[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        for k in ("n_train", "batch_size", "lr", "step", "mem_frac", "tau_mem_step"):
            if result.get(k) is not None:
                row[k] = result[k]
        if result.get("fid") is not None:
            row["fid"] = result["fid"]
        self._maybe_print()

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        last = trial.last_result or {}
        decision = decide(last, self.stop)
        row["status"] = decision.status if decision else "budget"
        tau = last.get("tau_mem_step")
        msg = f"τ_mem = step {tau}" if tau is not None and row["status"] == "memorized" else row["status"]
        self._print_line(f"raydiff: trial {trial.trial_id} (N={row.get('n_train')}) finished: {msg}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._row(trial)["status"] = "error"
        self._print_line(f"raydiff: trial {trial.trial_id} failed (see trials.parquet, column error)")

    def on_experiment_end(self, trials, **info):
        self._print_table(force=True)

    def _print_line(self, text: str) -> None:
        if self.out is None:
            return
        if self.tty and self._lines:
            self.out.write(f"\x1b[{self._lines}F\x1b[J")
            self._lines = 0
        print(text, file=self.out, flush=True)
        self._maybe_print()

    def _maybe_print(self) -> None:
        if time.monotonic() - self._last_print >= self.interval_s:
            self._print_table()

    def _print_table(self, force: bool = False) -> None:
        if self.out is None or not self.rows:
            return
        self._last_print = time.monotonic()
        text = format_table(sorted(self.rows.values(), key=lambda r: r["trial_id"]))
        if self.tty and self._lines and not force:
            self.out.write(f"\x1b[{self._lines}F\x1b[J")
        print(text, file=self.out, flush=True)
        self._lines = text.count("\n") + 1 if self.tty and not force else 0
