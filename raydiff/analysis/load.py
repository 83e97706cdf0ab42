"""Reading a results folder for analysis: trials, evaluations, and which trials still run."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs

from raydiff import results
from raydiff.errors import UserError


@dataclass(frozen=True)
class Sweep:
    uri: str
    trials: list[dict]  # finished trials (trials.parquet rows)
    evals: dict[str, list[dict]]  # trial_id → evaluation rows, by step
    running: list[str]  # trials with evaluations but no row in trials.parquet yet
    metadata: dict[str, str]


def load_sweep(uri: str) -> Sweep:
    fs, root = results.filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"no such results folder: {uri}")
    if info.type != pafs.FileType.Directory or not results.is_results_dir(fs, root):
        raise UserError(f"{uri} is not a raydiff results folder (no {results.TRIALS_FILE} or {results.METRICS_DIR}/)")
    trials_t = results.read_trials(fs, root)
    metrics_t = results.read_metrics(fs, root)
    meta = {k.decode(): v.decode() for k, v in (trials_t.schema.metadata or {}).items()}
    trials = trials_t.to_pylist()
    evals: dict[str, list[dict]] = {}
    for row in metrics_t.to_pylist():
        evals.setdefault(row["trial_id"], []).append(row)
    done = {t["trial_id"] for t in trials}
    running = sorted(t for t in evals if t not in done)
    return Sweep(uri, trials, evals, running, meta)
