"""Section 10: the driver at scale — sweeps of 10, 100 and 1,000 instant trials through real Ray.

Each trial is a few optimizer steps of a tiny U-Net on 8 digits, evaluated every step (a dozen
reports), with a fractional CPU request so that many run at once. What is measured is the
driver's side, per reported result:

- its time in the results callback (`ResultsCallback`'s Tune hooks: on_trial_result,
  on_trial_complete, …), timed by wrappers this benchmark installs, not by production code;
- the bytes it writes per result: metrics files, trials.parquet, the ledger, Tune's experiment
  state (`TuneController.save_to_dir`: every file it rewrites in the driver's staging folder, each
  save) and the trials' checkpoints (their size on the store when Tune registers them);
- whether a result's size grows with its trial's history: the bytes of the report itself and of
  its metrics write at a trial's first evaluation and at its last.

Every sweep runs in a subprocess of its own (`python -m benchmarks.driver_scale --child …`), so
Ray starts fresh and `--tree PATH` can run another checkout's raydiff (e.g. main before this
change: `git worktree add ../before <commit>`) under the same instrumentation:

    python -m benchmarks.driver_scale --sizes 10,100,1000 [--before PATH]
    python -m benchmarks.run --only 10    # the section (sizes 10 and 100; --quick: 10)

Times depend on the machine's load; the bytes and the growth ratios do not.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STEPS, EVERY = 8, 1  # a dozen reports a trial: enough history for O(history) to show
CPU = 0.25  # per trial: 8 at once on 2 cores

SPACE = {
    "sweep": {"name": "scale", "resources": {"cpu": CPU, "gpu": 0}, "max_failures": 0},
    "data": {"dataset": "digits", "n_train": 8, "n_test": 16},
    "model": {"base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16},
    "diffusion": {"objective": "ddpm", "sample_steps": 2},
    "train": {"batch_size": 8, "lr": 5e-3, "max_steps": STEPS, "budget_scaling": "fixed", "device": "cpu"},
    "eval": {"every_steps": EVERY, "cadence": "uniform", "num_samples": 8, "fid_every": 0, "probe_images": 2,
             "probe_noise_levels": 1, "save_samples": 0, "refine_snapshots": 0},
    "stop": {"mem_frac_threshold": 1.0, "patience": 2},  # no onset: every trial reports to its budget
}  # fmt: skip


def space_file(folder: Path, n: int) -> Path:
    raw = json.loads(json.dumps(SPACE))
    raw["sweep"]["name"] = f"scale{n}"
    raw["grid"] = {"train.seed": list(range(n))}
    path = folder / f"scale{n}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ------------------------------------------------------------------ the child: one instrumented sweep


def kind_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if "/metrics/" in path:
        return "metrics part" if name.endswith(".part.parquet") else "metrics file"
    if name == "trials.parquet":
        return "trials.parquet"
    if "/samples/" in path:
        return "ledger"
    return "other results"


def child(space: str, storage: str, out: str) -> None:
    """Run one sweep with the driver's callback and writes instrumented; figures to `out` (JSON)."""
    from ray.tune.execution.tune_controller import TuneController

    from raydiff import cli, results
    from raydiff.tune import callback as cbmod

    fig: dict = {"hook_s": {}, "writes": {}, "results": 0, "report_bytes": {}, "metrics_write": {},
                 "state_saves": 0, "state_bytes": 0, "state_s": 0.0, "checkpoints": 0, "checkpoint_bytes": 0}  # fmt: skip
    writing: list[str | None] = [None]  # the trial whose result is being handled (for metrics_write)
    evals: dict[str, int] = {}

    def timed(name, fn):
        def wrapper(self, *a, **k):
            t0 = time.perf_counter()
            try:
                return fn(self, *a, **k)
            finally:
                fig["hook_s"][name] = fig["hook_s"].get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    on_result = cbmod.ResultsCallback.on_trial_result

    def on_trial_result(self, iteration, trials, trial, result, **info):
        fig["results"] += 1
        k = evals[trial.trial_id] = evals.get(trial.trial_id, 0) + 1
        fig["report_bytes"].setdefault(str(k), []).append(len(pickle.dumps(dict(result))))
        writing[0] = f"{trial.trial_id}#{k}"
        try:
            return on_result(self, iteration, trials, trial, result, **info)
        finally:
            writing[0] = None

    cbmod.ResultsCallback.on_trial_result = on_trial_result
    for name in ("setup", "on_trial_result", "on_trial_complete", "on_trial_error", "on_experiment_end", "on_step_end"):
        fn = getattr(cbmod.ResultsCallback, name, None)
        if fn is not None:
            setattr(cbmod.ResultsCallback, name, timed(name, fn))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        import pyarrow.fs as pafs

        infos = checkpoint.filesystem.get_file_info(pafs.FileSelector(checkpoint.path, recursive=True))
        fig["checkpoints"] += 1
        fig["checkpoint_bytes"] += sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)

    cbmod.ResultsCallback.on_checkpoint = on_checkpoint

    replace = results.replace_file

    def replace_file(fs, path, data):
        n = len(data) if isinstance(data, bytes) else data.size
        w = fig["writes"].setdefault(kind_of(path), [0, 0])
        w[0], w[1] = w[0] + 1, w[1] + n
        if writing[0] and "/metrics/" in path:
            trial, k = writing[0].split("#")
            fig["metrics_write"].setdefault(k, []).append(n)
        return replace(fs, path, data)

    results.replace_file = replace_file

    save = TuneController.save_to_dir

    def save_to_dir(self):
        t0 = time.perf_counter()
        save(self)
        fig["state_s"] += time.perf_counter() - t0
        d = Path(self._storage.experiment_driver_staging_path)
        fig["state_saves"] += 1
        fig["state_bytes"] += sum(p.stat().st_size for p in d.iterdir() if p.is_file())

    TuneController.save_to_dir = save_to_dir

    t0 = time.perf_counter()
    ru0 = os.times()
    code = cli.main(["sweep", space, "--storage", storage])
    ru1 = os.times()
    fig.update(code=code, wall_s=time.perf_counter() - t0, driver_cpu_s=(ru1.user - ru0.user) + (ru1.system - ru0.system))
    root = Path(storage) / Path(space).stem
    fig["final_files"] = sorted(p.name for p in (root / "metrics").iterdir()) if (root / "metrics").is_dir() else []
    fig["trials_rows"] = results.read_trials(*results.filesystem(str(root))).num_rows
    fig["metrics_rows"] = results.read_metrics(*results.filesystem(str(root))).num_rows
    import raydiff

    fig["raydiff"] = str(Path(raydiff.__file__).parent.parent)  # which checkout ran
    Path(out).write_text(json.dumps(fig))


# ------------------------------------------------------------------ the parent: sweeps side by side


def sweep(n: int, tree: Path, folder: Path, label: str, timeout_s: float = 3 * 3600) -> dict:
    space = space_file(folder, n)
    storage = folder / f"storage-{label}-{n}"
    out = folder / f"fig-{label}-{n}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)]), "RAY_AIR_NEW_OUTPUT": "0"}
    # run as a script, not with -m from ROOT: the first entry of sys.path is then benchmarks/, and
    # `tree`'s raydiff (first on PYTHONPATH) is the one imported
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(space), str(storage), str(out)]
    proc = subprocess.run(cmd, env=env, cwd=str(folder), capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{label} sweep of {n} trials failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    fig = json.loads(out.read_text())
    fig.update(n=n, label=label)
    return fig


def per_result(fig: dict) -> dict:
    r = max(1, fig["results"])
    w = fig["writes"]
    metrics = sum(w.get(k, [0, 0])[1] for k in ("metrics part", "metrics file"))
    first, last = "1", str(max(int(k) for k in fig["metrics_write"]))
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        "results": fig["results"],
        "callback_ms": 1000 * sum(fig["hook_s"].values()) / r,
        "on_result_ms": 1000 * fig["hook_s"].get("on_trial_result", 0.0) / r,
        "driver_cpu_ms": 1000 * fig["driver_cpu_s"] / r,
        "metrics_B": metrics / r,
        "trials_B": w.get("trials.parquet", [0, 0])[1] / r,
        "trials_writes": w.get("trials.parquet", [0, 0])[0],
        "state_B": fig["state_bytes"] / r,
        "state_saves": fig["state_saves"],
        "checkpoint_B": fig["checkpoint_bytes"] / r,
        "report_first_B": mean(fig["report_bytes"]["1"]),
        "report_last_B": mean(fig["report_bytes"][last]),
        "metrics_first_B": mean(fig["metrics_write"][first]),
        "metrics_last_B": mean(fig["metrics_write"][last]),
        "wall_s": fig["wall_s"],
        "ok": fig["code"] == 0 and fig["trials_rows"] == fig["n"] and fig["metrics_rows"] == fig["results"],
    }


COLUMNS = ["code", "trials", "results", "callback ms/result", "driver CPU ms/result", "metrics B/result",
           "trials.parquet B/result", "Tune state B/result", "checkpoint B/result",
           "report B first→last eval", "metrics write B first→last eval", "wall s", "complete"]  # fmt: skip


def row(fig: dict) -> list:
    p = per_result(fig)
    return [fig["label"], fig["n"], p["results"], f"{p['callback_ms']:.2f}", f"{p['driver_cpu_ms']:.1f}", f"{p['metrics_B']:.0f}",
            f"{p['trials_B']:.0f} ({p['trials_writes']} writes)", f"{p['state_B']:.0f} ({p['state_saves']} saves)",
            f"{p['checkpoint_B']:.0f}", f"{p['report_first_B']:.0f}→{p['report_last_B']:.0f}",
            f"{p['metrics_first_B']:.0f}→{p['metrics_last_B']:.0f}", f"{p['wall_s']:.0f}", "yes" if p["ok"] else "NO"]  # fmt: skip


def measure(sizes: list[int], before: Path | None, folder: Path) -> list[dict]:
    figs = []
    for n in sizes:
        figs.append(sweep(n, ROOT, folder, "after"))
        if before is not None and n <= 100:  # the old driver at 1,000 trials: not on a shared machine
            figs.append(sweep(n, before, folder, "before"))
    return figs


def section(figs: list[dict]):
    from benchmarks.common import Section

    after = [f for f in figs if f["label"] == "after"]
    growth = [per_result(f)["metrics_last_B"] / per_result(f)["metrics_first_B"] for f in after]
    big = max(after, key=lambda f: f["n"])
    small = min(after, key=lambda f: f["n"])
    ratio = per_result(big)["callback_ms"] / per_result(small)["callback_ms"]
    ok = all(per_result(f)["ok"] for f in after) and max(growth) < 1.2
    return Section(
        "10", "the driver at scale: instant trials through real Ray",
        "per-result bytes flat in the trial's history; every trial's rows written",
        f"metrics write at the last evaluation / at the first: {max(growth):.2f}×; callback time per result at "
        f"{big['n']} trials / at {small['n']}: {ratio:.2f}×", ok, COLUMNS, [row(f) for f in figs],
        [f"trials of {STEPS} steps, evaluated every {EVERY} (a report each), cpu {CPU} each; 'before' is the code before "
         "reports dropped their history and metrics rows went into part files",
         "metrics B/result counts every metrics write (parts, and the compacted file at each trial's end)"],
        data={"figures": figs},
    )  # fmt: skip


def run(quick: bool):
    before = os.environ.get("RAYDIFF_BEFORE_TREE")
    with tempfile.TemporaryDirectory(prefix="raydiff-scale-") as d:
        return section(measure([10] if quick else [10, 100], Path(before) if before else None, Path(d)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("SPACE", "STORAGE", "OUT"))
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--before", type=Path, help="another checkout whose raydiff runs the 'before' sweeps (≤ 100 trials)")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    a = ap.parse_args(argv)
    if a.child:
        import raydiff

        print(f"raydiff from {raydiff.__file__}", flush=True)
        child(*a.child)
        return 0
    from benchmarks.run import render_section

    with tempfile.TemporaryDirectory(prefix="raydiff-scale-") as d:
        figs = []
        for n in [int(x) for x in a.sizes.split(",")]:
            figs += measure([n], a.before, Path(d))
            print(render_section(section(figs)), flush=True)
            if a.json:
                a.json.write_text(json.dumps(figs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
