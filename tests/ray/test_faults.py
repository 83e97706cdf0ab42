"""Faults (issue 6): nothing finished is lost, nothing is counted twice, no Ray process outlives us.

Each fault is injected for real: a trial's worker and the driver are SIGKILLed by pid, a trial
diverges with an absurd learning rate, a trial raises (the RAYDIFF_FAULT_AT_STEP test hook of
trial.py), a writer is SIGKILLed mid-write. Sweeps run as `python -m raydiff.cli` subprocesses on
tiny trials (8×8 digits, 8-channel U-Net, onset in a few hundred steps); every process they start
is tracked through /proc and must be gone afterwards.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from processes import Command, wait_for
from raydiff import results
from raydiff.results_folder import load_sweep

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="tracks processes through /proc")

EVERY = 50  # evaluation interval of the tiny trials, in steps
TINY = {
    "sweep": {"name": "faults", "resources": {"cpu": 1, "gpu": 0}, "max_failures": 1,
              "checkpoint_every": 2, "checkpoint_minutes": None},  # sparse checkpoints, as clusters use them
    "data": {"dataset": "digits", "n_train": 8, "n_test": 64},
    "model": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "emb_dim": 32},
    "diffusion": {"objective": "ddpm", "sample_steps": 10},
    "train": {"batch_size": 32, "lr": 5e-3, "max_steps": 1500, "device": "cpu"},
    "eval": {"every_steps": EVERY, "num_samples": 64, "fid_every": 0, "probe_images": 16},
    "stop": {"mem_frac_threshold": 0.1, "patience": 2},
}


def write_space(tmp: Path, name: str, grid: dict, **sections) -> Path:
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["sweep"]["name"] = name
    raw["grid"] = grid
    for section, change in sections.items():
        raw[section].update(change)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_rows(sweep: Path) -> tuple[list[dict], dict[str, list[dict]]]:
    s = load_sweep(str(sweep))  # the one reader of a results folder
    return s.trials, s.evals


def try_rows(sweep: Path):
    try:
        return read_rows(sweep)
    except Exception:  # noqa: BLE001 - the folder may not exist yet
        return [], {}


def assert_rows_whole(rows: list[dict], last_step: int) -> None:
    """One row per evaluation from the first to `last_step`: none lost, none twice."""
    steps = [r["step"] for r in rows]
    assert steps == list(range(EVERY, last_step + 1, EVERY)), steps


# ---------------------------------------------------------------------------------- tests


def test_restored_run_continues_the_same_random_stream():
    """Same seed, same τ_mem: a run restored from a mid-way checkpoint reproduces the
    uninterrupted run exactly (CPU, 1 thread), FID's feature net included (its init must not
    consume the restored RNG)."""
    from raydiff.config import apply_overrides, search_space_from_dict
    from raydiff.trial import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        raw = {k: dict(v) for k, v in TINY.items()}
        base = search_space_from_dict(raw).base
        cfg = apply_overrides(base, {"train.max_steps": 2 * EVERY, "eval.fid_every": 1, "eval.fid_samples": 64})

        def run(state=None):
            rows, saved = [], {}

            def report(m, checkpoint):
                rows.append({k: m.get(k) for k in ("step", "loss", "train_loss", "test_loss", "mem_frac", "fid")})
                buf = io.BytesIO()
                torch.save(checkpoint(), buf)
                saved[m["step"]] = buf.getvalue()

            train(cfg, report, state)
            return rows, saved

        whole, saved = run()
        resumed, _ = run(torch.load(io.BytesIO(saved[EVERY]), weights_only=False))
    finally:
        torch.set_num_threads(threads)
    assert [r["step"] for r in resumed] == [2 * EVERY] and resumed[0]["fid"] is not None
    assert resumed == whole[1:]


@pytest.mark.ray
def test_worker_killed_mid_trial_restarts_from_checkpoint(tmp_path):
    """Two identical trials (save_samples changes only what is stored); one has its worker
    SIGKILLed mid-trial. Ray restarts it from its last checkpoint (max_failures 1) and it reaches
    the uninterrupted twin's τ_mem, its rows whole."""
    space = write_space(tmp_path, "wkill", {"eval.save_samples": [0, 1]})
    sweep = tmp_path / "store" / "wkill"
    cmd = Command(tmp_path, "sweep", str(space), "--storage", str(tmp_path / "store"), log="wkill")

    def a_trial_past_its_first_checkpoints():
        for tid, rows in try_rows(sweep)[1].items():
            if len(rows) >= 2:
                return tid, rows[-1]["pid"]

    victim, pid = wait_for(a_trial_past_its_first_checkpoints, 240, "two evaluations of a trial", cmd)
    os.kill(pid, signal.SIGKILL)
    assert cmd.wait() == 0, cmd.log()
    cmd.assert_no_survivors()

    trials, evals = read_rows(sweep)
    assert len(trials) == 2 and {t["status"] for t in trials} == {"memorized"}, trials
    by_id = {t["trial_id"]: t for t in trials}
    twin = next(t for t in by_id if t != victim)
    tau, tau_twin = by_id[victim]["tau_mem_step"], by_id[twin]["tau_mem_step"]
    assert abs(tau - tau_twin) <= EVERY, (tau, tau_twin)

    rows = evals[victim]
    assert_rows_whole(rows, by_id[victim]["steps_done"])
    assert {r["pid"] for r in rows} >= {pid} and len({r["pid"] for r in rows}) == 2  # it ran in a new process
    resumed = {r["resumed_from_step"] for r in rows if r["pid"] != pid}
    assert len(resumed) == 1 and resumed.pop() >= 2 * EVERY  # from its checkpoint, not from scratch
    # deterministic on CPU with one thread: the curves agree evaluation by evaluation
    twin_rows = {r["step"]: r for r in evals[twin]}
    for r in rows:
        assert r["mem_frac"] == twin_rows[r["step"]]["mem_frac"], (r, twin_rows[r["step"]])
        assert r["train_loss"] == pytest.approx(twin_rows[r["step"]]["train_loss"], rel=1e-6)


@pytest.mark.ray
def test_driver_killed_then_resumed_finishes_only_the_unfinished(tmp_path):
    storage = tmp_path / "store"
    space = write_space(tmp_path, "dkill", {"data.n_train": [4, 6]}, sweep={"max_concurrent": 1})
    sweep = storage / "dkill"
    cmd = Command(tmp_path, "sweep", str(space), "--storage", str(storage), log="first")
    trials = wait_for(lambda: try_rows(sweep)[0], 240, "the first finished trial", cmd)
    cmd.kill()  # SIGKILL: no handler can run
    cmd.wait()
    assert len(trials) == 1
    first = trials[0]["trial_id"]
    first_row = trials[0]
    first_metrics = (sweep / "metrics" / f"{first}.parquet").read_bytes()

    again = Command(tmp_path, "sweep", str(space), "--storage", str(storage), log="again")
    assert again.wait() == 2 and "already exists" in again.err.read_text()  # refuses; checks before Ray starts

    resumed = Command(tmp_path, "sweep", "--resume", "dkill", "--storage", str(storage), log="resume")
    assert resumed.wait() == 0, resumed.log()
    resumed.assert_no_survivors()
    # Ray's GCS and raylet die with a SIGKILLed driver at once, its agents and idle workers once
    # their GCS client gives up (about a minute: docs/troubleshooting.md, "Resume and faults")
    cmd.assert_no_survivors(grace_s=150)

    trials, evals = read_rows(sweep)
    assert sorted(t["trial_id"] for t in trials) == sorted(evals) and len(trials) == 2  # one row per trial
    assert next(t for t in trials if t["trial_id"] == first) == first_row  # not rerun ...
    assert (sweep / "metrics" / f"{first}.parquet").read_bytes() == first_metrics  # ... not rewritten
    for t in trials:
        assert t["status"] == "memorized", t
        assert_rows_whole(evals[t["trial_id"]], t["steps_done"])

    # The narrow window: the driver dies after a trial's last report (its row written) but before
    # Tune snapshots the trial as finished. Resumed, the trial finds its final checkpoint and
    # reports that result again instead of training on: files unchanged.
    files = {p: p.read_bytes() for p in [sweep / results.TRIALS_FILE, *sorted((sweep / "metrics").iterdir())]}
    mark_running(sweep, first)
    window = Command(tmp_path, "sweep", "--resume", "dkill", "--storage", str(storage), log="window")
    assert window.wait() == 0, window.log()
    assert {p: p.read_bytes() for p in files} == files


def mark_running(sweep: Path, trial_id: str) -> None:
    """Make Tune's newest experiment snapshot say the trial is still running (Ray 2.60's format)."""
    state = sorted(sweep.glob("experiment_state-*.json"))[-1]
    raw = json.loads(state.read_text())
    for entry in raw["trial_data"]:
        trial = json.loads(entry[0])
        if trial["trial_id"] == trial_id:
            assert trial["status"] == "TERMINATED"
            trial["status"] = "RUNNING"
            entry[0] = json.dumps(trial)
    state.write_text(json.dumps(raw))


@pytest.mark.ray
def test_divergence_and_error_end_their_trial_and_the_sweep_goes_on(tmp_path):
    # lr 1e3 without gradient clipping: the loss is NaN by the first check (step 50); lr 4e-3 trips
    # the fault hook at step 2·EVERY; lr 5e-3 runs to its onset.
    space = write_space(
        tmp_path, "broken", {"train.lr": [5e-3, 1e3, 4e-3]}, train={"grad_clip": None}, sweep={"max_failures": 0}
    )  # fmt: skip
    env = {"RAYDIFF_FAULT_AT_STEP": f"{2 * EVERY}:train.lr=0.004"}
    cmd = Command(tmp_path, "sweep", str(space), "--storage", str(tmp_path / "store"), env=env, log="broken")
    assert cmd.wait() == 3, cmd.log()  # the sweep finished, one trial errored: exit 3, named in one line
    assert "raydiff: failed: 1 of 3 trials" in cmd.log() and f"injected fault at step {2 * EVERY}" in cmd.log()
    cmd.assert_no_survivors()

    trials, evals = read_rows(tmp_path / "store" / "broken")
    by_lr = {t["lr"]: t for t in trials}
    assert sorted(by_lr) == [4e-3, 5e-3, 1e3]
    assert by_lr[5e-3]["status"] == "memorized"
    diverged = by_lr[1e3]
    assert diverged["status"] == "diverged" and diverged["steps_done"] == EVERY, diverged
    assert f"at step {EVERY}" in diverged["stop_reason"] and diverged["tau_mem_step"] is None
    failed = by_lr[4e-3]
    assert failed["status"] == "error", failed
    assert f"injected fault at step {2 * EVERY}" in failed["stop_reason"]
    assert f"injected fault at step {2 * EVERY}" in failed["error"]
    assert_rows_whole(evals[failed["trial_id"]], EVERY)  # what it reported before failing is kept


@pytest.mark.ray
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_sweep_and_ray(tmp_path, sig):
    """SIGTERM and Ctrl+C: Tune saves its state, Ray is shut down, the exit says how to resume."""
    space = write_space(tmp_path, "sig", {"data.n_train": [64]}, stop={"mem_frac_threshold": 1.0, "patience": 50})
    sweep = tmp_path / "store" / "sig"
    cmd = Command(tmp_path, "sweep", str(space), "--storage", str(tmp_path / "store"), log="sig")
    wait_for(lambda: try_rows(sweep)[1], 240, "a first evaluation", cmd)
    cmd.kill(sig)
    assert cmd.wait(timeout=120) == 130, cmd.log()
    cmd.assert_no_survivors()
    last = cmd.err.read_text().strip().splitlines()[-1]
    assert last.startswith("raydiff: interrupted") and "--resume sig" in last, cmd.log()
    assert try_rows(sweep)[0] == []  # no trial recorded as finished


def test_writer_killed_mid_write_leaves_the_previous_file(tmp_path):
    """A real crash during an atomic write: SIGKILL a process that rewrites trials.parquet in a
    loop; the file is always some complete version (the temporary it leaves is hidden)."""
    script = f"""
import sys
from raydiff import results
fs, root = results.filesystem({str(tmp_path)!r})
path = results.join(root, results.TRIALS_FILE)
version = 0
while True:
    version += 1
    rows = [{{"trial_id": f"t{{i}}", "status": "budget", "steps_done": version, "config": "x" * 2000}} for i in range(3000)]
    results.write_atomic(results.table(rows, results.TRIALS_SCHEMA, {{}}), fs, path)
    print(version, flush=True)
"""
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # a few whole versions, then kill it in the middle of another
        assert p.stdout.readline()
    time.sleep(0.05)
    p.kill()
    p.wait()
    fs, root = results.filesystem(str(tmp_path))
    t = results.read_trials(fs, root)
    assert t.num_rows == 3000 and len(set(t.column("steps_done").to_pylist())) == 1
    assert all(f.name.startswith(".") for f in tmp_path.iterdir() if f.name != results.TRIALS_FILE)
