"""7. The embedded default end to end: wall time of `raydiff sweep` (a fresh local Ray, every
trial, the results files) on this machine, with the load average around it. The full run also
times the default as it was before the speed-ups (its evaluation settings in BEFORE_EVAL), one
after the other (a sweep takes minutes: these two cannot be interleaved finely).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import BEFORE_EVAL, Section, loadavg
from raydiff import results
from raydiff.config import packaged_search_space

ROOT = Path(__file__).resolve().parent.parent


def sweep(space: str, storage: str, name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    load0 = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raydiff.cli", "sweep", space, "--storage", storage, "--name", name],
                          capture_output=True, text=True, cwd=ROOT, env=env)  # fmt: skip
    sec = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"raydiff sweep {space} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    fs, root = results.filesystem(results.join(storage, name))
    trials = results.read_trials(fs, root).to_pylist()
    return {
        "seconds": sec, "load_before": load0, "load_after": loadavg(), "trials": len(trials),
        "memorized": sum(t["status"] == "memorized" for t in trials),
        "steps": sum(t["steps_done"] or 0 for t in trials),
        "taus": {t["n_train"]: t["tau_mem_step"] for t in trials},
    }  # fmt: skip


def before_space_file(folder: str) -> str:
    """The packaged default with the evaluation settings it had before the speed-ups."""
    raw = yaml.safe_load(packaged_search_space("default").read_text())
    for key, value in BEFORE_EVAL.items():
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = value
    path = os.path.join(folder, "default-before.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def run(quick: bool) -> Section:
    with tempfile.TemporaryDirectory(prefix="raydiff-e2e-") as storage:
        if quick:
            runs = {"smoke (quick)": sweep("smoke", storage, "smoke")}
        else:
            runs = {"default, before": sweep(before_space_file(storage), storage, "before"),
                    "default, after": sweep("default", storage, "after")}  # fmt: skip
    rows = [[k, v["seconds"], v["trials"], v["memorized"], v["steps"], str(v["taus"]), f"{v['load_before']:.1f} → {v['load_after']:.1f}"]
            for k, v in runs.items()]  # fmt: skip
    main = runs["smoke (quick)" if quick else "default, after"]
    head = f"`raydiff sweep` ({'smoke' if quick else 'default'}): {main['seconds'] / 60:.1f} min"
    if not quick:
        head += f" (before the speed-ups: {runs['default, before']['seconds'] / 60:.1f} min)"
    return Section(
        "7", "Embedded default end to end: `raydiff sweep`", "≤ 10 min (push toward 5)", head,
        None if quick else main["seconds"] <= 600,
        ["sweep", "seconds", "trials", "memorized", "Σ steps", "τ_mem by N", "load avg (1 min)"], rows,
        notes=["a fresh local Ray per sweep (2 trials at a time on 2 cores, 1 CPU each), results written to a temporary folder"],
        data=runs,
    )  # fmt: skip
