"""`raydiff analyze`: the trial table, the scaling-law fit and the figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from raydiff.analysis import figures
from raydiff.analysis.fits import SYMBOLS, PowerLawFit, fit_power_law, varied_axes
from raydiff.analysis.load import Sweep, load_sweep


def trial_table(sweep: Sweep) -> str:
    head = f"{'trial':>14} {'N':>6} {'params':>9} {'B':>4} {'lr':>8} {'status':>10} {'tau_mem':>8} {'best_fid':>8}"
    lines = [head]
    for t in sorted(sweep.trials, key=lambda r: (r["n_train"], r["batch_size"], r["lr"], r["trial_id"])):
        tau = "-" if t["tau_mem_step"] is None else str(t["tau_mem_step"])
        fid = "-" if t["best_fid"] is None else f"{t['best_fid']:.2f}"
        lines.append(
            f"{t['trial_id']:>14} {t['n_train']:>6} {t['params']:>9} {t['batch_size']:>4} {t['lr']:>8.1e}"
            f" {t['status']:>10} {tau:>8} {fid:>8}"
        )
    for tid in sweep.running:
        last = sweep.evals[tid][-1]
        lines.append(f"{tid:>14} {'':>6} {'':>9} {'':>4} {'':>8} {'running':>10} {'-':>8}   (step {last['step']})")
    return "\n".join(lines)


def fit_sweep(sweep: Sweep, n_boot: int = 2000) -> tuple[PowerLawFit | None, str]:
    """Joint fit over the varied axes, on trials with an onset; the rest are named, not used."""
    onset = [t for t in sweep.trials if t["status"] == "memorized" and t["tau_mem_step"]]
    censored = [t["trial_id"] for t in sweep.trials if t["status"] == "budget"]
    axes = varied_axes(onset)
    if not axes:
        return None, "no fit: the trials with an onset vary no axis (N, B, lr, params)"
    try:
        fit = fit_power_law(
            {a: np.array([t[a] for t in onset], dtype=float) for a in axes},
            np.array([t["tau_mem_step"] for t in onset], dtype=float),
            n_boot=n_boot, excluded=censored,
        )  # fmt: skip
    except ValueError as e:
        return None, f"no fit: {e}"
    return fit, format_fit(fit)


def format_fit(fit: PowerLawFit) -> str:
    rhs = " · ".join(f"{SYMBOLS.get(c.axis, c.axis)}^{c.name}" for c in fit.coefficients)
    lines = [f"fit: tau_mem ∝ {rhs}   (least squares in log space, {fit.n_trials} trials, R² = {fit.r2:.3f})"]
    pct = int(round(fit.level * 100))
    for c in fit.coefficients:
        lines.append(f"  {c.name:>6} ({SYMBOLS.get(c.axis, c.axis)}) = {c.value:+.3f}   {pct}% bootstrap CI [{c.lo:+.3f}, {c.hi:+.3f}]")
    if fit.excluded:
        lines.append(f"  censored (no onset within budget, not fitted): {', '.join(fit.excluded)}")
    return "\n".join(lines)


def analyze(uri: str, out_dir: str | None = None, out=sys.stdout) -> Path:
    sweep = load_sweep(uri)
    out_path = Path(out_dir) if out_dir else (Path(uri) / "analysis" if "://" not in uri else Path("analysis"))
    print(trial_table(sweep), file=out)
    if sweep.running:
        print(f"still running: {len(sweep.running)} trial(s): {', '.join(sweep.running)}", file=out)
    fit, text = fit_sweep(sweep)
    print(text, file=out)
    out_path.mkdir(parents=True, exist_ok=True)
    written = []
    if fit is not None and "n_train" in fit.axes:
        written.append(figures.tau_vs_n(sweep, fit, out_path / "tau_vs_n.png"))
    if sweep.evals:
        written.append(figures.mem_frac_vs_step(sweep, out_path / "mem_frac_vs_step.png"))
    (out_path / "fits.json").write_text(json.dumps(fit.to_dict() if fit else None, indent=1))
    written.append(out_path / "fits.json")
    for p in written:
        print(f"wrote {p}", file=out)
    return out_path
