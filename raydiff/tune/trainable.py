"""The Ray Tune trainable: a thin wrapper that rebuilds the trial's config (checked on the driver),
restores its checkpoint if Ray hands one back, and runs `raydiff.trial.train` with a reporter that
adds where the trial ran (pid, node id) and saves the full training state beside every reported
evaluation."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from typing import Any

import ray
import torch
from ray import tune

from raydiff.config import apply_overrides, experiment_from_dict
from raydiff.metrics.stop import reported
from raydiff.trial import train
from raydiff.tune import ray_metrics
from raydiff.tune.callback import overrides_of

STATE_FILE = "state.pt"
REPORT_FILE = "report.pt"  # the metrics reported with the checkpoint


def for_tune(metrics: dict[str, Any]) -> dict[str, Any]:
    """The report as Ray gets it: lists (the evaluation history) become tuples. Ray's TensorBoard
    logger draws a histogram of every list and has tensorboardX print "NaN or Inf found in input
    tensor" for the history's unmeasured (None/NaN) entries; tuples it leaves alone, and the
    stopper, planner and results callback read either."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in metrics.items()}


def trainable(
    config: dict[str, Any], base: dict[str, Any], threads: int | None = None, cadence: "CheckpointCadence | None" = None,
    storage: str | None = None,
) -> None:  # fmt: skip
    # the driver validated this trial's config (config/space.py); here it is only rebuilt
    cfg = apply_overrides(experiment_from_dict(base), overrides_of(config), validate=False)
    cpu, gpu = granted()
    torch.set_num_threads(max(1, threads or int(cpu)))  # the trial's own CPUs: its threads
    if 0 < gpu < 1 and torch.cuda.is_available():  # packed: a share of the GPU, and of its memory
        torch.cuda.set_per_process_memory_fraction(gpu)
    state = last = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
            if os.path.exists(os.path.join(d, REPORT_FILE)):
                last = torch.load(os.path.join(d, REPORT_FILE), weights_only=False)
    if last is not None and reported(last) is not None:
        # The checkpoint is the trial's final one (the driver died before Ray recorded the trial
        # as finished): report the same result again instead of training past its stop.
        tune.report(for_tune(last))
        return

    ctx = tune.get_context()
    trial_id, sweep = ctx.get_trial_id() or "", ctx.get_experiment_name() or ""
    # which process and node ran it: a trial restarted after a crash shows a new pid in its rows
    where = {"pid": os.getpid(), "node_id": _node_id()}
    cadence = cadence or CheckpointCadence()

    def report(metrics: dict[str, Any], state_fn) -> bool:
        metrics = {**metrics, **where}
        ray_metrics.record(metrics, trial_id, sweep)  # dashboard gauges (tune/ray_metrics.py)
        if state_fn is None or not cadence.due(metrics):
            tune.report(for_tune(metrics))
            return reported(metrics) is not None
        with tempfile.TemporaryDirectory(prefix="raydiff-ckpt-") as d:
            torch.save(state_fn(), os.path.join(d, STATE_FILE))
            torch.save(metrics, os.path.join(d, REPORT_FILE))
            tune.report(for_tune(metrics), checkpoint=tune.Checkpoint.from_directory(d))
        return reported(metrics) is not None  # follow train()'s decision (Ray's stopper reads it too)

    train(cfg, report, state, snapshot=snapshot_sink(cfg, storage, trial_id))


def snapshot_sink(cfg, storage: str | None, trial_id: str):
    """Where a trial saves its EMA snapshots (eval.figures: snapshots): the sweep's storage, under
    snapshots/<trial>/, with its config beside them for `raydiff measure`; None otherwise."""
    if cfg.eval.figures != "snapshots" or not storage or not trial_id:
        return None
    from raydiff.snapshots import SnapshotStore
    from raydiff.tune.dryrun import config_json

    store = SnapshotStore(storage, trial_id, int(cfg.eval.snapshot_budget_mb * 2**20))
    store.save_config(config_json(cfg))
    return store.save


class CheckpointCadence:
    """When an evaluation's report carries a checkpoint: every `every` evaluations or `minutes`
    minutes, whichever comes first, and always at onset (τ first known) and at the trial's stop
    (a decision), so a restarted trial loses at most that much and a finished one restores as
    finished. Model + EMA + optimizer state is ~1.5 GB at 92.7M parameters: saving it at every
    evaluation would cost more than training."""

    def __init__(self, every: int = 1, minutes: float | None = None, clock=time.monotonic):
        self.every, self.seconds, self.clock = max(1, every), None if minutes is None else minutes * 60.0, clock
        self.count, self.last_saved, self.had_onset = 0, clock(), False

    def due(self, metrics: dict[str, Any]) -> bool:
        self.count += 1
        onset = metrics.get("tau_mem_step") is not None and not self.had_onset
        self.had_onset = self.had_onset or metrics.get("tau_mem_step") is not None
        timed = self.seconds is not None and self.clock() - self.last_saved >= self.seconds
        due = reported(metrics) is not None or onset or timed or self.count % self.every == 0
        if due:
            self.last_saved = self.clock()
        return due


def granted() -> tuple[float, float]:
    """(CPUs, GPUs) Ray granted this trial (1, 0 outside a trial)."""
    try:
        need = tune.get_context().get_trial_resources().required_resources
    except Exception:  # noqa: BLE001 - outside a Tune trial there is no grant
        return 1.0, 0.0
    return float(need.get("CPU", 1.0)), float(need.get("GPU", 0.0))


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else socket.gethostname()
