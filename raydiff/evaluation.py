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

from raydiff.config import ExperimentConfig
from raydiff.data import ImageData, from_model, to_model, train_mean
from raydiff.diffusion import Process
from raydiff.metrics import fid as fidlib
from raydiff.metrics.memorization import Neighbours, fraction_with_interval, memorized_cosine, memorized_pixel, settled
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


class Evaluator:
    def __init__(self, cfg: ExperimentConfig, data: ImageData, process: Process, device: torch.device):
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
        n_gen = max(ev.num_samples, ev.fid_samples if (ev.fid_every or ev.fid_every_steps) else 0)
        self.mem_steps = ev.mem_sample_steps or cfg.diffusion.sample_steps
        g = torch.Generator().manual_seed(ev.sample_seed)
        self.noise = torch.randn(n_gen, c, h, w, generator=g)
        if conditional:  # labels drawn from the training set's label distribution
            pick = torch.randint(0, len(data.y_train), (n_gen,), generator=g)
            self.labels = data.y_train[pick]
        else:
            self.labels = None

        self.extractor = None
        self.fid_refs: dict[str, fidlib.Stats] = {}  # split → reference statistics
        self.swd_ref: np.ndarray | None = None  # [≤ swd_samples, D] features of held-out images
        self.fid_reference = ""
        if ev.fid_every or ev.fid_every_steps:
            self.extractor = fidlib.build_extractor(ev.fid_features, cfg.data.dataset, device, ev.fid_mode)
            self._references(data)
        self.embedding = None
        if ev.memorization_space != "pixel":
            from raydiff.metrics.embedding import load_embedding

            self.embedding = load_embedding(ev.embedding, device)
            self.train_emb = self.embedding(data.x_train)  # [N, D]
        self.count = 0

    def _references(self, data: ImageData) -> None:
        """FID reference statistics of the train and test splits, and the SWD reference features.

        CIFAR-10 with clean-fid's Inception compares with clean-fid's statistics of the whole
        splits (50,000 / 10,000 images), as papers report FID; other data with its own images
        (the first N training images, the n_test held-out ones). SWD needs points, not moments:
        always the first swd_samples held-out images.
        """
        ev, size = self.cfg.eval, data.shape[1]
        sources = {}
        test_feats = None
        dataset, mode = self.cfg.data.dataset, self.extractor.mode
        if ev.fid_reference == "auto" and fidlib.has_precomputed(self.extractor, dataset, size):
            for split in ("test", "train"):
                self.fid_refs[split] = fidlib.cleanfid_reference(dataset, size, split, mode)
                sources[split] = "cleanfid:" + fidlib.cleanfid_stats_name(dataset, size, mode, split)
        else:
            test_feats = fidlib.batched_features(self.extractor, data.x_test)  # [M, D]
            self.fid_refs["test"] = fidlib.Stats.of(test_feats)
            sources["test"] = f"images:test[{len(data.x_test)}]"
            dim = getattr(self.extractor, "dim", 0)
            if len(data.x_train) > dim:  # a full-rank covariance needs more images than features
                self.fid_refs["train"] = fidlib.Stats.of(fidlib.batched_features(self.extractor, data.x_train))
                sources["train"] = f"images:train[{len(data.x_train)}]"
            else:  # fid_train stays null, and the reference column says why
                sources["train"] = f"skipped:N={len(data.x_train)}≤{dim} feature dims (rank-deficient covariance)"
        if ev.swd_samples:
            k = min(ev.swd_samples, len(data.x_test))
            if test_feats is None:
                test_feats = fidlib.batched_features(self.extractor, data.x_test[:k])
            self.swd_ref = test_feats[:k]
            sources["swd"] = f"images:test[{k}]"
        self.fid_reference = ";".join(f"{k}={v}" for k, v in sources.items())

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

    def _autocast(self):
        enabled = self.device.type == "cuda" and self.cfg.train.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def __call__(self, net: nn.Module, step: int, memorization_only: bool = False, fid: bool = False) -> dict[str, Any]:
        """All metrics; or, with memorization_only (the trial's bracket refinement), the
        memorization test alone: no loss probes (NaN), no FID, and the FID cadence is not advanced."""
        ev = self.cfg.eval
        was_training = net.training
        net.eval()
        t0 = time.perf_counter()
        out: dict[str, Any] = {"train_loss": math.nan, "test_loss": math.nan}
        if not memorization_only:
            with self._autocast():
                out["train_loss"] = self.train_probe.loss(self.process, net)
                out["test_loss"] = self.test_probe.loss(self.process, net)
        # FID on its cadence (every fid_every-th evaluation), or where the fidelity schedule asks (`fid`)
        do_fid = not memorization_only and (fid or (bool(ev.fid_every) and self.count % ev.fid_every == 0))
        fid_set = None
        if do_fid and self.mem_steps == self.cfg.diffusion.sample_steps:  # one sampling pass serves both
            samples = self.sample(net, max(ev.num_samples, ev.fid_samples), floats=ev.mem_on_floats)
            mem_set, flags, nb = self._memorization(net, samples[: ev.num_samples])
            fid_set = samples[: ev.fid_samples]  # uint8 [n, C, H, W] (floats: model range, rounded below)
            if ev.mem_on_floats:
                fid_set = from_model(fid_set, *self.norm)
        else:  # the memorization test's own samples (in rounds: eval.sequential_round), FID's the full count
            mem_set, flags, nb = self._memorization(net)
            if do_fid:
                fid_set = self.sample(net, ev.fid_samples)
        out["mem_samples"] = len(mem_set)
        if "pixel" in flags:
            frac = fraction_with_interval(flags["pixel"])  # exact Clopper–Pearson 95% interval
            out.update(mem_frac=frac.value, mem_frac_lo=frac.lo, mem_frac_hi=frac.hi)
            k = ev.save_samples
            if k:
                out["samples_npy_b64"] = encode_array(mem_set[:k].numpy())
                out["samples_nn_index"] = nb.index[:k].cpu().tolist()
                out["samples_nn_ratio"] = (nb.d1[:k] / nb.d2[:k]).cpu().tolist()
        if "features" in flags:
            frac = fraction_with_interval(flags["features"])  # exact Clopper–Pearson 95% interval
            prefix = "mem_frac" if ev.memorization_space == "features" else "mem_frac_features"
            out.update({prefix: frac.value, f"{prefix}_lo": frac.lo, f"{prefix}_hi": frac.hi})
            out["mem_embedding"] = self.embedding.name

        out.update(fid=None, fid_train=None, sliced_wasserstein=None)
        if do_fid:
            out.update(self._fidelity(fid_set))
        out["eval_s"] = time.perf_counter() - t0
        if not memorization_only:
            self.count += 1
        net.train(was_training)
        return out


    def _memorization(
        self, net: nn.Module, given: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Neighbours | None]:
        """The memorization test(s) of eval.memorization_space on `given` samples, or on samples
        generated here: all num_samples at once, or in rounds (eval.sequential_round, then each
        round as many as all before it: r, 2r, 4r, … in total) until every test's interval is
        settled (metrics/memorization.settled) or num_samples are used. With eval.mem_on_floats,
        `given` and the pixel test are the sampler's floats (model range), unrounded.
        Returns (samples uint8 [S, C, H, W], space → memorized flags [S], pixel neighbours)."""
        ev = self.cfg.eval
        spaces = [s for s in ("pixel", "features") if ev.memorization_space in (s, "both")]
        total = len(given) if given is not None else ev.num_samples
        first = ev.sequential_round if (given is None and ev.sequential_round) else total
        looks, threshold = sequential_looks(first, total), self.cfg.stop.mem_frac_threshold
        sets: list[torch.Tensor] = []
        flags: dict[str, list[torch.Tensor]] = {s: [] for s in spaces}
        nbs: list[Neighbours] = []
        n = 0
        while n < total:
            size = min(total - n, max(first, n))  # r, then doubling the count so far
            x = given[n : n + size] if given is not None else self.sample(net, size, self.mem_steps, start=n, floats=ev.mem_on_floats)
            x_model = x if ev.mem_on_floats else to_model(x, *self.norm)  # the pixel test's input, model range
            if ev.mem_on_floats:
                x = from_model(x, *self.norm)
            sets.append(x)
            if "pixel" in flags:
                f, nb = memorized_pixel(x_model.to(self.device), self.train_flat, ev.mem_ratio)
                flags["pixel"].append(f.cpu())
                nbs.append(nb)
            if "features" in flags:
                flags["features"].append(memorized_cosine(self.embedding(x), self.train_emb, ev.mem_cosine)[0].cpu())
            n += len(x)
            if first < total and all(settled(int(sum(int(f.sum()) for f in fs)), n, threshold, looks) for fs in flags.values()):
                break
        nb = Neighbours(*(torch.cat([getattr(b, k) for b in nbs]) for k in ("d1", "d2", "index"))) if nbs else None
        return torch.cat(sets), {s: torch.cat(fs) for s, fs in flags.items()}, nb

    @torch.no_grad()
    def fidelity(self, net: nn.Module, step: int) -> dict[str, Any]:
        """A fidelity-only evaluation (eval.fid_every_steps): FID and SWD of fid_samples samples,
        no memorization test and no loss probes; the memorization cadence is not advanced. Its
        sampling draws only from the evaluator's own generators, so training is unchanged by it."""
        was_training = net.training
        net.eval()
        t0 = time.perf_counter()
        out: dict[str, Any] = {"train_loss": math.nan, "test_loss": math.nan, "fid": None, "fid_train": None, "sliced_wasserstein": None}
        out.update(self._fidelity(self.sample(net, self.cfg.eval.fid_samples)))
        out["eval_s"] = time.perf_counter() - t0
        net.train(was_training)
        return out

    def _fidelity(self, fid_set: torch.Tensor) -> dict[str, Any]:
        """FID against the references, and SWD, of generated images uint8 [n, C, H, W]."""
        ev, out = self.cfg.eval, {}
        feats = fidlib.batched_features(self.extractor, fid_set)  # [fid_samples, D]
        gen = fidlib.Stats.of(feats)
        out["fid"] = fidlib.frechet(gen, self.fid_refs[ev.fid_split]) if ev.fid_split in self.fid_refs else None
        out["fid_train"] = fidlib.frechet(gen, self.fid_refs["train"]) if "train" in self.fid_refs else None
        if self.swd_ref is not None:
            k = min(ev.swd_samples, len(feats))
            out["sliced_wasserstein"] = sliced_wasserstein(feats[:k], self.swd_ref, ev.swd_projections, seed=ev.sample_seed)
            out["swd_samples"] = k
        out["fid_extractor"] = f"{self.extractor.name}/{self.extractor.mode}"
        out["fid_split"] = ev.fid_split
        out["fid_samples"] = int(ev.fid_samples)
        out["fid_reference"] = self.fid_reference
        return out


def encode_array(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_array(s: str | bytes) -> np.ndarray:
    raw = base64.b64decode(s) if isinstance(s, str) else s
    return np.load(io.BytesIO(raw), allow_pickle=False)
