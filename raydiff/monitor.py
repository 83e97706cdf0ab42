"""raydiff's memorization monitor, for anyone's training loop.

    monitor = MemorizationMonitor(train_images)          # [N, C, H, W], the images the model trains on
    for step in ...:
        ...                                              # your training step
        if step % 500 == 0:
            r = monitor.evaluate(generate(128), step)    # samples in the same range as train_images
            print(step, r.f_mem, r.interval, r.onset_step)
            if r.stop:
                break

The same test, interval and onset rule the sweeps use (Bonnaire et al. 2025): a sample is
memorized when ‖x − a₁‖ / ‖x − a₂‖ < 1/3 for its two nearest training images a₁, a₂ (exact, chunked
nearest neighbours); f_mem is the memorized fraction with its exact Clopper–Pearson 95% interval;
onset is the first evaluation of the first run of `patience` consecutive ones with f_mem ≥
`threshold`. Optionally the feature-space test too (cosine similarity of embeddings). Needs torch
and numpy only; `report_to_tune=True` also sends each result to Ray Tune when called in a trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from raydiff.metrics.memorization import distance_ratio, fraction_with_interval, memorized_cosine, memorized_pixel, nearest_two
from raydiff.metrics.onset import mem_onset

__all__ = ["MemorizationMonitor", "MonitorResult"]


class _MonitorContext:
    """What a registered memorization test asks of an evaluation, answered by a monitor: its
    thresholds, the samples' pixel neighbours, a feature network's embeddings (train's cached)."""

    def __init__(self, monitor: "MemorizationMonitor"):
        self.monitor = monitor
        th = dict(monitor.thresholds or {})
        self.cfg = SimpleNamespace(eval=SimpleNamespace(
            mem_ratio=th.get("pixel", monitor.ratio), mem_cosine=th.get("features", monitor.cosine),
            mem_thresholds=tuple(th.items()),
        ))  # fmt: skip

    def neighbours(self, samples: torch.Tensor):
        return nearest_two(samples.float(), self.monitor._train)

    def embed(self, network: str, samples: torch.Tensor):
        m = self.monitor
        cache = m.__dict__.setdefault("_train_embeddings", {})
        net = m._networks()[network]
        if network not in cache:
            cache[network] = net(m.train_images)
        return net(samples), cache[network]


@dataclass(frozen=True)
class MonitorResult:
    step: int
    f_mem: float  # memorized fraction of the samples (NaN: no samples, or non-finite ones)
    lo: float  # its exact 95% interval
    hi: float
    nearest: np.ndarray  # [S] int64: each sample's nearest training image (index into train_images)
    ratio: np.ndarray  # [S] float: ‖x − a₁‖ / ‖x − a₂‖ (memorized where < the ratio threshold)
    onset_step: int | None  # the onset so far (None: not yet, or not yet confirmed)
    stop: bool  # the onset is confirmed: by the rule, the model now copies its training set
    f_mem_features: float | None = None  # the feature-space test, when an embedding was given
    features_interval: tuple[float, float] | None = None

    @property
    def interval(self) -> tuple[float, float]:
        return (self.lo, self.hi)


@dataclass
class MemorizationMonitor:
    """Memorization of generated samples against a model's training images, evaluation by
    evaluation, with the onset rule's stop decision.

    train_images: [N, C, H, W] (any float range, or uint8), the images the model trains on; the
    samples given to `evaluate` must be in the same range. threshold and patience: the onset rule
    (defaults as raydiff's: 0.1 and 2). ratio: the ratio test's bound (1/3). embedding: a callable
    from images to [S, D] features for the feature-space test (with `cosine`, its similarity
    bound). device: where the nearest-neighbour search runs (default: train_images' device).
    """

    train_images: torch.Tensor
    threshold: float = 0.1
    patience: int = 2
    ratio: float = 1 / 3
    embedding: Callable[[torch.Tensor], torch.Tensor] | None = None
    cosine: float = 0.6
    device: torch.device | str | None = None
    report_to_tune: bool = False
    history: list[MonitorResult] = field(default_factory=list, init=False)
    # the ledger: more registered memorization tests (raydiff.measures) beside the pixel test, each
    # kept per training image (first step copied, copies); a cosine test needs its network among
    # `networks` ({"dinov2": images → [S, D], …}; "embedding" is `embedding`), thresholds by test name
    tests: tuple[str, ...] = ()
    networks: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None
    thresholds: dict[str, float] | None = None
    _ledger: dict[str, dict[int, list[int]]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        x = torch.as_tensor(self.train_images)
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"train_images must be a non-empty batch [N, ...] (got shape {list(x.shape)})")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] (got {self.threshold})")
        if self.patience < 1:
            raise ValueError(f"patience must be ≥ 1 (got {self.patience})")
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1) (got {self.ratio})")
        self.device = torch.device(self.device) if self.device is not None else x.device
        self._train = x.float().reshape(len(x), -1).to(self.device)  # [N, D]
        self._train_emb = self.embedding(x) if self.embedding is not None else None
        self._check_tests()

    @torch.no_grad()
    def evaluate(self, samples: torch.Tensor, step: int) -> MonitorResult:
        """The memorization test on `samples` ([S, C, H, W], the training images' range) at
        training step `step` (increasing from call to call), added to the history."""
        if self.history and step <= self.history[-1].step:
            raise ValueError(f"steps must increase (got {step} after {self.history[-1].step})")
        x = torch.as_tensor(samples).float()
        if x.ndim < 2 or x[0].numel() != self._train.shape[1]:
            raise ValueError(f"samples must be [S, ...] shaped like train_images[0] (got shape {list(x.shape)})")
        finite = bool(torch.isfinite(x).all()) and len(x) > 0
        if finite:
            flags, nb = memorized_pixel(x.to(self.device), self._train, self.ratio)
            frac = fraction_with_interval(flags)
            rel, nearest = distance_ratio(nb).cpu().numpy(), nb.index.cpu().numpy()
        else:  # a diverged model's samples: measured and failed, which breaks a run of the rule
            frac = fraction_with_interval(np.zeros(0, dtype=bool))
            rel, nearest = np.full(len(x), math.nan), np.full(len(x), -1, dtype=np.int64)
        f_feat = interval_feat = None
        if self.embedding is not None and finite:
            feat = fraction_with_interval(memorized_cosine(self.embedding(x), self._train_emb, self.cosine)[0])
            f_feat, interval_feat = feat.value, (feat.lo, feat.hi)
        steps = [r.step for r in self.history] + [step]
        fracs = [r.f_mem for r in self.history] + [frac.value]
        onset = mem_onset(steps, fracs, self.threshold, self.patience)
        result = MonitorResult(
            step, frac.value, frac.lo, frac.hi, nearest, rel, onset, onset is not None, f_feat, interval_feat,
        )  # fmt: skip
        self._keep_ledger(x, step, nearest, rel, finite)
        self.history.append(result)
        if self.report_to_tune:
            self._report(result)
        return result

    def ledger(self, test: str = "pixel"):
        """Per training image that `test` has called copied so far: the first step a sample was a
        copy of it and how many samples were (over all evaluations), as a pandas DataFrame
        [image, first_step, copies] sorted by first step; image indexes train_images."""
        import pandas as pd

        if test != "pixel" and test not in self.tests:
            raise ValueError(f"the monitor runs no test {test!r} (it runs: {', '.join(('pixel', *self.tests))})")
        rows = sorted((first, image, n) for image, (first, n) in self._ledger.get(test, {}).items())
        return pd.DataFrame(
            {"image": [r[1] for r in rows], "first_step": [r[0] for r in rows], "copies": [r[2] for r in rows]}
        ).astype("int64")

    def _check_tests(self) -> None:
        from raydiff import measures

        known = measures.names("memorization")
        for t in self.tests:
            if t not in known:
                raise ValueError(f"tests: unknown memorization test {t!r} (registered: {', '.join(known)})")
            net = getattr(measures.get(t), "network", None)
            if net and net not in self._networks():
                raise ValueError(f"tests: {t!r} needs a feature network {net!r}: pass networks={{{net!r}: images → [S, D]}}")
        for t, v in (self.thresholds or {}).items():
            if t not in ("pixel", *self.tests) or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"thresholds: {t!r}: {v!r} is not a number for a test the monitor runs")

    def _networks(self) -> dict[str, Callable]:
        nets = dict(self.networks or {})
        if self.embedding is not None:
            nets.setdefault("embedding", self.embedding)
        return nets

    def _keep_ledger(self, x: torch.Tensor, step: int, nearest: np.ndarray, ratio: np.ndarray, finite: bool) -> None:
        """Add this evaluation's copies to the ledger: the pixel test's from its ratios, each other
        test's from its own verdicts (raydiff.measures) on the same samples."""
        if not finite:
            return
        verdicts = {"pixel": (ratio < self.ratio, nearest)}
        if self.tests:
            from raydiff import measures

            ctx = _MonitorContext(self)
            for t in self.tests:
                v = measures.get(t)().verdicts(ctx, x.to(self.device))
                verdicts[t] = (np.asarray(v.copied, dtype=bool), np.asarray(v.nearest, dtype=np.int64))
        for t, (copied, idx) in verdicts.items():
            book = self._ledger.setdefault(t, {})
            for image in idx[copied].tolist():
                entry = book.setdefault(int(image), [step, 0])
                entry[1] += 1

    @property
    def onset_step(self) -> int | None:
        return self.history[-1].onset_step if self.history else None

    def _report(self, r: MonitorResult) -> None:
        from ray import tune  # only when asked: the monitor itself needs no Ray

        metrics = {"step": r.step, "mem_frac": r.f_mem, "mem_frac_lo": r.lo, "mem_frac_hi": r.hi,
                   "tau_mem_step": r.onset_step, "memorized": r.stop}  # fmt: skip
        if r.f_mem_features is not None:
            metrics["mem_frac_features"] = r.f_mem_features
        tune.report(metrics)
