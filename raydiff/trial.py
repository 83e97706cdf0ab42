"""`train(config, report)`: the one training function.

The Ray trainable, `raydiff train` and the benchmarks are thin wrappers around it. It knows
nothing about Ray (importing it loads no Ray module): it calls `report(metrics, checkpoint)` at
every evaluation, where `checkpoint` is a zero-argument function returning the full training state
(so a reporter that does not keep checkpoints pays nothing). Each report carries the stop decision,
computed here once (`stop_status`, `stop_reason`: raydiff/metrics/stop.py); the loop ends when
`report` returns True, which the Ray trainable and `raydiff train` do for a report that carries a
decision (a benchmark may train on past one). The report's keys are listed in docs/results.md.

Length, EMA and cadence are counted in optimizer steps and reported in images seen too
(images = steps × B), so sweeps over the batch size compare on either axis.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from raydiff import measures
from raydiff.config import ExperimentConfig
from raydiff.data import ImageData, load, to_model, train_mean
from raydiff.diffusion import build_process
from raydiff.errors import UserError
from raydiff.evaluation import Evaluator
from raydiff.metrics.objectives import objective_values
from raydiff.metrics.stop import decide, onset_in_sight, onsets, stop_fields, stop_onset
from raydiff.models import build_network, count_params

Checkpoint = Callable[[], dict[str, Any]]
Reporter = Callable[[dict[str, Any], Checkpoint | None], bool | None]

# a non-finite loss is looked for every this many steps (a device sync each time on GPU)
NONFINITE_CHECK_EVERY = 50
FAULT_ENV = "RAYDIFF_FAULT_AT_STEP"  # test hook, see injected_fault_step
HISTORY_KEYS = ("mem_frac", "mem_frac_lo", "mem_frac_hi", "fid")  # per evaluation, beside each definition's fields


def history_keys() -> tuple[str, ...]:
    """The fields of a history row: HISTORY_KEYS and what every onset definition's rule reads
    (raydiff/measures: a test's fraction, its raw variant's, the loss probes)."""
    fields = [*HISTORY_KEYS]
    for d in measures.definitions():
        m = measures.get(d.measure)
        fields += [measures.raw_column(m.history[0])] if d.raw else list(m.history)
    return tuple(dict.fromkeys(fields))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("is cuda, but this process sees no CUDA GPU; use auto or cpu", key="train.device")
    return torch.device(name)


def eval_schedule(cfg: ExperimentConfig, budget: int) -> list[int]:
    """The steps at which to evaluate, ascending, always ending at the budget.

    uniform: every k steps. geometric: the gap grows by `geometric_ratio` each time (never below
    k), since onset times scale with N: a fixed relative resolution for a fraction of the evals.
    """
    return spaced_steps(cfg, cfg.eval_every_steps, budget) + [budget]


def upcoming_evaluations(cfg: ExperimentConfig, step: int, history: list[dict[str, Any]], schedule: list[int] | None = None) -> list[int]:
    """The evaluations still to come after `step` (`schedule`, else the configured ones). While an
    onset awaits its confirming evaluations, or is in sight (eval.approach_fraction; see
    metrics/stop.onset_in_sight), the next one comes after the smallest gap (eval.every_steps),
    not at the next scheduled step: patience costs a few steps, not a geometric gap. A pure
    function of the history, so a trial restored from a checkpoint resumes the same steps."""
    if schedule is None:
        schedule = [s for s in eval_schedule(cfg, cfg.budget_steps) if s > step]
    soon = step + cfg.eval_every_steps
    if schedule and soon < schedule[0] and onset_in_sight(history_series(cfg, history), cfg.stop, cfg.eval.approach_fraction):
        return [soon, *schedule]
    return schedule


def fidelity_schedule(cfg: ExperimentConfig, budget: int) -> list[int]:
    """The steps of fidelity-only evaluations (eval.fid_every_steps; none when unset): spaced as
    the evaluations are, from fid_every_steps, before the budget."""
    return spaced_steps(cfg, cfg.eval.fid_every_steps, budget) if cfg.eval.fid_every_steps else []


def spaced_steps(cfg: ExperimentConfig, k: int, budget: int) -> list[int]:
    """Steps k, then gaps of k (uniform) or growing by eval.geometric_ratio (never below k), < budget."""
    steps, s, gap = [], 0, float(k)
    while True:
        s = s + max(k, round(gap))
        if s >= budget:
            return steps
        steps.append(s)
        if cfg.eval.cadence == "geometric":
            gap = s * (cfg.eval.geometric_ratio - 1.0)


def refine_steps(lo: int, hi: int, k: int) -> list[int]:
    """The steps strictly between evaluations at `lo` and `hi` at which to snapshot the evaluated
    weights for bracket refinement: k evenly spaced (fewer when the gap is under k + 1), ascending."""
    return sorted({lo + (hi - lo) * i // (k + 1) for i in range(1, k + 1)} - {lo, hi})


def crossed(history: list[dict[str, Any]], mem_frac: float | None, threshold: float) -> bool:
    """mem_frac has just risen to the threshold: this evaluation is at or above it, the last
    measured one before it (if any) below. That bracket is what refinement narrows."""
    if mem_frac is None or not math.isfinite(mem_frac) or mem_frac < threshold:
        return False
    before = [h["mem_frac"] for h in history if h.get("mem_frac") is not None]
    return not before or not (math.isfinite(before[-1]) and before[-1] >= threshold)


def bisect_crossing(n: int, above: Callable[[int], bool]) -> int:
    """Binary search over n snapshots in time order, bracketed by an evaluation below the threshold
    before them and one above after them: the index of the first snapshot found above (n: none),
    for ⌈log₂(n + 1)⌉ calls of `above`. Every snapshot evaluated before that index is below and
    every one after it above, so the one onset rule, run over the merged history, lands on it."""
    lo, hi = -1, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if above(mid):
            hi = mid
        else:
            lo = mid
    return hi


class TrainState:
    """Model, EMA, optimizer, counters, RNG streams and the evaluation history."""

    def __init__(self, cfg: ExperimentConfig, data: ImageData, device: torch.device):
        c, h, _ = data.shape
        torch.manual_seed(cfg.train.seed)
        self.net = build_network(cfg.model, c, h, data.num_classes).to(device)
        self.ema = build_network(cfg.model, c, h, data.num_classes).to(device) if cfg.train.ema_beta() > 0 else None
        if self.ema is not None:
            self.ema.load_state_dict(self.net.state_dict())
            self.ema.requires_grad_(False)
        t = cfg.train
        fused = device.type == "cuda"
        if t.optimizer == "sgd":
            self.opt = torch.optim.SGD(
                self.net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                fused=fused, foreach=None if fused else True,
            )  # fmt: skip
        else:
            self.opt = torch.optim.Adam(
                self.net.parameters(), lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps,
                weight_decay=t.weight_decay, fused=fused, foreach=None if fused else True,
            )  # fmt: skip
        self.batch_gen = torch.Generator().manual_seed(t.seed + 10_007)
        # train.sampling: epochs: the current epoch's permutation of the N images and how far into it
        self.epoch_perm: torch.Tensor | None = None
        self.epoch_pos = 0
        self.step = 0
        self.wall_s = 0.0
        self.history: list[dict[str, Any]] = []  # one compact row per evaluation
        self.params = count_params(self.net)

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "wall_s": self.wall_s,
            "history": list(self.history),
            "epoch_perm": None if self.epoch_perm is None else self.epoch_perm.clone(),
            "epoch_pos": self.epoch_pos,
            "rng": {
                "batch": self.batch_gen.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.wall_s = float(state["wall_s"])
        self.history = list(state["history"])
        self.epoch_perm, self.epoch_pos = state.get("epoch_perm"), int(state.get("epoch_pos", 0))
        rng = state["rng"]
        self.batch_gen.set_state(rng["batch"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])


def history_series(cfg: ExperimentConfig, history: list[dict[str, Any]]) -> dict[str, list]:
    """The evaluation history as the report carries it: the steps and the series of every onset
    definition this trial measures (the stop decision and `raydiff analyze` read them)."""
    out = {"history_steps": [h.get("step") for h in history], "history_mem_frac": [h.get("mem_frac") for h in history]}
    for name in cfg.definitions:
        out.update(measures.series_of(history, measures.definition(name)))
    return out


def onset_summary(cfg: ExperimentConfig, history: list[dict[str, Any]]) -> dict[str, Any]:
    """τ by every onset definition (None: not fired, or not measured) and the stop rule's
    (`tau_mem_step`), from the evaluation history, by the rules the stop decision uses."""
    found = onsets(history_series(cfg, history), cfg.stop)
    return {"tau_mem_step": stop_onset(found, cfg.stop), **{d.tau_column: found.get(d.name) for d in measures.definitions()}}


def train(config: ExperimentConfig, report: Reporter, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one model until `report` says stop, the loss diverges or the step budget is spent.

    Returns the last reported metrics.
    """
    cfg = config
    device = resolve_device(cfg.train.device)
    data = load(cfg.data)
    process = build_process(cfg.diffusion)
    ts = TrainState(cfg, data, device)
    # The evaluator's fixed noise has its own generators, but building it may draw from the global
    # RNG (a feature net's init): fork it, so that a run restored from a checkpoint continues the
    # very random stream an uninterrupted run would have used (same seed → same τ_mem).
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        evaluator = Evaluator(cfg, data, process, device)
    if state is not None:
        ts.load_state_dict(state)
    evaluator.count = sum(not h.get("refined") and not h.get("fidelity_only") for h in ts.history)  # FID cadence across a restore
    step = OptimizerStep(cfg, ts, process, data, device)
    static = static_fields(cfg, ts, data)
    eval_net = ts.ema if (ts.ema is not None and cfg.eval.use_ema) else ts.net
    refine_k, threshold, b = cfg.eval.refine_snapshots, cfg.stop.mem_frac_threshold, cfg.batch
    schedule = upcoming_evaluations(cfg, ts.step, ts.history)
    fidelity_at = set(fidelity_schedule(cfg, cfg.budget_steps))  # on an evaluation's step, that evaluation measures it
    t_start = time.perf_counter() - ts.wall_s
    last: dict[str, Any] = {}
    while schedule:
        next_eval = schedule.pop(0)
        # steps, keeping copies of the evaluated weights where refinement may look between
        # evaluations, and measuring FID alone where the fidelity schedule asks
        snap_at = set(refine_steps(ts.step, next_eval, refine_k)) if refine_k else set()
        snaps: list[tuple[int, float, dict[str, torch.Tensor]]] = []  # (step, wall_s, weights)
        interim: list[tuple[dict, dict]] = []  # (history row, metrics) reported before this evaluation
        while ts.step < next_eval:
            step()
            if ts.step in snap_at:  # a copy of the evaluated weights: cheap beside one evaluation
                snaps.append((ts.step, time.perf_counter() - t_start, {k: v.detach().clone() for k, v in eval_net.state_dict().items()}))
            if ts.step in fidelity_at and ts.step != next_eval:
                m = evaluator.fidelity(eval_net, ts.step)
                interim.append(({**history_row(ts.step, b, time.perf_counter() - t_start, m), "fidelity_only": True}, m))
            if (ts.step % NONFINITE_CHECK_EVERY == 0 or ts.step == next_eval) and not step.finite():
                ts.wall_s = time.perf_counter() - t_start
                last = diverged_report(cfg, static, ts)
                report(last, None)
                return last
        # evaluate; when mem_frac has just crossed the threshold, refine the bracket from the snapshots
        metrics = evaluator(eval_net, ts.step, fid=ts.step in fidelity_at)
        if cfg.raw_tests:  # the EMA lags the raw weights: test them too (ExperimentConfig.raw_tests)
            metrics.update(raw_memorization(evaluator, ts.net, ts.step, metrics, cfg.raw_tests))
        if snaps and crossed(ts.history, metrics.get("mem_frac"), threshold):
            interim += _refine(evaluator, eval_net, snaps, threshold, b)
        ts.wall_s = time.perf_counter() - t_start
        # report: the interim rows first, in step order (no checkpoint, no decision), then this evaluation
        for i_row, i_metrics in merge_interim(interim):
            ts.history.append(i_row)
            report(interim_report(cfg, static, ts, i_metrics, i_row), None)
        ts.history.append(history_row(ts.step, b, ts.wall_s, metrics))
        last = evaluation_report(cfg, static, ts, metrics, step.mean_loss())
        if report(last, ts.state_dict):  # a reporter that follows the decision returns bool(stop_status)
            break
        schedule = upcoming_evaluations(cfg, ts.step, ts.history, schedule)
    return last


class OptimizerStep:
    """One optimizer step on a batch of B = cfg.batch images from the resident training set, drawn
    with replacement or from shuffled epochs (train.sampling): noise → loss → backward → clip →
    step → EMA. Keeps the running loss sum between evaluations."""

    def __init__(self, cfg: ExperimentConfig, ts: TrainState, process, data: ImageData, device: torch.device):
        self.ts, self.process, self.device = ts, process, device
        norm = cfg.data.normalization  # [N, C, H, W] in the model's range, resident for the whole run
        self.x_train = to_model(data.x_train, norm, train_mean(norm, data.x_train)).to(device)
        self.y_train = data.y_train.to(device) if data.num_classes else None  # [N] or None
        self.num_classes = data.num_classes
        self.n, self.b = self.x_train.shape[0], cfg.batch
        self.epochs = cfg.train.sampling == "epochs"
        self.grad_clip = cfg.train.grad_clip
        self.ema_beta = cfg.train.ema_beta(cfg.batch)
        self.net_params = list(ts.net.parameters())
        self.ema_params = list(ts.ema.parameters()) if ts.ema is not None else []
        # classifier-free guidance trains the "no label" token on 10% of the batches' labels
        self.label_dropout = 0.1 if (cfg.diffusion.guidance > 0 and self.y_train is not None) else 0.0
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.train.bf16)
        # train.compile: the training step's forward (and its backward, through AOTAutograd) runs
        # the compiled module, which shares ts.net's parameters; everything else uses ts.net itself
        mode = cfg.train.compile
        self.net = ts.net if mode == "off" else torch.compile(ts.net, mode=None if mode == "default" else mode)
        self.fault_step = injected_fault_step(cfg)
        self.loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        self.loss_count = 0

    def __call__(self) -> None:
        ts, b = self.ts, self.b
        idx = self.draw().to(self.device, non_blocking=True)  # [B]
        labels = None
        if self.y_train is not None:
            labels = self.y_train[idx]
            if self.label_dropout:
                drop = torch.rand(b, device=self.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        with self.autocast:
            loss = self.process.loss(self.net, self.x_train[idx], labels).mean()
        ts.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net_params, self.grad_clip, foreach=True)
        ts.opt.step()
        if self.ema_params:
            torch._foreach_lerp_(self.ema_params, self.net_params, 1.0 - self.ema_beta)
        ts.step += 1
        if ts.step == self.fault_step:
            raise RuntimeError(f"injected fault at step {ts.step} ({FAULT_ENV}, a test hook)")
        self.loss_sum += loss.detach()
        self.loss_count += 1

    def draw(self) -> torch.Tensor:
        """The next batch's indices into the training set, int64 [B] on the CPU, from the trial's
        batch generator. replacement: B uniform draws. epochs: the next B of the current epoch's
        permutation, a fresh one drawn when it runs out (a batch may straddle two epochs); the
        permutation and the position in it are TrainState's, so a restore continues them."""
        ts, n, b = self.ts, self.n, self.b
        if not self.epochs:
            return torch.randint(0, n, (b,), generator=ts.batch_gen)
        parts, need = [], b
        while need:
            if ts.epoch_perm is None or ts.epoch_pos >= n:
                ts.epoch_perm, ts.epoch_pos = torch.randperm(n, generator=ts.batch_gen), 0
            part = ts.epoch_perm[ts.epoch_pos : ts.epoch_pos + need]
            parts.append(part)
            ts.epoch_pos += len(part)
            need -= len(part)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def finite(self) -> bool:
        """The loss summed since the last evaluation is finite (a device sync)."""
        return math.isfinite(float(self.loss_sum))

    def mean_loss(self) -> float:
        """The mean training-batch loss since the last call; starts the next sum."""
        mean = float(self.loss_sum) / max(1, self.loss_count)
        self.loss_sum.zero_()
        self.loss_count = 0
        return mean


# ------------------------------------------------------------------------------ reports
# Every report carries the trial's static facts, its metrics and onsets so far, the search
# objectives (metrics/objectives.py) and the stop decision (metrics/stop.py), computed once here.


def static_fields(cfg: ExperimentConfig, ts: TrainState, data: ImageData) -> dict[str, Any]:
    return {
        "params": ts.params,
        "n_train": data.x_train.shape[0],
        "batch_size": cfg.batch,
        "lr": cfg.train.lr,
        "budget_steps": cfg.budget_steps,
        "budget_reason": cfg.budget_reason,
        "resumed_from_step": ts.step,  # the checkpoint step this run resumed from (0: fresh)
    }


def history_row(step: int, b: int, wall_s: float, metrics: dict[str, Any]) -> dict[str, Any]:
    """One evaluation as the compact history row the onset rules read."""
    row = {"step": step, "images_seen": step * b, "wall_s": wall_s}
    row.update({k: metrics.get(k) for k in history_keys()})
    return row


def evaluation_report(cfg: ExperimentConfig, static: dict, ts: TrainState, metrics: dict, loss: float) -> dict[str, Any]:
    b = cfg.batch
    onset = onset_summary(cfg, ts.history)
    tau = onset["tau_mem_step"]
    out = {
        **static,
        **metrics,
        **ts.history[-1],
        "loss": loss,
        "diverged": False,
        **onset,
        "tau_mem_images": None if tau is None else tau * b,
        "tau_mem_seconds": _wall_at(ts.history, tau),
        # search objectives, in every report (an Optuna search reads them; see metrics/objectives.py)
        **objective_values(ts.history, tau, ts.step, b),
        # the evaluation history: the stop decision, the planner and the analysis read it
        **history_series(cfg, ts.history),
    }
    return {**out, **stop_fields(decide(out, cfg.stop))}


def interim_report(cfg: ExperimentConfig, static: dict, ts: TrainState, metrics: dict, row: dict) -> dict[str, Any]:
    """A snapshot evaluation (refinement) or a fidelity-only one, reported before the evaluation
    that follows it: without the history, a checkpoint or a decision (that evaluation's report
    carries them)."""
    onset = onset_summary(cfg, ts.history)
    out = {**static, **metrics, **row, **onset, "diverged": False}
    return {**out, **objective_values(ts.history, onset["tau_mem_step"], row["step"], cfg.batch), **stop_fields(None)}


def diverged_report(cfg: ExperimentConfig, static: dict, ts: TrainState) -> dict[str, Any]:
    b = cfg.batch
    out = {
        **static, "step": ts.step, "images_seen": ts.step * b, "wall_s": ts.wall_s,
        "loss": float("nan"), "diverged": True, "diverged_step": ts.step, "tau_mem_step": None,
        **objective_values(ts.history, None, ts.step, b, diverged=True),
    }  # fmt: skip
    return {**out, **stop_fields(decide(out, cfg.stop))}


def injected_fault_step(cfg: ExperimentConfig) -> int | None:
    """Test hook: RAYDIFF_FAULT_AT_STEP="S" makes every trial raise at step S, "S:section.key=V"
    only the trials whose config has that value (e.g. "100:data.n_train=16"), so tests can prove
    that a failing trial is recorded as an error while the rest of the sweep goes on."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    step, _, cond = spec.partition(":")
    if cond:
        key, _, value = cond.partition("=")
        section, _, name = key.partition(".")
        if str(cfg.to_dict().get(section, {}).get(name)) != value:
            return None
    return int(step)


def _refine(evaluator: Evaluator, net: torch.nn.Module, snaps: list, threshold: float, b: int) -> list[tuple[dict, dict]]:
    """Evaluate (memorization only) the snapshots a binary search for the crossing visits."""
    scratch = copy.deepcopy(net)
    done: dict[int, dict[str, Any]] = {}

    def above(i: int) -> bool:
        scratch.load_state_dict(snaps[i][2])
        done[i] = evaluator(scratch, snaps[i][0], memorization_only=True)
        v = done[i].get("mem_frac")
        return v is not None and math.isfinite(v) and v >= threshold

    bisect_crossing(len(snaps), above)
    out = []
    for i in sorted(done):
        step, wall_s, _ = snaps[i]
        out.append(({**history_row(step, b, wall_s, done[i]), "refined": True}, done[i]))
    return out


FIDELITY_KEYS = ("fid", "fid_train", "sliced_wasserstein", "swd_samples", "fid_extractor", "fid_split", "fid_samples", "fid_reference")


def merge_interim(rows: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """Interim rows in step order, one per step: a snapshot evaluated at a fidelity-only step
    becomes one row with both its memorization test and the FID (a row is keyed by its step)."""
    by_step: dict[int, list[tuple[dict, dict]]] = {}
    for row, metrics in rows:
        by_step.setdefault(row["step"], []).append((row, metrics))
    out = []
    for step in sorted(by_step):
        fidelity = [rm for rm in by_step[step] if rm[0].get("fidelity_only")]
        memorization = [rm for rm in by_step[step] if not rm[0].get("fidelity_only")]
        if fidelity and memorization:
            (row, metrics), (_, fid_metrics) = memorization[0], fidelity[0]
            fid = {k: fid_metrics[k] for k in FIDELITY_KEYS if fid_metrics.get(k) is not None}
            out.append(({**row, "fid": fid.get("fid")}, {**metrics, **fid}))
        else:
            out.append(by_step[step][0])
    return out


def raw_memorization(evaluator: Evaluator, net: torch.nn.Module, step: int, metrics: dict, tests: tuple[str, ...]) -> dict[str, Any]:
    """The memorization `tests` on the raw (non-EMA) weights, as their raw columns (mem_frac_raw, …)."""
    raw = evaluator(net, step, memorization_only=True, tests=tests)
    out = {"eval_s": metrics["eval_s"] + raw["eval_s"]}
    for name in tests:
        for c in measures.get(name).column_names():
            out[measures.raw_column(c)] = raw.get(c)
    return out


def _wall_at(history: list[dict[str, Any]], step: int | None) -> float | None:
    if step is None:
        return None
    return next(h["wall_s"] for h in history if h["step"] == step)
