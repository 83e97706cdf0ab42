"""`raydiff status [RESULTS]`: the sweep's trial table, from its results folder alone.

Works while the sweep runs or after, from any machine that can read the storage (local or
s3://): finished trials come from trials.parquet, running ones from their latest row in
metrics/ (which carries the trial's N, B, η, budget and onset so far). The live table of
`raydiff sweep` (tune/progress.py) has the same columns, formatted by `format_table`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raydiff import results
from raydiff.errors import UserError

# (header, row key, format)
COLUMNS = [
    ("trial", "trial_id", "s"), ("N", "n_train", "d"), ("B", "batch_size", "d"), ("lr", "lr", ".0e"),
    ("step", "step", "d"), ("budget", "budget_steps", "d"), ("mem_frac", "mem_frac", ".3f"),
    ("FID", "fid", ".2f"), ("status", "status", "s"), ("tau_mem", "tau_mem_step", "d"),
]  # fmt: skip


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """One line per trial, columns right-aligned, '-' where a value is not known (yet)."""
    cells = [[h for h, _, _ in COLUMNS]] + [[_fmt(r.get(k), spec) for _, k, spec in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def _last(rows: list[dict], key: str) -> Any:
    return next((r[key] for r in reversed(rows) if r.get(key) is not None and r[key] == r[key]), None)


def status_rows(uri: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(table rows, facts for the footer) of the sweep at `uri`."""
    fs, root = results.filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"no such results folder: {uri}")
    if info.type != pafs.FileType.Directory or not results.is_results_dir(fs, root):
        raise UserError(f"{uri} is not a raydiff results folder (no {results.TRIALS_FILE} or {results.METRICS_DIR}/)")
    cols = ["trial_id", "step", "mem_frac", "fid", "n_train", "batch_size", "lr", "budget_steps", "tau_mem_step"]
    files = results.metric_files(fs, root)
    evals: dict[str, list[dict]] = {}
    for path in files:
        t = results.read_table(fs, path)
        present = [c for c in cols if c in t.column_names]  # files from before these columns lack some
        for r in t.select(present).to_pylist():
            evals.setdefault(r["trial_id"], []).append(r)
    rows: dict[str, dict[str, Any]] = {}
    for t in results.read_trials(fs, root).to_pylist():
        ev = sorted(evals.get(t["trial_id"], []), key=lambda r: r["step"])
        rows[t["trial_id"]] = {
            "trial_id": t["trial_id"], "n_train": t["n_train"], "batch_size": t["batch_size"], "lr": t["lr"],
            "step": t["steps_done"], "budget_steps": t.get("budget_steps"), "mem_frac": _last(ev, "mem_frac"),
            "fid": _last(ev, "fid"), "status": t["status"], "tau_mem_step": t["tau_mem_step"],
        }  # fmt: skip
    for tid, ev in evals.items():
        if tid in rows:
            continue
        ev.sort(key=lambda r: r["step"])
        row = {k: _last(ev, k) for k in ("n_train", "batch_size", "lr", "budget_steps", "mem_frac", "fid", "tau_mem_step")}
        rows[tid] = {**row, "trial_id": tid, "step": ev[-1]["step"], "status": "running"}
    mtimes = [i.mtime for i in fs.get_file_info(files) if i.mtime is not None]
    facts = {
        "finished": sum(r["status"] != "running" for r in rows.values()),
        "running": sum(r["status"] == "running" for r in rows.values()),
        "planned": _planned_trials(fs, root),
        "last_write_age_s": time.time() - max(mtimes).timestamp() if mtimes else None,
    }
    return sorted(rows.values(), key=lambda r: r["trial_id"]), facts


def _planned_trials(fs: pafs.FileSystem, root: str) -> int | None:
    """How many trials the sweep will run, from its saved search space (None: unknown)."""
    path = results.join(root, results.SPACE_FILE)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    try:
        with fs.open_input_stream(path) as f:
            raw = json.loads(f.readall())
        from raydiff.config import search_space_from_dict

        space = search_space_from_dict(raw, source=path)
    except (UserError, ValueError, OSError):
        return None
    return space.search.num_samples if space.search is not None else len(space.points())


def newest_sweep(storage: str) -> str:
    """The results folder under `storage` written to most recently."""
    fs, root = results.filesystem(storage)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise UserError(f"no results folder given and no sweeps under {storage}")
    best, best_t = None, None
    for d in fs.get_file_info(pafs.FileSelector(root)):
        if d.type != pafs.FileType.Directory or not results.is_results_dir(fs, d.path):
            continue
        probe = fs.get_file_info([results.join(d.path, results.TRIALS_FILE), results.join(d.path, results.METRICS_DIR), d.path])
        t = max(i.mtime for i in probe if i.mtime is not None)
        if best_t is None or t > best_t:
            best, best_t = d.path, t
    if best is None:
        raise UserError(f"no results folder given and no sweeps under {storage}")
    return best if "://" not in storage else storage.rstrip("/") + "/" + Path(best).name


def footer(facts: dict[str, Any]) -> str:
    parts = [f"{facts['finished']} finished", f"{facts['running']} running"]
    if facts.get("planned") is not None:
        parts.append(f"{max(0, facts['planned'] - facts['finished'] - facts['running'])} not started")
    text = ", ".join(parts) + (f" (of {facts['planned']} trials)" if facts.get("planned") is not None else "")
    if facts.get("last_write_age_s") is not None:
        text += f"; last evaluation written {facts['last_write_age_s']:.0f} s ago"
    if facts["running"]:
        text += "\n'running' means no final row yet: the trial runs, or its sweep was interrupted (raydiff sweep --resume NAME)"
    return text


def print_status(uri: str | None, storage: str = "results", out=None) -> None:
    out = out or sys.stdout
    uri = uri or newest_sweep(storage)
    rows, facts = status_rows(uri)
    print(f"raydiff: sweep at {uri}", file=out)
    if rows:
        print(format_table(rows), file=out)
    print(footer(facts), file=out)
