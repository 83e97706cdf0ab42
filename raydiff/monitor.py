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

import numpy as np
import torch

from raydiff.metrics.memorization import distance_ratio, fraction_with_interval, memorized_cosine, memorized_pixel
from raydiff.metrics.onset import mem_onset

__all__ = ["MemorizationMonitor", "MonitorResult"]


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
        self.history.append(result)
        if self.report_to_tune:
            self._report(result)
        return result

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
