"""Reading a results folder for analysis: trials, evaluations, provenance, and what is still running.

A sweep in progress is a normal input: `trials.parquet` may not exist yet, a metrics file may
belong to a trial that has no row in it (still running), and the search space may plan trials
that have not started. Only a folder that is not a results folder, or a Parquet file that cannot
be read, is an error (a one-line UserError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from raydiff import results
from raydiff.errors import UserError

FINAL = ("memorized", "budget", "diverged", "error")


@dataclass(frozen=True)
class Sweep:
    uri: str
    trials: list[dict]  # finished trials (trials.parquet rows)
    evals: dict[str, list[dict]]  # trial_id → evaluation rows, by step
    running: list[str]  # trials with evaluations but no row in trials.parquet yet
    metadata: dict[str, str]
    search_space: dict[str, Any] | None = None  # the sweep's search space (plain form), if recorded
    planned: int | None = None  # trials the search space plans, if known
    notes: list[str] = field(default_factory=list)  # what could not be read, said once
    minima: dict[str, float] | None = None  # the search space's N_min, B_min, η_min

    @property
    def name(self) -> str:
        if self.search_space and isinstance(self.search_space.get("sweep"), dict):
            return str(self.search_space["sweep"].get("name") or "")
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def versions(self) -> dict[str, str]:
        try:
            return json.loads(self.metadata.get("raydiff.versions", "{}"))
        except json.JSONDecodeError:
            return {}

    @property
    def git_commit(self) -> str:
        return self.metadata.get("raydiff.git_commit", "unknown")

    @property
    def not_started(self) -> int | None:
        if self.planned is None:
            return None
        return max(0, self.planned - len(self.trials) - len(self.running))

    def trial(self, trial_id: str) -> dict | None:
        return next((t for t in self.trials if t["trial_id"] == trial_id), None)


def load_sweep(uri: str) -> Sweep:
    fs, root = results.filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"no such results folder: {uri}")
    if info.type != pafs.FileType.Directory or not results.is_results_dir(fs, root):
        raise UserError(
            f"{uri} is not a raydiff results folder (no {results.TRIALS_FILE}, {results.METRICS_DIR}/"
            f" or {results.SPACE_FILE})"
        )
    trials_t = results.read_trials(fs, root)
    metrics_t = results.read_metrics(fs, root)
    missing = [c for c in ("trial_id", "status", "n_train") if c not in trials_t.column_names]
    if missing:
        raise UserError(f"{results.join(root, results.TRIALS_FILE)} lacks the column(s) {', '.join(missing)}")
    if len(metrics_t) and not {"trial_id", "step"} <= set(metrics_t.column_names):
        raise UserError(f"the metrics files under {results.join(root, results.METRICS_DIR)} lack trial_id/step")
    # provenance: trials.parquet when it exists, else any metrics file (they carry the same keys)
    schema_meta = trials_t.schema.metadata or metrics_t.schema.metadata or {}
    meta = {k.decode(): v.decode() for k, v in schema_meta.items()}
    trials = [_complete(r) for r in trials_t.to_pylist()]
    evals: dict[str, list[dict]] = {}
    for row in metrics_t.to_pylist():
        evals.setdefault(row["trial_id"], []).append(row)
    done = {t["trial_id"] for t in trials}
    running = sorted(t for t in evals if t not in done)
    space, notes = _search_space(fs, root, meta)
    planned, minima = _plan(space, notes)
    return Sweep(uri, trials, evals, running, meta, space, planned, notes, minima)


def _complete(row: dict) -> dict:
    """A trials row with every contract column present (older files may lack the newer ones)."""
    for f in results.TRIALS_SCHEMA:
        row.setdefault(f.name, None)
    return row


def _search_space(fs: pafs.FileSystem, root: str, meta: dict[str, str]) -> tuple[dict | None, list[str]]:
    text = meta.get("raydiff.search_space")
    notes: list[str] = []
    if text is None:
        path = results.join(root, results.SPACE_FILE)
        if fs.get_file_info(path).type == pafs.FileType.File:
            with fs.open_input_stream(path) as f:
                text = f.readall().decode()
    if text is None:
        return None, notes
    try:
        return json.loads(text), notes
    except json.JSONDecodeError:
        notes.append("the recorded search space is not valid JSON; planned trials unknown")
        return None, notes


def _plan(space: dict | None, notes: list[str]) -> tuple[int | None, dict[str, float] | None]:
    """How many trials the recorded search space plans, and its N_min, B_min, η_min."""
    if space is None:
        return None, None
    from raydiff.config import search_space_from_dict

    try:
        parsed = search_space_from_dict(space)
        search = getattr(parsed, "search", None)  # an Optuna search plans num_samples trials, not grid points
        return (search.num_samples if search is not None else len(parsed.points())), parsed.minima()
    except UserError as e:
        notes.append(f"the recorded search space no longer validates ({e}); planned trials unknown")
        return None, None


def reference_minima(sweep: Sweep) -> dict[str, float]:
    """N_min, B_min, η_min of the normalized time: the search space's (as the sweep wrote
    tau_mem_normalized), else the smallest values among the trials that landed."""
    if sweep.minima is not None:
        return sweep.minima
    out = {}
    for axis in ("n_train", "batch_size", "lr"):
        vals = [t[axis] for t in sweep.trials if t.get(axis) is not None]
        out[axis] = min(vals) if vals else 1.0
    return out
