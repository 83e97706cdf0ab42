"""`raydiff measure SWEEP`: measure a sweep's figures on the EMA snapshots its trials saved
(eval.figures: snapshots), off the training loop — while the sweep runs or after it, and again
with another measure or protocol, without retraining.

Each trial's snapshots are measured by the same `Evaluator` the loop would have used (the same
fixed noise and labels, the same references), built for the named fidelity measures alone. Rows
go to `figures/<trial>/<measure>/<step>.parquet` with their provenance (protocol, sample count, snapshot
step), keyed by step: measuring again replaces, never duplicates (results.write_figures). The
references' features are extracted once per trial and kept beside its snapshots (ReferenceCache).
`raydiff analyze` and `raydiff status` read them merged into the evaluations (results_folder).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO

import torch

from raydiff import measures, results
from raydiff.config import experiment_from_dict
from raydiff.data import load
from raydiff.diffusion import build_process
from raydiff.errors import UserError
from raydiff.evaluation import Evaluator
from raydiff.models import build_network
from raydiff.snapshots import ReferenceCache, SnapshotStore, trials_with_snapshots
from raydiff.training.state import resolve_device


def figure_names(names: list[str] | None) -> tuple[str, ...]:
    """The fidelity measures to measure (default: every registered one), checked against the registry."""
    known = measures.names("fidelity")
    if not names:
        return known
    bad = [n for n in names if n not in known]
    if bad:
        raise UserError(f"{', '.join(bad)}: not a figure measure (known: {', '.join(known)})", key="--metrics")
    return tuple(dict.fromkeys(names))


def measure_sweep(
    uri: str, names: list[str] | None = None, trials: list[str] | None = None, device: str = "auto", out: TextIO | None = None,
) -> int:  # fmt: skip
    """Measure the named figures on every snapshot of the sweep at `uri` (or of `trials`); returns
    how many rows were written."""
    out = out or sys.stdout
    figures = figure_names(names)
    found = trials_with_snapshots(uri)
    if not found:
        raise UserError(f"{uri} holds no snapshots (a sweep saves them with eval.figures: snapshots)")
    if trials:
        missing = [t for t in trials if t not in found]
        if missing:
            raise UserError(f"no snapshots of trial(s) {', '.join(missing)} (trials with snapshots: {', '.join(found)})", key="--trials")
        found = [t for t in found if t in trials]
    written = 0
    for trial_id in found:
        n = measure_steps(uri, trial_id, None, figures)
        written += n
        print(f"raydiff: {trial_id}: {', '.join(figures)}: {n} row(s)" if n else f"raydiff: {trial_id}: no config or no snapshot yet; skipped", file=out)
    return written


def measure_steps(uri: str, trial_id: str, steps: list[int] | None, figures: tuple[str, ...] | None = None, device: str = "auto") -> int:
    """Measure one trial's snapshots (`steps`, or all it has) and write their figures rows;
    `figures`: these measures, or the fidelity measures the trial's own config names. Returns the
    rows written. A Ray task of a running sweep calls this as the snapshots land (tune/figures.py)."""
    store = SnapshotStore(uri, trial_id)
    text = store.config_json()
    have = store.steps()
    steps = have if steps is None else [s for s in steps if s in set(have)]
    if text is None or not steps:
        return 0
    config = json.loads(text)
    if figures is None:
        cfg = experiment_from_dict(config)
        figures = tuple(m for m in cfg.measured if measures.get(m).kind == "fidelity")
        if not figures:
            return 0
    fs, root = results.filesystem(uri)
    meta = results.provenance()
    written = 0
    for step, rows in measure_trial(config, store, steps, figures, resolve_device(device)):
        for name, row in rows.items():  # each snapshot's rows as soon as it is measured, whole
            results.write_figures(fs, root, trial_id, name, [row], meta)
            written += 1
        injected_fault(trial_id, step)
    return written


def measure_trial(config: dict, store: SnapshotStore, steps: list[int], figures: tuple[str, ...], device: torch.device) -> Iterator[tuple[int, dict[str, dict]]]:
    """Per snapshot step, in order: (step, {measure: its row})."""
    cfg = experiment_from_dict(config)
    data = load(cfg.data)
    c, h, _ = data.shape
    torch.manual_seed(cfg.train.seed)
    with torch.random.fork_rng():
        evaluator = Evaluator(cfg, data, build_process(cfg.diffusion), device, figures=figures, cache=ReferenceCache(store))
    net = build_network(cfg.model, c, h, data.num_classes).to(device)
    protocol = _protocol(cfg, evaluator)
    for step in steps:
        net.load_state_dict(store.load(step))
        t0 = time.perf_counter()
        m = evaluator.fidelity(net, step)
        spent = time.perf_counter() - t0
        base = {"step": step, "images_seen": step * cfg.batch, "protocol": protocol, "n_samples": cfg.figure_samples, "snapshot_step": step, "measure_s": spent}
        yield step, {name: {**base, **{col: m.get(col) for col in measures.get(name).column_names()}} for name in figures}


FAULT_ENV = "RAYDIFF_MEASURE_FAULT"  # test hook: "<trial>:<step>:<marker file>", see injected_fault


def injected_fault(trial_id: str, step: int) -> None:
    """Test hook: RAYDIFF_MEASURE_FAULT="T:S:PATH" kills the process measuring trial T (*: any) right after
    it wrote step S's rows, once (PATH marks that it did), so tests can show that a measure task
    killed mid-way is retried by Ray and leaves every row whole."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    trial, at, marker = spec.split(":", 2)
    if trial in ("*", trial_id) and int(at) == step and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)


def _protocol(cfg, evaluator: Evaluator) -> str:
    """How the figures were measured: feature network and mode, references, SWD's settings."""
    ev = cfg.eval
    parts = [f"features={evaluator.extractor.name}/{evaluator.extractor.mode}"] if evaluator.extractor is not None else []
    parts += [f"reference={evaluator.fid_reference}", f"sampler_steps={cfg.diffusion.sample_steps}", f"swd_projections={ev.swd_projections}"]
    return ";".join(parts)
