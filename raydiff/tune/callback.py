"""The driver-side writer of the results contract.

A Ray Tune callback: each reported evaluation becomes a row of metrics/<trial>.parquet, each
finished trial a row of trials.parquet. Writing on the driver means one writer per file (no
races between trials) and works for any storage the driver can reach, local or s3://. Rows are
keyed by step and trials by id, so a trial restarted from a checkpoint, or a sweep resumed after
the driver died, replaces rows instead of duplicating them.

The driver's work per report is O(1), whatever the trial's length and the sweep's size: a report
carries no history (training/reports.py), and its row is written as a part file of its own
(metrics/<trial>.<step>.part.parquet, results.metrics_part_path), compacted into
metrics/<trial>.parquet when the trial ends. Only a trial restarted from a checkpoint, which
reports again steps it had reported, has its whole file rewritten (rare). trials.parquet, which
holds every finished trial, is rewritten at most every `trials_every_s` seconds and at the end.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from ray import tune

from raydiff import measures, results
from raydiff.config import ExperimentConfig, SearchSpace, normalized_time
from raydiff.ledger import SamplesWriter
from raydiff.metrics.stop import final_status, reported
from raydiff.models import model_name
from raydiff.tune.dryrun import config_json
from raydiff.tune.planner import planned_columns

def eval_keys() -> list[str]:
    """The report keys a metrics row copies: every column of the metrics schema (measures registered
    beyond the built-in ones included), less the trial id and the decoded samples."""
    return [f.name for f in results.metrics_schema() if f.name not in ("trial_id", "samples")]


def overrides_of(trial_config: dict[str, Any]) -> dict[str, Any]:
    """The dotted-key overrides a trial runs with (grid points sit under "point")."""
    out = dict(trial_config.get("point") or {})
    out.update({k: v for k, v in trial_config.items() if "." in k})
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def metric_row(trial_id: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """One evaluation as a metrics row; None for reports that are not evaluations."""
    if "train_loss" not in result:
        return None
    # list columns arrive as tuples (the trainable's `for_tune`): back to lists, as read from Parquet
    row = {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, result.get(k)) for k in eval_keys())}
    row["trial_id"] = trial_id
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v) and k != "loss":
            row[k] = None  # NaN in a metric means "not measured" in the contract's columns
    if result.get("samples_npy_b64"):
        import base64

        row["samples"] = base64.b64decode(result["samples_npy_b64"])
    return row


def trial_row(
    trial_id: str, cfg: ExperimentConfig, last: dict[str, Any], evals: list[dict[str, Any]], minima: dict[str, float],
    status: str, reason: str, error: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    tau = last.get("tau_mem_step")
    n, b, lr = cfg.data.n_train, cfg.batch, cfg.train.lr
    fids = [(r["fid"], r["step"]) for r in evals if _num(r.get("fid")) is not None]
    best = min(fids) if fids else (None, None)
    return {
        "trial_id": trial_id,
        "status": status,
        "stop_reason": reason,
        "dataset": cfg.data.dataset,
        "n_train": n,
        "model": model_name(cfg.model),
        "params": last.get("params"),
        "batch_size": b,
        "lr": lr,
        "objective": cfg.diffusion.objective,
        "seed": cfg.train.seed,
        "steps_done": last.get("step", 0),
        "tau_mem_step": tau if status == "memorized" else None,
        "tau_mem_images": tau * b if (tau is not None and status == "memorized") else None,
        "tau_mem_normalized": normalized_time(None if tau is None else float(tau), n, b, lr, minima) if status == "memorized" else None,
        "tau_mem_seconds": last.get("tau_mem_seconds") if status == "memorized" else None,
        "best_fid": best[0],
        "best_fid_step": best[1],
        "node_id": last.get("node_id"),
        **{d.tau_column: last.get(d.tau_column) for d in measures.definitions()},  # τ by each onset definition
        "budget_steps": last.get("budget_steps", cfg.budget_steps),
        "budget_reason": last.get("budget_reason", cfg.budget_reason),
        "wall_s": last.get("wall_s"),
        "error": error,
        "config": config_json(cfg),
    }


TRIALS_EVERY_S = 5.0  # trials.parquet is rewritten whole (every finished trial): at most this often, and at the end


class ResultsCallback(tune.Callback):
    def __init__(self, space: SearchSpace, storage_uri: str, metadata: dict[str, str], trials_every_s: float = TRIALS_EVERY_S):
        self.space = space
        self.uri = storage_uri  # <storage>/<sweep>
        self.metadata = metadata
        self.minima = space.minima()
        self.samples = SamplesWriter(storage_uri, metadata)  # samples/<trial>/<step>.parquet: the ledger
        self.trials_every_s = trials_every_s
        self._init_state()

    def _init_state(self) -> None:
        self.evals: dict[str, dict[int, dict[str, Any]]] = {}
        self.parts: dict[str, set[int]] = {}  # trial → steps of its part files in the store
        self.last: dict[str, dict[str, Any]] = {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.final: set[str] = set()  # trials that ended in an earlier run of this sweep: their rows stand
        self.trials_dirty, self.trials_written = False, -math.inf  # rows not in trials.parquet yet; when it was written
        # files the store refused (a trial id for its metrics, TRIALS_FILE for trials.parquet):
        # their rows stay here and are written again at every later write, once the store is back
        # (a trial's whole file then: it holds the rows its refused parts would have)
        self.unwritten: dict[str, str] = {}  # file key → the store's error, first line

    def __getstate__(self):  # rows live in the files, not in the pickled experiment state
        state = self.__dict__.copy()
        state.update(evals={}, parts={}, last={}, trials={}, trials_dirty=False, unwritten={})
        return state

    def setup(self, **info) -> None:
        """Load what an earlier run of this sweep already wrote (resume)."""
        self._init_state()
        fs, root = results.filesystem(self.uri)
        for row in results.read_trials(fs, root).to_pylist():
            self.trials[row["trial_id"]] = row
        # Tune may run such a trial again after a resume (its driver died before Tune saved that
        # the trial had ended): what it reports then changes neither file
        self.final = set(self.trials)
        self.samples.files = {}  # listed again from the store when each trial next reports
        for row in results.read_metrics(fs, root).to_pylist():
            self.evals.setdefault(row["trial_id"], {})[row["step"]] = row
        for path in results.metric_files(fs, root):  # parts of trials that were running when the driver stopped
            step = results.part_step(path)
            if step is not None:
                name = path.rsplit("/", 1)[-1][: -len(results.PART_SUFFIX)].rpartition(".")[0]
                self.parts.setdefault(name, set()).add(step)

    def config_of(self, trial) -> ExperimentConfig:
        return self.space.experiment(overrides_of(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if trial.trial_id in self.final:
            return
        self.last[trial.trial_id] = result
        row = metric_row(trial.trial_id, result)
        if row is None:
            return
        self.samples.add(trial.trial_id, result)  # the evaluation's ledger, if it carries one (keyed by step)
        rows = self.evals.setdefault(trial.trial_id, {})
        if rows and max(rows) == row["step"] and _same(rows[row["step"]], row, results.metrics_schema(), ignore=("pid",)):
            return  # a finished trial's last result reported again (from a new process) after a resume
        # a restarted trial re-reports from its checkpoint: drop anything after that step too
        again = [s for s in rows if s >= row["step"]]
        for s in again:
            del rows[s]
        rows[row["step"]] = row
        if again:  # rare: the trial's whole file again, without the parts it replaces
            self._write(trial.trial_id, drop_from=row["step"])
        else:  # the common case: one small file for this row, whatever the trial's length
            self._write(trial.trial_id, part=row)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = self.last.get(trial.trial_id) or dict(trial.last_result or {})
        decision = final_status(last)  # the decision the trial reported (train() decided it once)
        self._finish(trial, self.config_of(trial), last, decision.status, decision.reason)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        last = self.last.get(trial.trial_id) or dict(trial.last_result or {})
        error = _error_text(trial)
        message = _last_line(error) if error else "trial failed (no error text kept)"
        self._finish(trial, self.config_of(trial), last, "error", message, error=str(error) if error else message)

    def on_experiment_end(self, trials, **info) -> None:
        """The sweep's end, or its interruption: trials.parquet gets every row it lacks. A trial
        that Tune restored as ended (its driver died after the trial ended, before trials.parquet
        was written again) gets its row here, from the last result Tune kept."""
        for trial in trials:
            if trial.trial_id in self.trials or not trial.last_result:
                continue
            if trial.status == "ERROR":
                self.on_trial_error(0, trials, trial)
            elif trial.status == "TERMINATED" and reported(trial.last_result) is not None:  # not one stopped by an interrupt
                self.on_trial_complete(0, trials, trial)
        self.flush()

    def on_step_end(self, iteration, trials, **info) -> None:
        self._write_trials()  # rows held back by the interval, once it has passed

    def _finish(self, trial, cfg, last, status, reason, error=None) -> None:
        if trial.trial_id in self.final:
            return
        # its rows into metrics/<trial>.parquet first: a trial in trials.parquet has its file whole
        if self.parts.get(trial.trial_id) or trial.trial_id in self.unwritten:
            self._write(trial.trial_id)
        evals = sorted(self.evals.get(trial.trial_id, {}).values(), key=lambda r: r["step"])
        row = trial_row(trial.trial_id, cfg, last, evals, self.minima, status, reason, error)
        row.update(planned_columns(trial.config))  # budget planner's record
        before = self.trials.get(trial.trial_id)
        self.trials[trial.trial_id] = row
        if before is not None and _same(before, row, results.trials_schema()):
            return  # finished again after a resume, identically: leave the file as it is
        self.trials_dirty = True
        self._write_trials()

    def _write_trials(self, force: bool = False) -> None:
        """trials.parquet with every finished trial: O(trials) bytes a write, so at most every
        `trials_every_s` seconds (a sweep of a thousand short trials would otherwise write
        O(trials²)), and always when `force`d (the sweep's end)."""
        if self.trials_dirty and (force or time.monotonic() - self.trials_written >= self.trials_every_s):
            self._write(results.TRIALS_FILE)

    def flush(self) -> None:
        """Write what is held back (trials.parquet's interval) or was refused by the store so far
        (at the sweep's end); leaves `unwritten` empty or not."""
        self._write_trials(force=True)
        if self.unwritten:
            self._write(next(iter(self.unwritten)))

    def _write(self, key: str, part: dict[str, Any] | None = None, drop_from: int | None = None) -> None:
        """Write one file (and retry those the store refused before); a store that does not
        answer keeps the rows here, and the sweep goes on: its trials need no store to train."""
        for k in [key, *[k for k in self.unwritten if k != key]]:
            try:
                self._write_file(k, part if k == key else None, drop_from if k == key else None)
            except OSError as e:
                if not self.unwritten:
                    print(f"raydiff: storage {self.uri} refused a write ({results.first_line(e)}); rows kept, retried at every result", flush=True)
                self.unwritten[k] = results.first_line(e)
                return  # the store is down: the others wait for the next write
            self.unwritten.pop(k, None)

    def _write_file(self, key: str, part: dict[str, Any] | None = None, drop_from: int | None = None) -> None:
        """trials.parquet (key TRIALS_FILE), or a trial's metrics: `part`, its newest row, as a part
        file of one row; else (an ended trial's compaction, a restarted trial that reported
        `drop_from` again, rows the store refused) its whole file, then its parts deleted. The
        parts at or after `drop_from` go first: a reader never sees a stale later row."""
        fs, root = results.filesystem(self.uri)
        schema = results.metrics_schema()
        if key == results.TRIALS_FILE:
            rows = sorted(self.trials.values(), key=lambda r: r["trial_id"])
            results.write_atomic(results.table(rows, results.trials_schema(), self.metadata), fs, results.join(root, results.TRIALS_FILE))
            self.trials_dirty, self.trials_written = False, time.monotonic()
            return
        if part is not None and key not in self.unwritten:
            results.write_atomic(results.table([part], schema, self.metadata), fs, results.metrics_part_path(root, key, part["step"]))
            self.parts.setdefault(key, set()).add(part["step"])
            return
        if drop_from is not None:
            self._delete_parts(fs, root, key, lambda s: s >= drop_from)
        rows = [self.evals[key][s] for s in sorted(self.evals.get(key, {}))]
        results.write_atomic(results.table(rows, schema, self.metadata), fs, results.metrics_path(root, key))
        self._delete_parts(fs, root, key, lambda s: True)

    def _delete_parts(self, fs, root: str, trial_id: str, which) -> None:
        steps = self.parts.get(trial_id, set())
        for s in sorted(s for s in steps if which(s)):
            try:
                fs.delete_file(results.metrics_part_path(root, trial_id, s))
            except FileNotFoundError:
                pass
            steps.discard(s)


def _error_text(trial) -> str | None:
    """The trial's error trace. Ray writes it on the driver before calling on_trial_error and
    copies it to the storage only later, so `trial.get_error()` (which reads the storage copy)
    is still empty here: read the driver's copy first."""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    error = trial.get_error()
    return str(error) if error else None


def _same(a: dict[str, Any], b: dict[str, Any], schema, ignore: tuple[str, ...] = ()) -> bool:
    """Two rows equal in every column of the schema (a row read back from Parquet has them all)."""
    return all(a.get(f.name) == b.get(f.name) for f in schema if f.name not in ignore)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else str(text)


__all__ = ["ResultsCallback", "metric_row", "trial_row"]
