"""The budget planner's record in `raydiff analyze`: predicted against actual τ_mem.

For every trial that started with a prediction (trials.parquet `tau_mem_predicted`), the ratio
actual / predicted; for a trial without an onset the actual is only known to exceed the steps
it ran ("> steps"). A planned trial that ended at its budget without an onset was cut off by
the plan (the fixed budget might have seen its onset): counted and named.
"""

from __future__ import annotations

import math

import numpy as np

from raydiff.results_folder import Sweep


def section(sweep: Sweep) -> str | None:
    rows = [t for t in sweep.trials if t.get("tau_mem_predicted") is not None or t.get("budget_planned")]
    if not rows:
        return None
    lines = ["Budget planner: predicted vs actual τ_mem (steps)"]
    cells = [["trial", "N", "B", "lr", "predicted", "actual", "actual/pred", "budget", "planned"]]
    log_ratios = []
    for t in sorted(rows, key=lambda r: (r["n_train"], r["trial_id"])):
        pred, tau = t.get("tau_mem_predicted"), t.get("tau_mem_step")
        if tau is not None and pred:
            log_ratios.append(math.log(tau / pred))
            actual, ratio = str(tau), f"{tau / pred:.2f}"
        else:
            actual, ratio = (f"> {t['steps_done']}" if t["status"] == "budget" else t["status"]), "-"
        cells.append([
            t["trial_id"], str(t["n_train"]), str(t["batch_size"]), f"{t['lr']:.1e}",
            "-" if pred is None else f"{pred:.0f}", actual, ratio, str(t.get("budget_steps") or "-"),
            "yes" if t.get("budget_planned") else "no",
        ])  # fmt: skip
    widths = [max(len(c[k]) for c in cells) for k in range(len(cells[0]))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    if log_ratios:
        err = float(np.exp(np.median(np.abs(log_ratios))))
        lines.append(f"  median prediction error: ×{err:.2f} over {len(log_ratios)} trial(s) with an onset")
    cut = [t["trial_id"] for t in rows if t.get("budget_planned") and t["status"] == "budget"]
    if cut:
        lines.append(f"  cut off by a planned budget without an onset: {', '.join(cut)}")
    return "\n".join(lines)
