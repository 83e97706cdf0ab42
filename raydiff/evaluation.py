"""One evaluation of a model during training: what the trial reports on its cadence.

Everything here is fixed at construction so that evaluations differ only by the weights: the
same initial noise and labels for the samples, the same probe images, noise levels and noise for
the losses, the same FID reference statistics. Curves then move because the model moved.
"""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from raydiff import measures
from raydiff.config import ExperimentConfig
from raydiff.config.sections import needs
from raydiff.data import ImageData, from_model, to_model, train_mean
from raydiff.diffusion import Process
from raydiff.measures import Verdicts
from raydiff.metrics import features
from raydiff.metrics import fid as fidlib
from raydiff.metrics.memorization import Neighbours, fraction_with_interval, nearest_two, settled
from raydiff.metrics.swd import sliced_wasserstein


@dataclass(frozen=True)
class Probe:
    """Fixed (x0, t, noise) triples: the denoising loss on them is comparable across steps."""

    x0: torch.Tensor  # [P·K, C, H, W]
    labels: torch.Tensor | None  # [P·K]
    t: torch.Tensor  # [P·K]
    noise: torch.Tensor  # [P·K, C, H, W]

    @classmethod
    def build(
        cls, images: torch.Tensor, labels: torch.Tensor | None, times: torch.Tensor, seed: int, device,
        norm: tuple[str, torch.Tensor | None] = ("symmetric", None),  # (data.normalization, training mean)
    ) -> "Probe":  # fmt: skip
        k = times.shape[0]
        x0 = to_model(images, *norm).repeat_interleave(k, dim=0)  # each image at each of k levels
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=g)
        t = times.repeat(images.shape[0])
        lab = labels.repeat_interleave(k) if labels is not None else None
        return cls(x0.to(device), None if lab is None else lab.to(device), t.to(device), noise.to(device))

    @torch.no_grad()
    def loss(self, process: Process, net: nn.Module, batch: int = 1024) -> float:
        total = 0.0
        for i in range(0, self.x0.shape[0], batch):
            sl = slice(i, i + batch)
            lab = None if self.labels is None else self.labels[sl]
            total += float(process.loss(net, self.x0[sl], lab, t=self.t[sl], noise=self.noise[sl]).sum())
        return total / self.x0.shape[0]


def sequential_looks(first: int, total: int) -> int:
    """How many times the sequential test may stop: after first, 2·first, 4·first, … and total."""
    n, looks = first, 1
    while n < total:
        n, looks = min(total, 2 * n), looks + 1
    return looks


def sequential_plan(round_: int | None, total: int, threshold: float) -> tuple[int, int]:
    """(first round, looks) of the sequential memorization test over `total` samples.

    The looks are those the configured round implies (r, 2r, 4r, … and total), and every look
    keeps that Bonferroni share of the level. The first round is the configured one doubled until
    it can settle on its own — none of its samples memorized puts the interval below `threshold`
    (0 of 32 cannot at 0.1 over three looks: its upper bound is 0.139; 0 of 64 can: 0.072): a round
    that cannot settle is a batch drawn for nothing. Dropping it leaves every other look, its
    sample count and its level, and so every decision, as it was (the test only grows more
    conservative). No round, or one of `total` or more: one look at all of them."""
    if not round_ or round_ >= total:
        return total, 1
    looks = sequential_looks(round_, total)
    first = round_
    while first < total and not settled(0, first, threshold, looks):
        first = min(total, 2 * first)
    return first, (looks if first < total else 1)


class MeasureContext:
    """What the measures of one evaluation compute from (raydiff/measures: `compute(ctx)`,
    `verdicts(ctx, samples)`): the evaluated network's samples, their nearest training images
    (computed once per sample set), the trial's feature networks with the training images'
    embeddings, the probes and the fidelity references."""

    def __init__(self, evaluator: "Evaluator", net: nn.Module, samples: torch.Tensor | None = None, model_samples: torch.Tensor | None = None):
        self.cfg, self.evaluator, self.net, self.samples = evaluator.cfg, evaluator, net, samples
        # the same samples in the model's range before rounding to uint8 (eval.mem_on_floats), if kept
        self.model_samples = model_samples
        self._neighbours: dict[int, Neighbours] = {}
        self._features: np.ndarray | None = None

    def neighbours(self, samples: torch.Tensor) -> Neighbours:
        """The two nearest training images of uint8 samples [S, C, H, W], in the model's pixel range
        (the unrounded floats where the context holds them for these samples)."""
        key = id(samples)
        if key not in self._neighbours:
            ev = self.evaluator
            x = self.model_samples if (samples is self.samples and self.model_samples is not None) else to_model(samples, *ev.norm)
            self._neighbours[key] = nearest_two(x.to(ev.device), ev.train_flat)
        return self._neighbours[key]

    def embed(self, network: str, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(samples' embeddings [S, D], the training images' [N, D]) in a feature network's space."""
        net, train_emb = self.evaluator.networks[network]
        return net(samples), train_emb

    def probe_loss(self, split: str) -> float:
        ev = self.evaluator
        probe = ev.train_probe if split == "train" else ev.test_probe
        with ev._autocast():
            return probe.loss(ev.process, self.net)

    def _fid_features(self) -> np.ndarray:
        if self._features is None:
            self._features = fidlib.batched_features(self.evaluator.extractor, self.samples)  # [S, D]
        return self._features

    def frechet(self) -> dict[str, Any]:
        """FID of the context's samples against each split's reference: the first
        `cfg.fid_counts[split]` samples (moments and sqrtm on a GPU there). `fid` is
        eval.fid_split's, `fid_train` the training split's."""
        ev, cfg = self.evaluator, self.cfg.eval
        feats, counts = self._fid_features(), self.cfg.fid_counts
        gen: dict[int, fidlib.Stats] = {}  # sample count → the first that many samples' moments

        def fid(split: str) -> float | None:
            if split not in ev.fid_refs:
                return None
            k = min(counts[split], len(feats))
            if k not in gen:
                gen[k] = ev.stats(feats[:k])
            return fidlib.frechet(gen[k], ev.fid_refs[split], ev.device)

        return {
            "fid": fid(cfg.fid_split), "fid_train": fid("train"),
            "fid_extractor": f"{ev.extractor.name}/{ev.extractor.mode}", "fid_split": cfg.fid_split,
            "fid_samples": min(counts[cfg.fid_split], len(feats)), "fid_train_samples": min(counts["train"], len(feats)),
            "fid_reference": ev.fid_reference,
        }  # fmt: skip

    def sliced_wasserstein(self) -> dict[str, Any]:
        """SWD, in the FID features, of the context's first swd_samples samples to the first
        swd_samples held-out images (`sliced_wasserstein`) and training images (at most N:
        `sliced_wasserstein_train`); `swd_samples`, `swd_train_samples`: the samples used."""
        ev, cfg = self.evaluator, self.cfg.eval
        feats, out = self._fid_features(), {}
        k = min(cfg.swd_samples, len(feats))
        for split, ref in ev.swd_refs.items():
            suffix = "" if split == "test" else "_train"
            out[f"sliced_wasserstein{suffix}"] = sliced_wasserstein(feats[:k], ref, cfg.swd_projections, seed=cfg.sample_seed)
            out[f"swd{suffix}_samples"] = k
        return out


class Evaluator:
    """Everything an evaluation needs, fixed at construction. `figures`: build for these fidelity
    measures alone (raydiff measure on snapshots: no memorization test, no feature network for one).
    `cache`: where the figures' reference features are kept between evaluators of one trial (the
    trial's snapshot folder: snapshots.ReferenceCache), so they are extracted once per trial."""

    def __init__(
        self, cfg: ExperimentConfig, data: ImageData, process: Process, device: torch.device,
        figures: tuple[str, ...] | None = None, cache: fidlib.ReferenceCache | None = None,
    ):  # fmt: skip
        self.cfg, self.process, self.device = cfg, process, device
        ev = cfg.eval
        c, h, w = data.shape
        conditional = data.num_classes > 0
        self.train_x = data.x_train  # uint8 [N, C, H, W], CPU: the memorization reference
        # the model's range (data.normalization) and back, with the training images' mean (centered)
        self.norm = (cfg.data.normalization, train_mean(cfg.data.normalization, data.x_train))
        self.train_flat = to_model(data.x_train, *self.norm).reshape(len(data.x_train), -1).to(device)

        # train and test probes: as many images of each, on the same noise levels with the same noise,
        # so their gap measures the images (memorization), not the draw
        times = process.probe_times(ev.probe_noise_levels)
        p = min(ev.probe_images, len(data.x_train), len(data.x_test))
        self.train_probe = Probe.build(
            data.x_train[:p], data.y_train[:p] if conditional else None, times, ev.sample_seed + 1, device, self.norm
        )
        self.test_probe = Probe.build(
            data.x_test[:p], data.y_test[:p] if conditional else None, times, ev.sample_seed + 1, device, self.norm
        )

        # the same initial noise and labels at every evaluation
        n_gen = max(ev.num_samples, cfg.figure_samples if (figures is not None or ev.fid_every or ev.fid_every_steps) else 0)
        self.mem_steps = ev.mem_sample_steps or cfg.diffusion.sample_steps
        g = torch.Generator().manual_seed(ev.sample_seed)
        self.noise = torch.randn(n_gen, c, h, w, generator=g)
        if conditional:  # labels drawn from the training set's label distribution
            pick = torch.randint(0, len(data.y_train), (n_gen,), generator=g)
            self.labels = data.y_train[pick]
        else:
            self.labels = None

        # the trial's measures (raydiff/measures), by kind; the first memorization test is mem_frac's
        self.measured = cfg.measured if figures is None else tuple(figures)
        self.tests = [measures.get(m)() for m in cfg.memorization_tests] if figures is None else []
        # figures measured off the loop (eval.figures: snapshots) are not measured here
        off_loop = figures is None and ev.figures == "snapshots"
        self.others = {
            m: measures.get(m)() for m in self.measured if measures.get(m).kind != "memorization" and not (off_loop and measures.get(m).kind == "fidelity")
        }  # fmt: skip
        self.plan = sequential_plan(ev.sequential_round, ev.num_samples, cfg.stop.mem_frac_threshold)  # (first round, looks)
        self.extractor = None
        self.fid_refs: dict[str, fidlib.Stats] = {}  # split → reference statistics
        self.swd_refs: dict[str, np.ndarray] = {}  # split → [≤ swd_samples, D] features of its first images
        self.fid_reference = ""
        if "fid_features" in needs(tuple(self.others)) and (figures is not None or ev.fid_every or ev.fid_every_steps):
            self.extractor = fidlib.build_extractor(ev.fid_features, cfg.data.dataset, device, ev.fid_mode, ev.feature_precision)
            self._references(data, cache)
        # feature networks the memorization tests need: name → (network, training images' embeddings [N, D])
        self.networks: dict[str, tuple[Any, torch.Tensor]] = {}
        for name in features.networks_needed(cfg) if self.tests else ():  # SSCD, DINOv2, CLIP, Inception …
            net = features.load(name, cfg, device)
            self.networks[name] = (net, net(data.x_train))
        self.embedding = self.networks["embedding"][0] if "embedding" in self.networks else None  # named in mem_embedding
        self.count = 0

    def _references(self, data: ImageData, cache: fidlib.ReferenceCache | None = None) -> None:
        """FID reference statistics of the train and test splits, and the SWD reference features.

        eval.fid_reference `auto`: CIFAR-10 with clean-fid's Inception compares with clean-fid's
        statistics of the whole splits (50,000 / 10,000 images), as most papers report FID; other
        data with its own images. `images`: the data's images (the n_test held-out ones, the first
        N training images; the training split only where N exceeds the feature width, for a
        full-rank covariance). `splits` (Marion & Wu): each split's own images always, each
        compared with as many samples as it holds (ExperimentConfig.fid_counts). SWD needs points,
        not moments: the first swd_samples images of each split. Features of the data's images are
        extracted once per trial (`cache`) and kept as moments and SWD points.
        """
        ev, size = self.cfg.eval, data.shape[1]
        sources = {}
        dataset, mode = self.cfg.data.dataset, self.extractor.mode
        swd_k = swd_reference_counts(self.cfg)  # split → SWD reference images (whichever figures run: one provenance)
        dim = getattr(self.extractor, "dim", 0)
        precomputed = ev.fid_reference == "auto" and fidlib.has_precomputed(self.extractor, dataset, size)
        for split, images in (("test", data.x_test), ("train", data.x_train)):
            k = swd_k.get(split, 0)
            if precomputed:  # the moments from clean-fid; the SWD points from the images
                self.fid_refs[split] = fidlib.cleanfid_reference(dataset, size, split, mode)
                sources[split] = "cleanfid:" + fidlib.cleanfid_stats_name(dataset, size, mode, split)
                if k:
                    self.swd_refs[split] = self._image_reference(split, images[:k], cache, moments=False).points
                continue
            if split == "test" or len(images) > dim or ev.fid_reference == "splits":
                ref = self._image_reference(split, images, cache, points=k)
                self.fid_refs[split] = ref.stats
                width = len(ref.stats.mu)  # a covariance of M images has rank ≤ M − 1
                rank = "" if len(images) > width else f" (rank ≤ {len(images) - 1} < {width} feature dims)"
                sources[split] = f"images:{split}[{len(images)}]{rank}"
            else:  # fid_train stays null, and the reference column says why
                ref = self._image_reference(split, images[:k], cache, moments=False) if k else None
                sources[split] = f"skipped:N={len(images)}≤{dim} feature dims (rank-deficient covariance)"
            if k:
                self.swd_refs[split] = ref.points[:k]
        for split, k in swd_k.items():
            sources[f"swd_{split}" if split == "train" else "swd"] = f"images:{split}[{k}]"
        if getattr(self.extractor, "resize_name", None):  # which resize fed the feature network
            sources["resize"] = self.extractor.resize_name
        self.fid_reference = ";".join(f"{k}={v}" for k, v in sources.items())

    def _image_reference(self, split: str, images: torch.Tensor, cache: fidlib.ReferenceCache | None, points: int | None = None, moments: bool = True) -> fidlib.Reference:
        """The feature network's moments of `images` (uint8 [M, C, H, W]) and its features of the
        first `points` of them (all: None), from `cache` when an evaluator of this trial has
        extracted them already."""
        points = len(images) if points is None else points
        key = fidlib.reference_key(self.extractor, self.cfg.eval.feature_precision, split, images, moments, points) if cache is not None else ""
        ref = cache.get(key) if cache is not None else None  # the images' digest only where a cache can hit
        if ref is None:
            feats = fidlib.batched_features(self.extractor, images)  # [M, D]
            ref = fidlib.Reference(self.stats(feats) if moments else None, feats[:points])
            if cache is not None:
                cache.put(key, ref)
        return ref

    def stats(self, feats: np.ndarray) -> fidlib.Stats:
        """Mean and covariance of features [S, D]: on a GPU there in float64, else with numpy."""
        return fidlib.Stats.of(torch.from_numpy(feats).to(self.device) if self.device.type == "cuda" else feats)

    @torch.no_grad()
    def sample(self, net: nn.Module, n: int, steps: int | None = None, start: int = 0, floats: bool = False) -> torch.Tensor:
        """n generated images, uint8 [n, C, H, W], from the fixed initial noise [start, start + n)
        (a stochastic sampler's own draws are seeded by `start` too: a round of the sequential
        test is the same at every evaluation). With `floats`, the sampler's output in the model's
        range, float32 [n, C, H, W], unrounded (eval.mem_on_floats)."""
        ev, cfg = self.cfg.eval, self.cfg.diffusion
        out = []
        gen = torch.Generator().manual_seed(ev.sample_seed + 3 + start)
        for i in range(start, start + n, ev.sample_batch):
            sl = slice(i, min(start + n, i + ev.sample_batch))
            lab = None if self.labels is None else self.labels[sl].to(self.device)
            with self._autocast():
                x = self.process.sample(
                    net, self.noise[sl].to(self.device), lab, steps=steps or cfg.sample_steps,
                    sampler=cfg.resolved_sampler, guidance=cfg.guidance, generator=gen,
                )  # fmt: skip
            out.append(x.float().cpu() if floats else from_model(x.float(), *self.norm).cpu())
        return torch.cat(out)

    def figure_due(self, fid: bool) -> bool:
        """This evaluation is on the figure schedule: the fidelity schedule's step (`fid`), or
        every fid_every-th evaluation (the cadence `__call__` follows)."""
        ev = self.cfg.eval
        return fid or (bool(ev.fid_every) and self.count % ev.fid_every == 0)

    def _autocast(self):
        enabled = self.device.type == "cuda" and self.cfg.train.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def __call__(
        self, net: nn.Module, step: int, memorization_only: bool = False, fid: bool = False, tests: tuple[str, ...] | None = None,
        probes: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Every measure of the trial; or, with memorization_only (the trial's bracket refinement,
        the raw weights' test), the memorization tests alone (`tests`: these only; `()`: none): no
        loss probes (NaN) unless `probes` (the loss onset's refinement), no FID, and the FID cadence
        is not advanced."""
        ev = self.cfg.eval
        was_training = net.training
        net.eval()
        t0 = time.perf_counter()
        out: dict[str, Any] = {"train_loss": math.nan, "test_loss": math.nan}
        if (probes or not memorization_only) and "loss" in self.others:
            out.update(self.others["loss"].compute(MeasureContext(self, net)))
        # FID on its cadence (every fid_every-th evaluation), or where the fidelity schedule asks (`fid`)
        do_fid = self.extractor is not None and not memorization_only and (fid or (bool(ev.fid_every) and self.count % ev.fid_every == 0))
        tests_run = [t for t in self.tests if tests is None or t.name in tests]
        fid_set = None
        if do_fid and self.mem_steps == self.cfg.diffusion.sample_steps:  # one sampling pass serves both
            samples = self.sample(net, max(ev.num_samples, self.cfg.figure_samples), floats=ev.mem_on_floats)
            mem_set, verdicts = self._memorization(net, tests_run, samples[: ev.num_samples])
            fid_set = samples[: self.cfg.figure_samples]  # uint8 [n, C, H, W] (floats: model range, rounded below)
            if ev.mem_on_floats:
                fid_set = from_model(fid_set, *self.norm)
        else:  # the memorization test's own samples (in rounds: eval.sequential_round), FID's the full count
            mem_set, verdicts = self._memorization(net, tests_run)
            if do_fid:
                fid_set = self.sample(net, self.cfg.figure_samples)
        out["mem_samples"] = len(mem_set)
        for i, test in enumerate(tests_run):
            frac = fraction_with_interval(verdicts[test.name].copied)  # exact Clopper–Pearson 95% interval
            columns = {test.prefix: frac.value, f"{test.prefix}_lo": frac.lo, f"{test.prefix}_hi": frac.hi}
            if i == 0 and test is self.tests[0]:  # mem_frac: the trial's first memorization test
                columns.update(mem_frac=frac.value, mem_frac_lo=frac.lo, mem_frac_hi=frac.hi)
            out.update(columns)
        if "pixel" in verdicts and ev.save_samples:
            k, v = ev.save_samples, verdicts["pixel"]
            out["samples_npy_b64"] = encode_array(mem_set[:k].numpy())
            out["samples_nn_index"] = v.nearest[:k].tolist()
            out["samples_nn_ratio"] = v.score[:k].tolist()
        if self.embedding is not None and "features" in verdicts:
            out["mem_embedding"] = self.embedding.name
        if verdicts:
            out["ledger"] = ledger(step, verdicts)

        out.update(fid=None, fid_train=None, sliced_wasserstein=None)
        if do_fid:
            out.update(self._fidelity(fid_set, net))
        out["eval_s"] = time.perf_counter() - t0
        if not memorization_only:
            self.count += 1
        net.train(was_training)
        return out

    def _memorization(
        self, net: nn.Module, tests: list, given: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, Verdicts]]:
        """The memorization tests on `given` samples, or on samples generated here: all
        num_samples at once, or in rounds (the sequential test: `sequential_plan`'s first round, then each round
        as many as all before it: r, 2r, 4r, … in total) until every test's interval is settled
        (metrics/memorization.settled) or num_samples are used. With eval.mem_on_floats, `given`
        and the pixel test's neighbours are the sampler's floats (model range), unrounded.
        Returns (samples uint8 [S, C, H, W], test name → its verdicts on them)."""
        ev = self.cfg.eval
        total = len(given) if given is not None else ev.num_samples
        first, looks = self.plan if (given is None and total == ev.num_samples) else (total, 1)
        threshold = self.cfg.stop.mem_frac_threshold
        sets: list[torch.Tensor] = []
        found: dict[str, list[Verdicts]] = {t.name: [] for t in tests}
        n = 0
        while n < total and tests:
            size = min(total - n, max(first, n))  # r, then doubling the count so far
            x = given[n : n + size] if given is not None else self.sample(net, size, self.mem_steps, start=n, floats=ev.mem_on_floats)
            x_model = x if ev.mem_on_floats else None  # the sampler's floats (model range), unrounded
            if ev.mem_on_floats:
                x = from_model(x, *self.norm)
            sets.append(x)
            ctx = MeasureContext(self, net, x, x_model)
            for t in tests:
                found[t.name].append(t.verdicts(ctx, x))
            n += len(x)
            if first < total and all(settled(sum(int(v.copied.sum()) for v in vs), n, threshold, looks) for vs in found.values()):
                break
        if not sets:
            return torch.empty(0, dtype=torch.uint8), {}
        joined = {
            name: Verdicts(*(torch.cat([getattr(v, f) for v in vs]) for f in ("copied", "nearest", "score"))) for name, vs in found.items()
        }
        return torch.cat(sets), joined

    @torch.no_grad()
    def fidelity(self, net: nn.Module, step: int) -> dict[str, Any]:
        """A fidelity-only evaluation (eval.fid_every_steps): FID and SWD of the figures' samples (ExperimentConfig.figure_samples),
        no memorization test and no loss probes; the memorization cadence is not advanced. Its
        sampling draws only from the evaluator's own generators, so training is unchanged by it."""
        was_training = net.training
        net.eval()
        t0 = time.perf_counter()
        out: dict[str, Any] = {"train_loss": math.nan, "test_loss": math.nan, "fid": None, "fid_train": None, "sliced_wasserstein": None}
        out.update(self._fidelity(self.sample(net, self.cfg.figure_samples), net))
        out["eval_s"] = time.perf_counter() - t0
        net.train(was_training)
        return out

    def _fidelity(self, fid_set: torch.Tensor, net: nn.Module) -> dict[str, Any]:
        """The trial's figures (FID, SWD: raydiff/measures' fidelity kind) of generated images uint8 [n, C, H, W]."""
        ctx, out = MeasureContext(self, net, fid_set), {}
        for m in self.others.values():
            if m.kind == "fidelity":
                out.update(m.compute(ctx))
        return out


def swd_reference_counts(cfg: ExperimentConfig) -> dict[str, int]:
    """SWD's reference points per split: the first eval.swd_samples images of each (at most the
    split's size), or none with swd_samples 0. The cost model counts the same."""
    n = cfg.eval.swd_samples
    return {"test": min(n, cfg.data.n_test), "train": min(n, cfg.data.n_train)} if n else {}


def ledger(step: int, verdicts: dict[str, Verdicts]) -> dict[str, Any]:
    """One evaluation's per-sample record (raydiff/ledger.py writes it): its step and, as
    equal-length lists, each sample's index in the evaluation's sample set and, per memorization
    test, its nearest training image, score and verdict (`nearest_<test>`, `score_<test>`,
    `copied_<test>`)."""
    out: dict[str, Any] = {"step": int(step)}
    n = None
    for test, v in verdicts.items():
        cols = {
            f"nearest_{test}": np.asarray(v.nearest, dtype=np.int64).reshape(-1).tolist(),
            f"score_{test}": np.asarray(v.score, dtype=np.float64).reshape(-1).tolist(),
            f"copied_{test}": np.asarray(v.copied, dtype=bool).reshape(-1).tolist(),
        }
        lengths = {len(c) for c in cols.values()}
        if len(lengths) != 1 or (n is not None and lengths != {n}):
            raise ValueError(f"the verdicts of {test!r} do not cover the same samples as the others")
        n = lengths.pop()
        out.update(cols)
    out["sample"] = list(range(n or 0))
    return out


def encode_array(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_array(s: str | bytes) -> np.ndarray:
    raw = base64.b64decode(s) if isinstance(s, str) else s
    return np.load(io.BytesIO(raw), allow_pickle=False)
