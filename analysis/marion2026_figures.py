"""Marion & Wu (2026)'s figure set from a raydiff results folder.

    python analysis/marion2026_figures.py RESULTS [--out DIR] [--censored auto|tobit|ols] [--boot N]

For every axis the sweep varied (N, P, B, η):
    axis_<axis>.png     the one-factor slice through the default point: memorized fraction and the
                        relative test−train loss gap against optimizer step (left) and against
                        normalized time T = step·(N_min/N)·(B/B_min)·(η/η_min) (right): the curves
                        collapse on the right where τ_mem ∝ N/(B·η), and do not for η (their finding)
    tau_vs_<axis>.png   τ_mem against the axis (log-log) on that slice, with the marginal power-law
                        fit and its bootstrap band
and collapse.png: every trial's curves against normalized time. Built on raydiff.analysis; the
numbers are those `raydiff analyze` prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raydiff.analysis import figures
from raydiff.analysis.fits import SYMBOLS, PowerLawFit
from raydiff.analysis.scaling import analyze_sweep, is_one_factor
from raydiff.errors import UserError
from raydiff.results_folder import load_sweep


def build(results: str, out: Path, censored: str = "exclude", n_boot: int = 2000) -> list[Path]:
    an = analyze_sweep(load_sweep(results), censored=censored, n_boot=n_boot, sensitivity=False)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for axis in sorted(an.axes, key=lambda a: ("n_train", "params", "batch_size", "lr").index(a)):
        p = figures.axis_curves(an, axis, out / f"axis_{axis}.png")
        if p:
            written.append(p)
        fit = an.marginal.get(axis) if len(an.axes) > 1 else an.joint
        fit = fit if isinstance(fit, PowerLawFit) else None
        # the trials the marginal fit used: the axis's line through the default point of a
        # one-factor sweep, every trial of a full grid
        pts = figures.axis_slice(an, axis) if is_one_factor(an.sweep) else None
        written.append(figures.tau_vs_axis(an, axis, out / f"tau_vs_{axis}.png", fit=fit, stats=pts))
        c = fit.coefs_text() if fit else (an.marginal.get(axis) or an.joint_note)
        print(f"{SYMBOLS[axis]}: {c}")
    p = figures.curves(an, out / "collapse.png", x="normalized", title="all trials against normalized time")
    if p:
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="results folder: <storage>/<sweep>")
    ap.add_argument("--out", help="output folder (default: RESULTS/analysis/marion2026)")
    ap.add_argument("--censored", choices=("auto", "tobit", "ols", "exclude"), default="auto")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.results) / "analysis" / "marion2026"
    try:
        for p in build(args.results, out, args.censored, args.boot):
            print(f"wrote {p}")
    except UserError as e:
        print(f"marion2026_figures: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
