"""8. Checkpoint cost: bytes and seconds of one trial checkpoint (model, EMA, optimizer state,
counters, RNG streams, history: what the Ray trainable saves) for each U-Net preset, on this CPU,
and what the default cadence (every 4 evaluations or 10 minutes, plus onset and stop) saves
against checkpointing every evaluation for the paper grid's evaluation counts.

    python -m benchmarks.run --only 8
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from benchmarks.common import Section
from raydiff.config import experiment_from_dict
from raydiff.data import ImageData
from raydiff.training.state import TrainState

PRESETS = ["digits-tiny", "marion-2.9m", "marion-7.9m", "marion-25.8m", "marion-92.7m", "marion-201.3m"]
QUICK = ["digits-tiny", "marion-2.9m"]


def one_checkpoint(preset: str, repeats: int = 2) -> tuple[int, int, float]:
    """(parameters, bytes, seconds) of torch.save of a TrainState after one Adam step, EMA on."""
    size, channels, classes = (8, 1, 0) if preset.startswith("digits") else (32, 3, 10)
    cfg = experiment_from_dict({
        "data": {"dataset": "digits" if size == 8 else "cifar10", "n_train": 4, "n_test": 4, "class_conditional": bool(classes)},
        "model": {"preset": preset}, "train": {"ema_decay": 0.9999, "batch_size": 1},
    })  # fmt: skip
    x = torch.zeros(4, channels, size, size, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.long)
    ts = TrainState(cfg, ImageData(x, y, x, y, classes), torch.device("cpu"))
    for p in ts.net.parameters():  # Adam's moments exist after a step: a restore needs them
        p.grad = torch.zeros_like(p)
    ts.opt.step()
    best, nbytes = float("inf"), 0
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeats):
            path = os.path.join(d, "state.pt")
            t0 = time.perf_counter()
            torch.save(ts.state_dict(), path)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            best = min(best, time.perf_counter() - t0)
            nbytes = os.path.getsize(path)
    return ts.params, nbytes, best


def run(quick: bool) -> Section:
    rows = []
    for preset in QUICK if quick else PRESETS:
        params, nbytes, seconds = one_checkpoint(preset)
        rows.append([preset, f"{params:,}", f"{nbytes / 2**20:,.1f}", f"{seconds:.2f}", f"{nbytes / params:.1f}"])
    evals = 30  # the paper grid's trials evaluate 25–34 times (docs/clusters.md)
    saved = evals // 4 + 2  # every 4th, plus onset and stop (10-minute floor aside)
    big = rows[-1]
    headline = (f"{big[0]}: {big[2]} MiB in {big[3]} s per checkpoint; the default cadence saves ~{saved} of {evals}"
                f" evaluations' checkpoints ({evals / saved:.1f}× fewer bytes written)")  # fmt: skip
    return Section(
        key="8", title="Checkpoint cost by preset (CPU)", goal="bytes and seconds known; ≥ 3× fewer than every evaluation",
        headline=headline, met=None if quick else evals / saved >= 3,
        columns=["preset", "params", "MiB", "s (torch.save + fsync, best of 2)", "bytes/param"], rows=rows,
        notes=["model + EMA + Adam's two moments: ~16 bytes a parameter; on a GPU the copy to host comes on top (gpu.sh)"],
    )
