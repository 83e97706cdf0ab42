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

# the live table of `raydiff sweep` adds the estimated time to each running trial's onset
LIVE_COLUMNS = [*COLUMNS, ("onset in", "onset_in_s", "duration")]


def duration(seconds: float) -> str:
    """45 s → '45s', 750 → '12m30s', 11,100 → '3h05m'; ≤ 0 → 'due' (the onset is expected by now)."""
    if seconds <= 0:
        return "due"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if spec == "duration":
        return duration(float(v))
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]] = COLUMNS) -> str:
    """One line per trial, columns right-aligned, '-' where a value is not known (yet)."""
    cells = [[h for h, _, _ in columns]] + [[_fmt(r.get(k), spec) for _, k, spec in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


# ------------------------------------------------------------------- estimated times (pure)


def _speed(row: dict[str, Any]) -> float | None:
    """The trial's steps per second so far (its latest step over its wall time)."""
    step, wall = row.get("step"), row.get("wall_s")
    return step / wall if step and wall and wall > 0 else None


def onset_in_s(row: dict[str, Any]) -> float | None:
    """Seconds until a running trial reaches its expected onset τ̂ (`tau_predicted`, the budget
    planner's fit) at its speed so far; ≤ 0 once past τ̂; None without τ̂ or a speed."""
    tau, speed = row.get("tau_predicted"), _speed(row)
    if row.get("status") != "running" or tau is None or speed is None:
        return None
    return (tau - row["step"]) / speed


def expected_steps(row: dict[str, Any]) -> float | None:
    """Where a trial is expected to stop: at τ̂ when the fit predicts an onset inside its budget,
    else at its budget (past τ̂ already: the budget too, the onset not yet seen)."""
    budget, tau = row.get("budget_steps"), row.get("tau_predicted")
    if budget is None:
        return None
    return float(tau) if tau is not None and row.get("step", 0) < tau < budget else float(budget)


def sweep_left_s(rows: list[dict[str, Any]], width: int, not_started: int = 0) -> float | None:
    """Seconds until the sweep is expected to end: the running trials' remaining time (to τ̂ or
    their budget, at their own speed), and each trial not started as long as the mean running or
    finished one, `width` at a time; never less than the longest running trial's remainder.
    None while no running trial has a speed and a budget."""
    left, whole = [], []
    for r in rows:
        speed, end = _speed(r), expected_steps(r)
        if r.get("status") == "running" and speed and end is not None:
            left.append(max(0.0, (end - r["step"]) / speed))
            whole.append(end / speed)
        elif r.get("status") not in ("running", "pending") and r.get("wall_s"):
            whole.append(float(r["wall_s"]))  # a finished trial: how long it took
    if not left:
        return None
    pending = not_started + sum(r.get("status") == "pending" for r in rows)
    mean = sum(whole) / len(whole)
    return max(max(left), (sum(left) + pending * mean) / max(1, width))


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
