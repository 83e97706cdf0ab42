"""What a sweep will cost, before anything runs: exact FLOP arithmetic of each trial to its
expected stop (`raydiff sweep SPACE --dry-run` prints it; tune/dryrun.py).

Pure and Ray-free. Each trial is run forward in simulation on an assumed onset τ — the space's
prior (sweep.budget_planner.prior, tune/planner.prior_tau) or a guess (`--tau`) — through the
loop's own functions (raydiff/training: schedule.upcoming_evaluations / fidelity_schedule /
refine_steps, refine.crossings / search / merge_interim, reports.Onsets / history_row;
evaluation.sequential_plan, metrics/memorization.settled, metrics/stop.decide),
so the evaluations counted are the ones `train()` would run. What the simulation assumes of the
model (state it with every figure):

- every memorization test (pixel, features, raw weights) reads mem_frac = 0 before τ, and from τ
  on the stop's threshold θ rising linearly to 1 at 2τ: θ + (1 − θ)·min(1, (s − τ)/τ). The
  sequential test (eval.sequential_round) sees its expected count round(mem_frac · n): it settles
  at its first possible look before onset and uses the full count near it;
- the probes' test loss departs from the train loss at τ (by twice stop.loss_gap), so the loss
  onset fires at the first evaluation at or past τ once stop.loss_window evaluations confirm it
  (refinement's probe-only evaluations of the snapshots then move it back inside the bracket);
- nothing diverges; the EMA does not lag (a raw-weights test reads the same curve); the curve's
  jump at τ means eval.approach_fraction never brings an evaluation forward before it.

FLOPs (torch's counting: 2 per multiply-add): one forward pass of the trial's network on one
image is counted once on the meta device (torch.utils.flop_counter); a training step is 3
forwards per image (forward + backward ≈ 2 forwards); sampling is sampler steps × forwards per
image (× 2 with classifier-free guidance on a class-conditional model); the probes are
2 × min(probe_images, N, n_test) images × probe_noise_levels forwards; a feature network's FLOPs
per image come from the measure registry (`flops_per_sample`: SSCD, Inception), the digits
classifier's are counted on the meta device; an exact nearest-neighbour search of S samples among
N images of dimension D is S·N·D·2. Not counted: the optimizer and EMA updates (O(P) per step),
data movement, the Fréchet distance's matrix square root (O(D³) once per FID), host work.

With eval.figures: snapshots the figure schedule saves EMA snapshots instead of measuring FID and
SWD in the loop; their cost (each drawing its own figure samples, as `raydiff measure` does) and the
snapshots' bytes within eval.snapshot_budget_mb are reported beside the in-loop share, not in it.

Copied here, for want of a pure function in the loop's modules: the sequential test's round
arithmetic (evaluation.Evaluator._memorization), the figure cadence (Evaluator.figure_due) and
the loop's control flow itself (trial.train), which `simulate` mirrors line by line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from raydiff import measures
from raydiff.config import ExperimentConfig, OnsetPrior
from raydiff.config.sections import needs
from raydiff.evaluation import sequential_plan, swd_reference_counts
from raydiff.metrics.fid import PRECOMPUTED, DigitsClassifierFeatures, DigitsNet, InceptionFeatures
from raydiff.metrics.memorization import settled
from raydiff.metrics.stop import decide
from raydiff.training.refine import crossings, merge_interim, search
from raydiff.training.reports import Onsets, history_row
from raydiff.training.schedule import fidelity_schedule, refine_steps, upcoming_evaluations
from raydiff.tune.planner import prior_tau

TRAINING_FORWARDS = 3  # a training step ≈ 3 forwards per image: the forward, and a backward of ≈ 2
# The default throughput for GPU-hours: an H100 SXM's dense BF16 tensor-core peak (989 TFLOP/s,
# no sparsity) used at 40% (a typical model FLOP utilisation for U-Nets at these batch sizes;
# benchmarks/gpu.py measures the real one). Both are flags of `raydiff sweep --dry-run`.
H100_BF16_TFLOPS = 989.0
UTILIZATION = 0.4
SSCD_DIM = 512  # SSCD's (sscd_disc_mixup) embedding width: the cosine search's D
FID_DIMS = {"inception": InceptionFeatures.dim, "digits_classifier": DigitsClassifierFeatures.dim}  # feature widths

# measurement FLOPs by kind, in the order the dry run shows them
# (the table's short heading; the JSON's keys): memorization sampling of the evaluated (EMA)
# weights; the memorization test's feature extraction (SSCD) and nearest-neighbour search; the
# raw-weights test (its sampling, features and search); refinement's evaluations of the snapshots
# (memorization tests, and the probes where the loss onset's bracket is narrowed); FID/SWD (their
# samples beyond the test's, Inception or the digits classifier, SWD)
KINDS = {
    "probes": "probes",
    "mem_sampling": "mem sampling",
    "mem_features": "features+NN",
    "raw_test": "raw test",
    "refinement": "refinement",
    "fidelity": "FID/SWD",
}


# ------------------------------------------------------------------------------ FLOPs per network


@functools.lru_cache(maxsize=None)
def _forward_flops(model: Any, channels: int, size: int, classes: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from raydiff.models import build_network

    def count(device: str) -> float:
        with torch.device(device):
            net = build_network(model, channels, size, classes)
            x, c = torch.zeros(1, channels, size, size), torch.zeros(1)
            y = torch.zeros(1, dtype=torch.long) if classes else None
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                net(x, c, y)
        return float(fc.get_total_flops())

    try:
        return count("meta")
    except (NotImplementedError, RuntimeError):  # a network that computes on values while it builds or runs
        return count("cpu")


def forward_flops(cfg: ExperimentConfig) -> float:
    """FLOPs of one forward pass of the trial's network on one image (torch's counter, meta device)."""
    size, channels = cfg.data.shape
    return _forward_flops(cfg.model, channels, size, cfg.data.num_classes)


@functools.lru_cache(maxsize=None)
def _digits_classifier_flops() -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = DigitsNet()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            net.features(torch.zeros(1, 1, 8, 8))
    return float(fc.get_total_flops())


def fid_features(cfg: ExperimentConfig) -> str:
    """The FID feature network a trial uses (metrics/fid.build_extractor's `auto` rule)."""
    f = cfg.eval.fid_features
    return ("digits_classifier" if cfg.data.dataset == "digits" else "inception") if f == "auto" else f


def fid_flops_per_image(cfg: ExperimentConfig) -> float:
    if fid_features(cfg) == "inception":
        return measures.get("fid").flops_per_sample  # Inception-v3 at 299 px
    return _digits_classifier_flops()


# ------------------------------------------------------------------------------ the assumed model


def assumed_mem_frac(step: float, tau: float, threshold: float) -> float:
    """mem_frac the simulation reads at `step`: 0 before τ, then θ rising linearly to 1 at 2τ."""
    if step < tau:
        return 0.0
    return min(1.0, threshold + (1.0 - threshold) * (step - tau) / max(tau, 1.0))


def assumed_losses(step: float, tau: float, gap: float) -> tuple[float, float]:
    """(train, test) probe losses: equal before τ, the test loss 2·gap higher from τ on."""
    return (1.0, 1.0) if step < tau else (1.0, 1.0 + 2.0 * gap)


def sequential_count(cfg: ExperimentConfig, fracs: list[float], sequential: bool = True) -> int:
    """Samples the memorization tests draw when each reads its fraction in `fracs`: the rounds of
    evaluation.Evaluator._memorization (its first round and looks `sequential_plan`, then doubling the count
    so far, up to num_samples), stopping once every test is settled on its expected count
    round(f · n). (That loop's arithmetic, copied: evaluation.py has no pure function for it.)"""
    ev, threshold = cfg.eval, cfg.stop.mem_frac_threshold
    total = ev.num_samples
    first, looks = sequential_plan(ev.sequential_round, total, threshold) if sequential else (total, 1)
    n = 0
    while n < total:
        n += min(total - n, max(first, n))
        if first < total and all(settled(round(f * n), n, threshold, looks) for f in fracs):
            break
    return n


# ------------------------------------------------------------------------------ the simulated trial


@dataclass(frozen=True)
class Event:
    """One thing the simulated trial measures, at `step`."""

    step: int
    kind: str  # evaluation | refinement | raw | fidelity (a fidelity-only evaluation) | snapshot (figures off the loop)
    mem_samples: int = 0  # samples drawn for (and tested by) the memorization tests
    tests: tuple[str, ...] = ()  # the memorization tests run on them
    fid_samples: int = 0  # samples the figures draw beyond those (a shared pass reuses the tests')
    fid: bool = False  # the figures (FID, SWD) measured here
    probes: bool = False


@dataclass(frozen=True)
class Run:
    """A trial run forward to its stop on the assumed onset."""

    tau: float  # the assumed onset, steps
    stop_step: int
    status: str  # memorized | budget
    tau_found: int | None  # the stop rule's τ as the loop would find it
    events: tuple[Event, ...]

    def count(self, kind: str) -> int:
        return sum(e.kind == kind for e in self.events)

    @property
    def fid_count(self) -> int:
        """Figures measured in the loop (evaluations with FID/SWD, fidelity-only evaluations)."""
        return sum(e.fid for e in self.events if e.kind != "snapshot")


def figure_measures(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The trial's figures (the registry's fidelity measures it runs, FID and SWD)."""
    return tuple(m for m in cfg.measured if measures.get(m).kind == "fidelity")


def measures_figures(cfg: ExperimentConfig) -> bool:
    """The trial measures figures in a feature network on its cadence (the Evaluator builds its extractor)."""
    ev = cfg.eval
    return "fid_features" in needs(figure_measures(cfg)) and bool(ev.fid_every or ev.fid_every_steps)


def simulate(cfg: ExperimentConfig, tau: float) -> Run:
    """`train()`'s loop (raydiff/trial.py), with the assumed curves in place of a network: which
    evaluations, refinements, raw-weights tests and fidelity-only evaluations run, and where the
    trial stops. Its schedule, crossing, bisection, interim merge, onsets and stop decision are the
    loop's own functions."""
    ev, stop = cfg.eval, cfg.stop
    budget, k, b, theta = cfg.budget_steps, ev.refine_snapshots, cfg.batch, stop.mem_frac_threshold
    tests, raw = cfg.memorization_tests, cfg.raw_tests
    off_loop = ev.figures == "snapshots"  # the figure schedule saves EMA snapshots; `raydiff measure` measures them
    probes, figures = "loss" in cfg.measured, measures_figures(cfg) and not off_loop
    mem_steps = ev.mem_sample_steps or cfg.diffusion.sample_steps
    nan = float("nan")

    def tested(step: int, names: tuple[str, ...], raw_weights: bool = False) -> dict[str, Any]:
        """The tests' columns at `step`: every test reads the assumed curve (the first is mem_frac)."""
        f, out = assumed_mem_frac(step, tau, theta), {}
        for name in names:
            for c in measures.get(name).column_names():
                out[measures.raw_column(c) if raw_weights else c] = f
        if names and not raw_weights and names[0] == tests[0]:
            out["mem_frac"] = f
        return out

    history: list[dict[str, Any]] = []
    events: list[Event] = []
    schedule = upcoming_evaluations(cfg, 0, history)
    fidelity_at = set(fidelity_schedule(cfg, budget))
    step, count, decision, onset = 0, 0, None, Onsets.of(cfg, history)
    while schedule:
        nxt = schedule.pop(0)
        snaps = refine_steps(step, nxt, k) if k else []
        interim: list[tuple[dict, dict]] = []
        for s in sorted(x for x in fidelity_at if step < x < nxt):  # fidelity-only evaluations
            if off_loop:
                events.append(Event(s, "snapshot", fid_samples=cfg.figure_samples, fid=True))
                continue
            events.append(Event(s, "fidelity", fid_samples=cfg.figure_samples, fid=figures))
            m = {"train_loss": nan, "test_loss": nan, "fid": 0.0 if figures else None}
            interim.append(({**history_row(s, b, 0.0, m), "fidelity_only": True}, m))
        step = nxt
        # the evaluation (evaluation.Evaluator.__call__): probes, memorization tests, figures on their cadence
        f = assumed_mem_frac(step, tau, theta)
        metrics: dict[str, Any] = {**tested(step, tests), "train_loss": nan, "test_loss": nan}
        if probes:
            metrics["train_loss"], metrics["test_loss"] = assumed_losses(step, tau, stop.loss_gap)
        due = step in fidelity_at or (bool(ev.fid_every) and count % ev.fid_every == 0)  # Evaluator.figure_due
        if off_loop and due:
            events.append(Event(step, "snapshot", fid_samples=cfg.figure_samples, fid=True))
        do_fid = figures and due
        if do_fid and mem_steps == cfg.diffusion.sample_steps:  # one sampling pass serves both
            n = ev.num_samples
            events.append(Event(step, "evaluation", n, tests, max(n, cfg.figure_samples) - n, True, probes))
        else:
            n = sequential_count(cfg, [f] * len(tests))
            events.append(Event(step, "evaluation", n, tests, cfg.figure_samples if do_fid else 0, do_fid, probes))
        metrics["fid"] = 0.0 if do_fid else None
        count += 1
        if raw:  # training.refine.raw_memorization: those tests on the raw weights
            events.append(Event(step, "raw", sequential_count(cfg, [f] * len(raw)), raw))
            metrics.update(tested(step, raw, raw_weights=True))
        fresh = crossings(cfg, history, metrics) if snaps else ()
        if fresh:  # training.refine.refine: a binary search per crossing test, sharing the snapshots it evaluates
            interim += refinement(cfg, tau, snaps, fresh, tested, events)
        history += [row for row, _ in merge_interim(interim)]
        history.append(history_row(step, b, 0.0, metrics))
        onset = Onsets.of(cfg, history)
        decision = decide({**onset.series, "step": step, "budget_steps": budget}, stop, onset.found)
        if decision is not None:
            break
        schedule = upcoming_evaluations(cfg, step, history, schedule, onset)
    status = decision.status if decision is not None else "budget"
    return Run(float(tau), step, status, onset.tau, tuple(sorted(events, key=lambda e: e.step)))


def refinement(cfg: ExperimentConfig, tau: float, snaps: list[int], fresh, tested, events: list[Event]) -> list[tuple[dict, dict]]:
    """training.refine.refine on the assumed curves: the snapshots (steps) its binary searches
    (training.refine.search) visit, each evaluated once for the crossing tests (a ratio crossing)
    and once for the probes alone (the loss divergence's), stopping once the bracket is within
    eval.refine_fraction of its upper end."""
    names = tuple(c.measure for c in fresh if not c.probes)

    def evaluate(i: int, probes: bool) -> dict[str, Any]:
        if probes:
            train, test = assumed_losses(snaps[i], tau, cfg.stop.loss_gap)
            return {"train_loss": train, "test_loss": test}
        return tested(snaps[i], names)

    done, seen = search(len(snaps), fresh, evaluate, snaps, cfg.eval.refine_fraction)
    out = []
    for i in sorted(done):
        tests = names if (i, False) in seen else ()
        n = sequential_count(cfg, [done[i][fresh[0].field]] * len(names)) if tests else 0  # ratio crossings come first
        events.append(Event(snaps[i], "refinement", n, tests, probes=(i, True) in seen))
        out.append(({**history_row(snaps[i], cfg.batch, 0.0, done[i]), "refined": True}, done[i]))
    return out


# ------------------------------------------------------------------------------ FLOPs of a run


@dataclass(frozen=True)
class TrialCost:
    """A trial's FLOPs to its expected stop: training, and measurement by kind (KINDS)."""

    run: Run
    tau_source: str  # "prior" | "--tau"
    forward: float  # FLOPs of one forward pass on one image
    training: float
    measurement: dict[str, float] = field(default_factory=dict)  # in the loop, by kind
    # eval.figures: snapshots: the figures measured off the loop on the snapshots kept (`raydiff
    # measure`), beside the in-loop share, not in it; the snapshots' bytes within the budget
    figures_off_loop: float = 0.0
    snapshots: int = 0  # kept within eval.snapshot_budget_mb
    snapshots_dropped: int = 0  # past it
    snapshot_bytes: int = 0

    @property
    def measured(self) -> float:
        return sum(self.measurement.values())

    @property
    def total(self) -> float:
        return self.training + self.measured

    @property
    def share(self) -> float:
        """The in-loop measurement share: the loop's measurement over its training and measurement
        (figures measured off the loop on snapshots are not in it)."""
        return self.measured / self.total if self.total else 0.0

    def gpu_hours(self, tflops: float = H100_BF16_TFLOPS, utilization: float = UTILIZATION) -> float:
        """Training, the loop's measurement and the figures off the loop."""
        return gpu_hours(self.total + self.figures_off_loop, tflops, utilization)

    def to_dict(self, tflops: float = H100_BF16_TFLOPS, utilization: float = UTILIZATION) -> dict[str, Any]:
        r = self.run
        return {
            "tau_assumed": r.tau, "tau_source": self.tau_source, "tau_found": r.tau_found, "stop_step": r.stop_step,
            "status": r.status, "evaluations": r.count("evaluation"), "fid_evaluations": r.fid_count,
            "fidelity_only": r.count("fidelity"), "refinement_evaluations": r.count("refinement"),
            "raw_tests": r.count("raw"), "forward_flops": self.forward, "training_flops": self.training,
            "measurement_flops": dict(self.measurement), "measurement_total_flops": self.measured,
            "total_flops": self.total, "measurement_share": self.share,
            "gpu_hours": self.gpu_hours(tflops, utilization), "figures_off_loop_flops": self.figures_off_loop,
            "snapshots": self.snapshots, "snapshots_dropped": self.snapshots_dropped, "snapshot_bytes": self.snapshot_bytes,
        }  # fmt: skip


def gpu_hours(flops: float, tflops: float = H100_BF16_TFLOPS, utilization: float = UTILIZATION) -> float:
    return flops / (tflops * 1e12 * utilization) / 3600.0


def trial_cost(
    cfg: ExperimentConfig, tau: float | None = None, prior: OnsetPrior | None = None, forward: float | None = None
) -> TrialCost:
    """The trial's FLOPs, on the onset `tau` (steps), else the one `prior` (the space's
    sweep.budget_planner.prior) gives it. `forward` overrides the counted forward FLOPs (the tests'
    hand-counted cases)."""
    source = "--tau" if tau is not None else "prior"
    if tau is None:
        if prior is None:
            raise ValueError("no onset to assume: give tau, or a prior (sweep.budget_planner.prior)")
        tau = prior_tau(prior, cfg.data.n_train, cfg.batch, cfg.train.lr)
    run = simulate(cfg, tau)
    fwd = forward_flops(cfg) if forward is None else forward
    kept, dropped, size = snapshots_kept(cfg, run)
    off = figure_flops(cfg, kept, fwd, references=True) if kept else 0.0
    return TrialCost(run, source, fwd, training_flops(cfg, run, fwd), measurement_flops(cfg, run, fwd), off, kept, dropped, kept * size)


@functools.lru_cache(maxsize=None)
def _state_bytes(model: Any, channels: int, size: int, classes: int) -> int:
    import torch

    from raydiff.models import build_network

    with torch.device("meta"):
        state = build_network(model, channels, size, classes).state_dict()
    return sum(t.numel() * t.element_size() for t in state.values())


def snapshots_kept(cfg: ExperimentConfig, run: Run) -> tuple[int, int, int]:
    """(snapshots kept, dropped past eval.snapshot_budget_mb, bytes of one): a snapshot is the
    evaluated weights' state_dict, as its parameters and buffers take in memory (torch.save adds
    a few kB)."""
    n = run.count("snapshot")
    if not n:
        return 0, 0, 0
    size, channels = cfg.data.shape
    one = _state_bytes(cfg.model, channels, size, cfg.data.num_classes)
    kept = min(n, int(cfg.eval.snapshot_budget_mb * 2**20) // one) if one else n
    return kept, n - kept, one


def training_flops(cfg: ExperimentConfig, run: Run, forward: float) -> float:
    return float(run.stop_step) * cfg.batch * TRAINING_FORWARDS * forward


def test_flops(cfg: ExperimentConfig, name: str, samples: int) -> float:
    """A memorization test's own FLOPs on `samples` samples (beyond drawing them): its feature
    network (the registry's `flops_per_sample`) and its exact nearest-neighbour search, S·N·D·2 —
    in the feature network's space (SSCD: D = 512), else in pixels (D = C·H·W)."""
    m = measures.get(name)
    size, channels = cfg.data.shape
    dim = SSCD_DIM if "embedding" in m.needs else channels * size * size
    return samples * (m.flops_per_sample + cfg.data.n_train * dim * 2)


def measurement_flops(cfg: ExperimentConfig, run: Run, forward: float) -> dict[str, float]:
    """Measurement FLOPs by kind (KINDS) of a simulated run."""
    ev, data = cfg.eval, cfg.data
    n = data.n_train
    guided = 2 if (cfg.diffusion.guidance > 0 and data.num_classes > 0) else 1
    per_sample = forward * guided  # one sampler step of one image
    mem_steps = ev.mem_sample_steps or cfg.diffusion.sample_steps

    out = dict.fromkeys(KINDS, 0.0)
    for name in cfg.memorization_tests:  # a feature network's embeddings of the training images, once per trial
        out["mem_features"] += n * measures.get(name).flops_per_sample
    probe_images = min(ev.probe_images, n, data.n_test)
    if run.fid_count:  # the in-loop figures' reference features, once per trial
        out["fidelity"] += figure_flops(cfg, 0, forward, references=True)
    for e in run.events:
        sampling = e.mem_samples * mem_steps * per_sample
        search = sum(test_flops(cfg, t, e.mem_samples) for t in e.tests)
        if e.kind == "evaluation":
            out["mem_sampling"] += sampling
            out["mem_features"] += search
        elif e.kind in ("raw", "refinement"):
            out["raw_test" if e.kind == "raw" else "refinement"] += sampling + search
        if e.probes:  # the loss onset's refinement evaluates the probes alone: refinement's
            out["refinement" if e.kind == "refinement" else "probes"] += 2 * probe_images * ev.probe_noise_levels * forward
        if e.fid and e.kind != "snapshot":
            out["fidelity"] += e.fid_samples * cfg.diffusion.sample_steps * per_sample  # the figures' own samples
            out["fidelity"] += figure_flops(cfg, 1, forward, sampling=False)
    return out


def figure_flops(cfg: ExperimentConfig, times: int, forward: float, sampling: bool = True, references: bool = False) -> float:
    """The figures (FID, SWD) measured `times` times: the figures' samples each
    (ExperimentConfig.figure_samples; sampling: drawn for them alone, at diffusion.sample_steps,
    as `raydiff measure` does on a snapshot), their features (Inception or the digits classifier)
    and SWD's projections against both splits; with `references`, the reference features a trial
    extracts once (evaluation.Evaluator._references, kept in its ReferenceCache)."""
    ev, data = cfg.eval, cfg.data
    size, n = data.shape[0], data.n_train
    guided = 2 if (cfg.diffusion.guidance > 0 and data.num_classes > 0) else 1
    fid_image, fid_dim = fid_flops_per_image(cfg), FID_DIMS[fid_features(cfg)]
    drawn = cfg.figure_samples
    each = drawn * fid_image
    if sampling:
        each += drawn * cfg.diffusion.sample_steps * forward * guided
    swd = swd_reference_counts(cfg)  # split → its reference points (extracted whenever eval.swd_samples > 0)
    if "swd" in cfg.measured:  # the samples' first swd_samples points and each split's, projected on swd_projections directions
        k = min(ev.swd_samples, drawn)
        each += sum((k + r) * fid_dim * ev.swd_projections * 2 for r in swd.values())
    total = times * each
    if references:
        precomputed = fid_features(cfg) == "inception" and (data.dataset, size) in PRECOMPUTED and ev.fid_reference == "auto"
        if precomputed:  # clean-fid's split statistics; the SWD references are each split's first swd_samples images
            refs = sum(swd.values())
        elif ev.fid_reference == "splits":  # each split's own images (Marion & Wu)
            refs = data.n_test + n
        else:  # the test images, the training images where they outnumber the features (a full-rank covariance), else SWD's
            refs = data.n_test + (n if n > fid_dim else swd.get("train", 0))
        total += refs * fid_image
    return total


# ------------------------------------------------------------------------------ a sweep's table


@dataclass(frozen=True)
class SweepCost:
    trials: tuple[TrialCost, ...]

    @property
    def training(self) -> float:
        return sum(t.training for t in self.trials)

    @property
    def measurement(self) -> dict[str, float]:
        return {k: sum(t.measurement[k] for t in self.trials) for k in KINDS}

    @property
    def measured(self) -> float:
        return sum(self.measurement.values())

    @property
    def total(self) -> float:
        return self.training + self.measured

    @property
    def share(self) -> float:
        return self.measured / self.total if self.total else 0.0

    @property
    def figures_off_loop(self) -> float:
        return sum(t.figures_off_loop for t in self.trials)

    @property
    def snapshot_bytes(self) -> int:
        return sum(t.snapshot_bytes for t in self.trials)


def sweep_cost(exps: list[ExperimentConfig], tau: float | None = None, prior: OnsetPrior | None = None) -> SweepCost:
    return SweepCost(tuple(trial_cost(e, tau, prior) for e in exps))


UNITS = (("PF", 1e15), ("TF", 1e12), ("GF", 1e9), ("MF", 1e6))  # 10¹⁵, 10¹², 10⁹, 10⁶ FLOP


def unit_of(flops: float) -> tuple[str, float]:
    """The largest unit in which `flops` reads ≥ 1 (a table's figures share its total's unit)."""
    return next(((name, scale) for name, scale in UNITS if flops >= scale), UNITS[-1])


def cost_rows(cost: SweepCost, tflops: float = H100_BF16_TFLOPS, utilization: float = UTILIZATION) -> tuple[list[str], list[list[str]]]:
    """The dry run's cost table: one row per trial, then the total; FLOPs in the total's unit. The
    in-loop measurement share; figures measured off the loop on snapshots (eval.figures: snapshots)
    in their own columns, beside it."""
    unit, scale = unit_of(cost.total + cost.figures_off_loop)
    off = any(t.run.count("snapshot") for t in cost.trials)
    cols = ["#", "τ", "stop", "evals / FIDs", f"train {unit}", *(f"{v} {unit}" for v in KINDS.values()), "in-loop share"]
    cols += [f"figures off-loop {unit}", "snapshots (GiB)"] * off + ["GPU-h"]

    def row(label, tau, stop, evals, training, m, share, total, figures, snaps, gib) -> list[str]:
        out = [label, tau, stop, evals, f"{training / scale:,.1f}", *(f"{m[k] / scale:,.1f}" for k in KINDS), f"{share:.1%}"]
        if off:
            out += [f"{figures / scale:,.1f}", f"{snaps} ({gib:,.2f})"]
        return out + [f"{gpu_hours(total + figures, tflops, utilization):,.3g}"]

    rows = []
    for i, t in enumerate(cost.trials):
        r = t.run
        snaps = f"{t.snapshots}" + (f" +{t.snapshots_dropped} over budget" if t.snapshots_dropped else "")
        rows.append(row(str(i), f"{r.tau:,.0f}", f"{r.stop_step:,}", f"{r.count('evaluation')} / {r.fid_count}", t.training,
                        t.measurement, t.share, t.total, t.figures_off_loop, snaps, t.snapshot_bytes / 2**30))  # fmt: skip
    n_evals = sum(t.run.count("evaluation") for t in cost.trials)
    n_fid = sum(t.run.fid_count for t in cost.trials)
    n_snaps = str(sum(t.snapshots for t in cost.trials))
    rows.append(row("total", "", "", f"{n_evals} / {n_fid}", cost.training, cost.measurement, cost.share, cost.total,
                    cost.figures_off_loop, n_snaps, cost.snapshot_bytes / 2**30))  # fmt: skip
    return cols, rows


def assumptions_text(tau: float | None, prior: OnsetPrior | None, tflops: float, utilization: float) -> list[str]:
    if tau is not None:
        onset = f"every trial's onset at τ = {tau:,.0f} steps (--tau)"
    else:
        p = prior
        onset = (f"each trial's onset at the space's prior τ = {p.tau:,.0f} · (N/{p.n_train}) · ({p.batch_size}/B)"
                 f" · ({p.lr:g}/η) steps (sweep.budget_planner.prior; --tau to override)")  # fmt: skip
    return [
        f"Cost to the expected stop, by exact FLOP arithmetic (PF = 10¹⁵ FLOP, TF = 10¹², GF = 10⁹), assuming {onset}:",
        "  mem_frac 0 before τ, then the stop's threshold rising linearly to 1 at 2τ; the test loss departs at τ.",
        f"GPU-h (training, measurement and any figures off the loop) at {tflops:g} TFLOP/s × {utilization:.0%}"
        " utilisation (--gpu-tflops, --gpu-utilization).",
    ]


__all__ = [
    "KINDS", "Event", "Run", "SweepCost", "TrialCost", "assumed_losses", "assumed_mem_frac", "cost_rows",
    "forward_flops", "gpu_hours", "measurement_flops", "sequential_count", "simulate", "sweep_cost", "trial_cost",
]  # fmt: skip
