"""Reading a results folder: trials, evaluations, provenance, and what is still running.

The one reader behind `raydiff status` and `raydiff analyze`. A sweep in progress is a normal
input: `trials.parquet` may not exist yet, a metrics file may belong to a trial that has no row
in it (still running), and the search space may plan trials that have not started. Only a folder
that is not a results folder, or a Parquet file that cannot be read, is an error (a one-line
UserError).

Modification times come from the store and may be missing (object stores such as S3 have no
folder times): every one of them is optional.
"""

from __future__ import annotations

import collections
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raydiff import results
from raydiff.analysis.fits import TIME_AXES
from raydiff.config import search_space_from_dict
from raydiff.errors import UserError


class NotResultsFolder(UserError):
    """The path exists but holds none of a results folder's files."""


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
    metrics_mtime: datetime.datetime | None = None  # the newest metrics file's (None: no file, or no time)
    trials_mtime: datetime.datetime | None = None  # trials.parquet's (None: no file, or no time)
    waiting: dict[str, Any] | None = None  # waiting.json: trials waiting for resources, and why

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

    @property
    def mtime(self) -> datetime.datetime | None:
        """When the sweep last wrote a results file (None: the store gives no times)."""
        return _newest([self.metrics_mtime, self.trials_mtime])

    def trial(self, trial_id: str) -> dict | None:
        return next((t for t in self.trials if t["trial_id"] == trial_id), None)


def load_sweep(uri: str) -> Sweep:
    try:
        return _load_sweep(uri)
    except OSError as e:  # the store answered the probe, then failed a read
        raise UserError(f"cannot read {uri}: {results.first_line(e)}") from None


def _load_sweep(uri: str) -> Sweep:
    fs, root = results.filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"no such results folder: {uri}")
    if info.type != pafs.FileType.Directory or not results.is_results_dir(fs, root):
        raise NotResultsFolder(
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
    results.check_one_sweep([(results.join(root, results.TRIALS_FILE), trials_t.schema.metadata),
                             *([("the metrics files", metrics_t.schema.metadata)] if len(metrics_t) else [])])  # fmt: skip
    check_no_duplicates(trials_t, metrics_t, root)
    # provenance: trials.parquet when it exists, else any metrics file (they carry the same keys)
    schema_meta = trials_t.schema.metadata or metrics_t.schema.metadata or {}
    meta = {k.decode(): v.decode() for k, v in schema_meta.items()}
    trials = [_complete(r) for r in trials_t.to_pylist()]
    evals: dict[str, list[dict]] = {}
    for row in metrics_t.to_pylist():
        evals.setdefault(row["trial_id"], []).append(row)
    merge_figures(evals, results.read_figures(fs, root).to_pylist())
    done = {t["trial_id"] for t in trials}
    running = sorted(t for t in evals if t not in done)
    space, notes = _search_space(fs, root, meta)
    planned, minima = _plan(space, notes)
    trials_info, *metric_infos = fs.get_file_info([results.join(root, results.TRIALS_FILE), *results.metric_files(fs, root)])
    return Sweep(
        uri, trials, evals, running, meta, space, planned, notes, minima,
        metrics_mtime=_newest([i.mtime for i in metric_infos]), trials_mtime=_newest([trials_info.mtime]),
        waiting=_waiting(fs, root),
    )  # fmt: skip


def merge_figures(evals: dict[str, list[dict]], figures: list[dict]) -> None:
    """Figures measured off the loop on snapshots (results.read_figures) into the evaluation rows:
    a snapshot on an evaluation's step fills that row's figure columns; one between evaluations
    becomes a fidelity-only row of its own, in step order, as the loop's own would have been."""
    provenance = set(results.FIGURES_KEYS) | {"protocol", "n_samples", "snapshot_step", "measure_s"}
    for f in figures:
        rows = evals.setdefault(f["trial_id"], [])
        values = {k: v for k, v in f.items() if k not in provenance and v is not None}
        row = next((r for r in rows if r["step"] == f["step"]), None)
        if row is None:
            rows.append({"trial_id": f["trial_id"], "step": f["step"], "fidelity_only": True, **values})
            rows.sort(key=lambda r: r["step"])
        else:
            row.update(values)


def check_no_duplicates(trials_t, metrics_t, root: str) -> None:
    """Each trial once in trials.parquet, each (trial, step) once in the metrics: a duplicated
    row would be fitted as a second, identical trial and narrow every interval."""
    twice = sorted(i for i, n in collections.Counter(trials_t.column("trial_id").to_pylist()).items() if n > 1)
    if twice:
        raise UserError(f"{results.join(root, results.TRIALS_FILE)} lists trial(s) {', '.join(twice[:3])} more than once: a results folder holds each trial once")
    if len(metrics_t):
        keys = list(zip(metrics_t.column("trial_id").to_pylist(), metrics_t.column("step").to_pylist()))
        if len(set(keys)) != len(keys):
            seen, dup = set(), None
            for k in keys:
                if k in seen:
                    dup = k
                    break
                seen.add(k)
            raise UserError(f"the metrics under {results.join(root, results.METRICS_DIR)} hold trial {dup[0]} step {dup[1]} more than once: each evaluation is one row")


def _newest(times: list[datetime.datetime | None]) -> datetime.datetime | None:
    """The latest of the times the store gave; None when it gave none."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _waiting(fs: pafs.FileSystem, root: str) -> dict[str, Any] | None:
    """The sweep's word on trials waiting for resources ({message, trials, at}), if it left one.
    A hint only: a file that cannot be read or parsed counts as none."""
    try:
        with fs.open_input_stream(results.join(root, results.WAITING_FILE)) as f:
            hint = json.loads(f.readall().decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(hint, dict) or not isinstance(hint.get("message"), str):
        return None
    return hint


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
        try:
            if fs.get_file_info(path).type == pafs.FileType.File:
                with fs.open_input_stream(path) as f:
                    text = f.readall().decode()
        except (OSError, UnicodeDecodeError) as e:
            notes.append(f"cannot read {path} ({e}); planned trials unknown")
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
    try:
        parsed = search_space_from_dict(space)
        search = getattr(parsed, "search", None)  # an Optuna search plans num_samples trials, not grid points
        return (search.num_samples if search is not None else len(parsed.points())), parsed.minima()
    except (UserError, ValueError) as e:
        notes.append(f"the recorded search space no longer validates ({e}); planned trials unknown")
        return None, None


def reference_minima(sweep: Sweep) -> dict[str, float]:
    """N_min, B_min, η_min of the normalized time: the search space's (as the sweep wrote
    tau_mem_normalized), else the smallest values among the trials that landed."""
    if sweep.minima is not None:
        return sweep.minima
    out = {}
    for axis in TIME_AXES:
        vals = [t[axis] for t in sweep.trials if t.get(axis) is not None]
        out[axis] = min(vals) if vals else 1.0
    return out


def newest_sweep(storage: str) -> str:
    """The results folder under `storage` written to most recently. A folder whose store gives
    no modification time (an object store's prefix) still counts, after every timed one."""
    fs, root = results.filesystem(storage)
    try:
        kind = fs.get_file_info(root).type
    except OSError as e:
        raise UserError(f"cannot read {storage}: {results.first_line(e)}") from None
    if kind != pafs.FileType.Directory:
        raise UserError(f"no results folder given and no sweeps under {storage}")
    best, best_t = None, None
    for d in sorted(fs.get_file_info(pafs.FileSelector(root)), key=lambda i: i.path):
        if d.type != pafs.FileType.Directory or not results.is_results_dir(fs, d.path):
            continue
        probe = fs.get_file_info([results.join(d.path, results.TRIALS_FILE), results.join(d.path, results.METRICS_DIR), d.path])
        t = _newest([i.mtime for i in probe])
        if t is None:  # no folder times (S3): the metrics files' own
            t = _newest([i.mtime for i in fs.get_file_info(results.metric_files(fs, d.path))])
        if best is None or (t is not None and (best_t is None or t > best_t)):
            best, best_t = d.path, t
    if best is None:
        raise UserError(f"no results folder given and no sweeps under {storage}")
    return best if "://" not in storage else storage.rstrip("/") + "/" + Path(best).name
