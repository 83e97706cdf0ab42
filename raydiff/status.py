"""`raydiff status [RESULTS]`: the sweep's trial table, from its results folder alone.

Works while the sweep runs or after, from any machine that can read the storage (local or
s3://): finished trials come from trials.parquet, running ones from their latest row in
metrics/ (which carries the trial's N, B, η, budget and onset so far), both read by
raydiff.results_folder, the reader `raydiff analyze` uses too. The live table of
`raydiff sweep` (tune/progress.py) has the same columns, formatted by `format_table`.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from raydiff import ledger, results
from raydiff.analysis.fits import TIME_AXES
from raydiff.errors import UserError
from raydiff.results_folder import NotResultsFolder, Sweep, load_sweep, newest_sweep

# (header, row key, format)
COLUMNS = [
    ("trial", "trial_id", "s"), ("N", "n_train", "d"), ("B", "batch_size", "d"), ("lr", "lr", ".0e"),
    ("step", "step", "d"), ("budget", "budget_steps", "d"), ("mem_frac", "mem_frac", ".3f"),
    ("FID", "fid", ".2f"), ("status", "status", "s"), ("tau_mem", "tau_mem_step", "d"),
    ("copied", "copied_images", "d"),  # distinct training images a running trial has copied (its ledger, samples/)
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
    try:
        sweep = load_sweep(uri)
    except NotResultsFolder:  # status's wording (the reader's also names search_space.json)
        raise UserError(f"{uri} is not a raydiff results folder (no {results.TRIALS_FILE} or {results.METRICS_DIR}/)") from None
    rows = _rows(sweep)
    facts = {
        "finished": sum(r["status"] != "running" for r in rows.values()),
        "running": sum(r["status"] == "running" for r in rows.values()),
        "planned": sweep.planned,
        "last_write_age_s": time.time() - sweep.metrics_mtime.timestamp() if sweep.metrics_mtime is not None else None,
        "waiting": sweep.waiting,
    }
    return sorted(rows.values(), key=lambda r: r["trial_id"]), facts


def _rows(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """trial_id → table row: a finished trial from trials.parquet (its FID and mem_frac from its
    last evaluations), a running one from its latest metrics rows."""
    rows: dict[str, dict[str, Any]] = {}
    for t in sweep.trials:
        ev = sweep.evals.get(t["trial_id"], [])
        rows[t["trial_id"]] = {
            "trial_id": t["trial_id"], **{a: t[a] for a in TIME_AXES}, "step": t["steps_done"],
            "budget_steps": t["budget_steps"], "mem_frac": _last(ev, "mem_frac"), "fid": _last(ev, "fid"),
            "status": t["status"], "tau_mem_step": t["tau_mem_step"],
        }  # fmt: skip
    fs, root = results.filesystem(sweep.uri)
    for tid in sweep.running:
        ev = sweep.evals[tid]
        row = {k: _last(ev, k) for k in (*TIME_AXES, "budget_steps", "mem_frac", "fid", "tau_mem_step")}
        rows[tid] = {**row, "trial_id": tid, "step": ev[-1]["step"], "status": "running", "copied_images": _copied(fs, root, tid)}
    return rows


def _copied(fs, root: str, trial_id: str) -> int | None:
    """Distinct images the trial's primary test (pixel, else the first in its ledger) has copied."""
    counts = ledger.copied_images(fs, root, trial_id)
    return counts.get("pixel", next(iter(counts.values()), None))


def footer(facts: dict[str, Any]) -> str:
    parts = [f"{facts['finished']} finished", f"{facts['running']} running"]
    if facts.get("planned") is not None:
        parts.append(f"{max(0, facts['planned'] - facts['finished'] - facts['running'])} not started")
    text = ", ".join(parts) + (f" (of {facts['planned']} trials)" if facts.get("planned") is not None else "")
    if facts.get("last_write_age_s") is not None:
        text += f"; last evaluation written {facts['last_write_age_s']:.0f} s ago"
    waiting = facts.get("waiting")
    if waiting and (facts["running"] or (facts.get("planned") or 0) > facts["finished"]):
        at = waiting.get("at")
        said = f" ({time.time() - at:.0f} s ago)" if isinstance(at, (int, float)) else ""
        text += f"\nwaiting{said}: {waiting['message']}"
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
