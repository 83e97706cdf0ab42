"""The driver-side writer of the results contract.

A Ray Tune callback: each reported evaluation becomes a row of metrics/<trial>.parquet, each
finished trial a row of trials.parquet. Writing on the driver means one writer per file (no
races between trials) and works for any storage the driver can reach, local or s3://. Rows are
keyed by step and trials by id, so a trial restarted from a checkpoint, or a sweep resumed after
the driver died, replaces rows instead of duplicating them.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ray import tune

from raydiff import measures, results
from raydiff.config import ExperimentConfig, SearchSpace, normalized_time
from raydiff.ledger import SamplesWriter
from raydiff.metrics.stop import final_status
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


class ResultsCallback(tune.Callback):
    def __init__(self, space: SearchSpace, storage_uri: str, metadata: dict[str, str]):
        self.space = space
        self.uri = storage_uri  # <storage>/<sweep>
        self.metadata = metadata
        self.minima = space.minima()
        self.samples = SamplesWriter(storage_uri, metadata)  # samples/<trial>/<step>.parquet: the ledger
        self._init_state()

    def _init_state(self) -> None:
        self.evals: dict[str, dict[int, dict[str, Any]]] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.final: set[str] = set()  # trials that ended in an earlier run of this sweep: their rows stand
        # files the store refused (a trial id for its metrics file, TRIALS_FILE for trials.parquet):
        # their rows stay here and are written again at every later write, once the store is back
        self.unwritten: dict[str, str] = {}  # file key → the store's error, first line

    def __getstate__(self):  # rows live in the files, not in the pickled experiment state
        state = self.__dict__.copy()
        state.update(evals={}, last={}, trials={}, unwritten={})
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
        for s in [s for s in rows if s >= row["step"]]:
            del rows[s]
        rows[row["step"]] = row
        self._write_metrics(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = self.last.get(trial.trial_id) or dict(trial.last_result or {})
        decision = final_status(last)  # the decision the trial reported (train() decided it once)
        self._finish(trial, self.config_of(trial), last, decision.status, decision.reason)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        last = self.last.get(trial.trial_id) or dict(trial.last_result or {})
        error = _error_text(trial)
        message = _last_line(error) if error else "trial failed (no error text kept)"
        self._finish(trial, self.config_of(trial), last, "error", message, error=str(error) if error else message)

    def _finish(self, trial, cfg, last, status, reason, error=None) -> None:
        if trial.trial_id in self.final:
            return
        evals = sorted(self.evals.get(trial.trial_id, {}).values(), key=lambda r: r["step"])
        row = trial_row(trial.trial_id, cfg, last, evals, self.minima, status, reason, error)
        row.update(planned_columns(trial.config))  # budget planner's record
        before = self.trials.get(trial.trial_id)
        self.trials[trial.trial_id] = row
        if before is not None and _same(before, row, results.trials_schema()):
            return  # finished again after a resume, identically: leave the file as it is
        self._write(results.TRIALS_FILE)

    def _write_metrics(self, trial_id: str) -> None:
        self._write(trial_id)

    def _write(self, key: str) -> None:
        """Write one file (and retry those the store refused before); a store that does not
        answer keeps the rows here, and the sweep goes on: its trials need no store to train."""
        for k in [key, *[k for k in self.unwritten if k != key]]:
            try:
                self._write_file(k)
            except OSError as e:
                if not self.unwritten:
                    print(f"raydiff: storage {self.uri} refused a write ({results.first_line(e)}); rows kept, retried at every result", flush=True)
                self.unwritten[k] = results.first_line(e)
                return  # the store is down: the others wait for the next write
            self.unwritten.pop(k, None)

    def _write_file(self, key: str) -> None:
        fs, root = results.filesystem(self.uri)
        if key == results.TRIALS_FILE:
            rows = sorted(self.trials.values(), key=lambda r: r["trial_id"])
            results.write_atomic(results.table(rows, results.trials_schema(), self.metadata), fs, results.join(root, results.TRIALS_FILE))
            return
        rows = [self.evals[key][s] for s in sorted(self.evals[key])]
        path = results.join(root, results.METRICS_DIR, f"{key}.parquet")
        results.write_atomic(results.table(rows, results.metrics_schema(), self.metadata), fs, path)

    def flush(self) -> None:
        """Write what the store refused so far (at the sweep's end); leaves `unwritten` empty or not."""
        if self.unwritten:
            self._write(next(iter(self.unwritten)))

    def on_experiment_end(self, trials, **info) -> None:
        self.flush()


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
