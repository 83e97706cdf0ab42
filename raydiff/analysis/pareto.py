"""The Optuna search's outcome in `raydiff analyze`: the best trials, or the Pareto front.

Each finished trial's objectives are recomputed from its recorded evaluations with the same
function the trials report them with (`raydiff.metrics.objectives`), so the values here are the
ones Optuna was told. A τ_mem without an onset is the steps done, a lower bound, shown as "≥".
Diverged and failed trials have no objectives and are left out.
"""

from __future__ import annotations

import math
from typing import Any

from raydiff.metrics.objectives import objective_values
from raydiff.results_folder import Sweep


def objectives_of(sweep: Sweep) -> list[tuple[str, str]]:
    """[(metric, mode)] of the sweep's Optuna search; [] for a grid."""
    space = getattr(sweep, "search_space", None) or {}
    search = space.get("search") if isinstance(space, dict) else None
    if not isinstance(search, dict):
        return []
    return [(o["metric"], o["mode"]) for o in search.get("objective") or []]


def trial_values(sweep: Sweep, metrics: list[str]) -> list[dict[str, Any]]:
    """Per finished, non-failed trial: its axes, the objective values, and whether τ is censored."""
    out = []
    for t in sweep.trials:
        if t["status"] not in ("memorized", "budget"):
            continue
        evals = sorted(sweep.evals.get(t["trial_id"], []), key=lambda r: r["step"])
        vals = objective_values(evals, t["tau_mem_step"], t["steps_done"], t["batch_size"])
        out.append({
            "trial_id": t["trial_id"], "n_train": t["n_train"], "batch_size": t["batch_size"], "lr": t["lr"],
            "censored": bool(vals["objective_tau_mem_censored"]), **{m: vals[f"objective_{m}"] for m in metrics},
        })  # fmt: skip
    return out


def dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    """a is at least as good as b on every objective and better on one."""
    sign = [1.0 if m == "min" else -1.0 for m in modes]
    a2 = [s * v for s, v in zip(sign, a)]
    b2 = [s * v for s, v in zip(sign, b)]
    return all(x <= y for x, y in zip(a2, b2)) and any(x < y for x, y in zip(a2, b2))


def pareto_front(values: list[list[float]], modes: list[str]) -> list[int]:
    """Indices of the non-dominated points, in input order."""
    return [i for i, v in enumerate(values) if not any(dominates(w, v, modes) for j, w in enumerate(values) if j != i)]


def _fmt(metric: str, v: float, censored: bool) -> str:
    if not math.isfinite(v):
        return "-"
    if metric.startswith("tau_mem"):
        return f"{'≥' if censored else ''}{v:.0f}"
    return f"{v:.2f}"


def section(sweep: Sweep) -> str | None:
    objectives = objectives_of(sweep)
    if not objectives:
        return None
    metrics, modes = [m for m, _ in objectives], [m for _, m in objectives]
    rows = trial_values(sweep, metrics)
    head = "Optuna search: " + ", ".join(f"{mode}imize {m}" for m, mode in objectives)
    if not rows:
        return f"{head}\n  no finished trial with objectives yet"
    if len(metrics) == 1:
        sign = 1.0 if modes[0] == "min" else -1.0
        chosen = sorted(range(len(rows)), key=lambda i: sign * rows[i][metrics[0]])[:5]
        title = f"best {len(chosen)} of {len(rows)} trials"
    else:
        chosen = pareto_front([[r[m] for m in metrics] for r in rows], modes)
        chosen.sort(key=lambda i: rows[i][metrics[0]])
        title = f"Pareto front: {len(chosen)} of {len(rows)} trials"
    cols = ["trial", "N", "B", "lr", *metrics]
    cells = [cols] + [
        [rows[i]["trial_id"], str(rows[i]["n_train"]), str(rows[i]["batch_size"]), f"{rows[i]['lr']:.1e}"]
        + [_fmt(m, rows[i][m], rows[i]["censored"]) for m in metrics]
        for i in chosen
    ]
    widths = [max(len(c[k]) for c in cells) for k in range(len(cols))]
    table = "\n".join("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)
    note = "\n  (≥: no onset within the budget; τ_mem is the steps done, a lower bound)" if any(rows[i]["censored"] for i in chosen) else ""
    return f"{head}\n{title}\n{table}{note}"
