"""Figures for `raydiff analyze` (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from raydiff.analysis.fits import PowerLawFit  # noqa: E402
from raydiff.analysis.load import Sweep  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def tau_vs_n(sweep: Sweep, fit: PowerLawFit, path: Path) -> Path:
    """τ_mem against N, log-log, with the fit line and its bootstrap band over α."""
    onset = [t for t in sweep.trials if t["status"] == "memorized" and t["tau_mem_step"]]
    n = np.array([t["n_train"] for t in onset], dtype=float)
    tau = np.array([t["tau_mem_step"] for t in onset], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(n, tau, color="C0", zorder=3, label="trials")
    grid = np.geomspace(n.min() * 0.8, n.max() * 1.25, 100)
    a = fit.coef("n_train")
    # other axes held at their geometric means: the line is the N-marginal of the joint fit
    base = np.exp(fit.intercept + sum(c.value * np.mean(np.log([t[c.axis] for t in onset])) for c in fit.coefficients if c.axis != "n_train"))
    pivot = np.exp(np.mean(np.log(n)))
    line = base * grid**a.value
    ax.plot(grid, line, color="C1", label=f"fit: α = {a.value:.2f} [{a.lo:.2f}, {a.hi:.2f}]")
    at_pivot = base * pivot**a.value
    ax.fill_between(grid, at_pivot * (grid / pivot) ** a.lo, at_pivot * (grid / pivot) ** a.hi, color="C1", alpha=0.2, lw=0)
    for t in sweep.trials:
        if t["status"] == "budget":  # censored: onset later than the budget
            ax.scatter([t["n_train"]], [t["steps_done"]], marker="^", color="grey", label="no onset (budget)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training-set size N")
    ax.set_ylabel("τ_mem (optimizer steps)")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def mem_frac_vs_step(sweep: Sweep, path: Path) -> Path:
    """mem_frac (with its bootstrap band) against step, one curve per trial."""
    info = {t["trial_id"]: t for t in sweep.trials}
    fig, ax = plt.subplots(figsize=(6, 4))
    order = sorted(sweep.evals, key=lambda tid: (info.get(tid, {}).get("n_train") or 0, tid))
    cmap = plt.get_cmap("viridis", max(2, len(order)))
    for i, tid in enumerate(order):
        rows = [r for r in sweep.evals[tid] if r.get("mem_frac") is not None]
        if not rows:
            continue
        s = np.array([r["step"] for r in rows])
        m = np.array([r["mem_frac"] for r in rows])
        t = info.get(tid, {})
        label = f"N={t['n_train']}" if t else f"{tid} (running)"
        ax.plot(s, m, color=cmap(i), label=label)
        lo = np.array([r["mem_frac_lo"] if r["mem_frac_lo"] is not None else np.nan for r in rows])
        hi = np.array([r["mem_frac_hi"] if r["mem_frac_hi"] is not None else np.nan for r in rows])
        ax.fill_between(s, lo, hi, color=cmap(i), alpha=0.15, lw=0)
        if t.get("tau_mem_step"):
            ax.axvline(t["tau_mem_step"], color=cmap(i), ls=":", lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("memorized fraction (ratio < 1/3)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
