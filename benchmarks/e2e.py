"""7. The embedded default end to end: wall time of `raydiff sweep` (a fresh local Ray, every
trial, the results files) on this machine, with the load average around it. The full run also
times the default as it shipped before this round (ROUND_BEFORE: its FD measured in the training
loop), back to back with the default as it ships (FD on snapshots, measured by Ray tasks off the
loop); a sweep takes minutes: these two cannot be interleaved finely.

Each sweep is also put in units of one bare training step of the same model (a plain PyTorch
loop, same B, clip and EMA, one thread), measured just before and just after it, and its own
results give the measurement tax (Σ eval_s / Σ wall_s over its trials, split by kind of
evaluation) and the confirmation overshoot ((steps run − τ_mem) / τ_mem per trial).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import Section, config, default_space, loadavg, smoke_space
from benchmarks.framework import bare_rate
from raydiff import results
from raydiff.config import packaged_search_space
from raydiff.results_folder import load_sweep

# the default as it shipped on 2026-12-06: the same memorization schedule, its FD measured in
# fidelity-only evaluations inside the training loop
ROUND_BEFORE = {"eval.figures": "loop"}

ROOT = Path(__file__).resolve().parent.parent


def bare_step_seconds(quick: bool) -> float:
    """Seconds of one bare training step of the default's model (N=128, B=64, clip + EMA)."""
    cfg = config(smoke_space() if quick else default_space(), {"data.n_train": 8 if quick else 128})
    return 1.0 / bare_rate(cfg, 20, 20 if quick else 300, extras=True)


def sweep(space: str, storage: str, name: str, quick: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    unit0 = bare_step_seconds(quick)
    load0 = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raydiff.cli", "sweep", space, "--storage", storage, "--name", name],
                          capture_output=True, text=True, cwd=ROOT, env=env)  # fmt: skip
    sec = time.perf_counter() - t0
    load1 = loadavg()
    if proc.returncode != 0:
        raise RuntimeError(f"raydiff sweep {space} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    unit = (unit0 + bare_step_seconds(quick)) / 2
    sw = load_sweep(os.path.join(storage, name))
    trials, rows = sw.trials, [r for rs in sw.evals.values() for r in rs]
    wall = sum(t["wall_s"] or 0.0 for t in trials)
    # the metrics rows' kinds: refinement rows are marked; fidelity-only rows measure no mem_frac
    # (figure rows merged in from snapshots between evaluations carry no mem_frac, nor eval_s)
    kind = lambda r: "refinement" if r.get("refined") else "fidelity-only" if r.get("mem_frac") is None else "memorization"  # noqa: E731
    eval_s = {k: sum(r.get("eval_s") or 0.0 for r in rows if kind(r) == k) for k in ("memorization", "fidelity-only", "refinement")}
    # the figures measured off the loop (eval.figures: snapshots), by Ray tasks beside the trials
    fs, root = results.filesystem(os.path.join(storage, name))
    figures = results.read_figures(fs, root).to_pylist()
    over = {t["n_train"]: (t["steps_done"] - t["tau_mem_step"]) / t["tau_mem_step"] for t in trials if t["tau_mem_step"]}
    return {
        "seconds": sec, "load_before": load0, "load_after": load1, "trials": len(trials),
        "memorized": sum(t["status"] == "memorized" for t in trials),
        "steps": sum(t["steps_done"] or 0 for t in trials),
        "taus": {t["n_train"]: t["tau_mem_step"] for t in trials},
        "bare_step_s": unit, "units": sec / unit, "trials_wall_s": wall, "eval_s": eval_s,
        "measurement_tax": sum(eval_s.values()) / wall if wall else float("nan"),
        "figures_s": sum(r.get("measure_s") or 0.0 for r in figures), "figure_rows": len(figures),
        "overshoot": over, "overshoot_max": max(over.values(), default=float("nan")),
        "samples": sum(r.get("mem_samples") or 0 for r in rows),
    }  # fmt: skip


def before_space_file(folder: str) -> str:
    """The packaged default with the settings it shipped with before this round (ROUND_BEFORE)."""
    raw = yaml.safe_load(packaged_search_space("default").read_text())
    for key, value in ROUND_BEFORE.items():
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = value
    path = os.path.join(folder, "default-before.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def run(quick: bool) -> Section:
    with tempfile.TemporaryDirectory(prefix="raydiff-e2e-") as storage:
        if quick:
            runs = {"smoke (quick)": sweep("smoke", storage, "smoke", quick=True)}
        else:
            runs = {"default, before": sweep(before_space_file(storage), storage, "before"),
                    "default, after": sweep("default", storage, "after")}  # fmt: skip
    rows = [[k, v["seconds"], v["units"], v["trials"], v["memorized"], v["steps"], str(v["taus"]),
             f"{v['measurement_tax']:.1%}", f"{v['overshoot_max']:.1%}", f"{v['load_before']:.1f} → {v['load_after']:.1f}"]
            for k, v in runs.items()]  # fmt: skip
    main = runs["smoke (quick)" if quick else "default, after"]
    head = (f"`raydiff sweep` ({'smoke' if quick else 'default'}): {main['seconds'] / 60:.1f} min = "
            f"{main['units']:,.0f} bare steps of its model, measurement {main['measurement_tax']:.1%} of trial time")  # fmt: skip
    if not quick:
        b = runs["default, before"]
        head += f" (FD in the loop, as shipped 2026-12-06: {b['seconds'] / 60:.1f} min, {b['units']:,.0f}, {b['measurement_tax']:.1%})"
    e = main["eval_s"]
    return Section(
        "7", "Embedded default end to end: `raydiff sweep`", "≤ 4,400 bare steps, measurement ≤ 5% of trial time (issue 21)", head,
        None if quick else (main["units"] <= 4400 and main["measurement_tax"] <= 0.05),
        ["sweep", "seconds", "in bare steps", "trials", "memorized", "Σ steps", "τ_mem by N", "measurement tax",
         "overshoot (max)", "load avg (1 min)"], rows,  # fmt: skip
        notes=[
            "a fresh local Ray per sweep (2 trials at a time on 2 cores, 1 CPU each), results written to a temporary folder",
            f"bare step: a plain PyTorch loop of the default's model (N=128, B=64, clip + EMA, one thread), "
            f"{main['bare_step_s'] * 1e3:.1f} ms (mean of the runs just before and just after the sweep)",
            f"measurement tax = Σ eval_s / Σ wall_s over the sweep's trials ({main['trials_wall_s']:.0f} s): "
            f"memorization evaluations {e['memorization']:.1f} s, fidelity-only (FD) {e['fidelity-only']:.1f} s, "
            f"refinement {e['refinement']:.1f} s; {main['samples']:,} memorization samples generated in all; "
            f"off the loop, {main['figure_rows']} figure rows measured on snapshots by Ray tasks in {main['figures_s']:.1f} s",
            "overshoot = (steps run − τ_mem) / τ_mem by N: "
            + ", ".join(f"N={n}: {v:.1%}" for n, v in sorted(main["overshoot"].items())),
        ],
        data=runs,
    )  # fmt: skip
