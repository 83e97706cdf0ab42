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


# ------------------------------------------------------------------ argument checks (misuse)


def _check_number(name: str, v, lo: float, hi: float, *, lo_open: bool = True, hi_open: bool = False, integer: bool = False):
    """A real number (an int where `integer`) in its interval, else a TypeError/ValueError."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(v, bool) or not isinstance(v, kinds):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'} (got {type(v).__name__})")
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    if not math.isfinite(v) or (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
        raise ValueError(f"{name} must be in {left}{lo:g}, {hi:g}{right} (got {v})")


def _check_images(name: str, x) -> torch.Tensor:
    """A batch [N, C, H, W] (or [N, D]) of real numbers, as a tensor."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array [N, C, H, W] (got {type(x).__name__})")
    x = torch.as_tensor(x)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers (got dtype {x.dtype})")
    if x.ndim < 2:
        raise ValueError(f"{name} must be a batch [N, C, H, W] (got shape {list(x.shape)})")
    return x


def _check_device(device) -> torch.device:
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must name a torch device such as 'cpu', 'cuda' or 'cuda:0' (got {device!r})") from None
    if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {device!r} does not exist here ({torch.cuda.device_count()} CUDA device(s))")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} does not exist here (no MPS)")
    return d


def _value_range(x: torch.Tensor) -> tuple[float, float]:
    return float(x.min()), float(x.max())


def _other_scale(samples: tuple[float, float], train: tuple[float, float]) -> bool:
    """Samples on another scale than the training images: disjoint ranges (a span apart), or one
    in [-1, 1] and the other in [0, 255] reaching past 2 (pixels against normalized values). A
    model that diverges spreads its samples wide on both sides, and is measured, not refused."""
    (lo, hi), (tlo, thi) = samples, train
    span = max(thi - tlo, 1e-6)
    if hi < tlo - span or lo > thi + span:
        return True
    unit = lambda a, b: -1.0 - 1e-6 <= a and b <= 1.0 + 1e-6  # noqa: E731
    pixels = lambda a, b: -1e-6 <= a and 2.0 < b <= 255.0 + 1e-6  # noqa: E731
    return (unit(lo, hi) and pixels(tlo, thi)) or (pixels(lo, hi) and unit(tlo, thi))

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
    f_mem: float  # memorized fraction of the samples (NaN: non-finite samples, a diverged model)
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
        x = _check_images("train_images", self.train_images)
        if len(x) < 2:  # the ratio test compares a sample's two nearest training images
            raise ValueError(f"train_images must hold at least 2 images for the ratio test (got {len(x)})")
        if not bool(torch.isfinite(x.float()).all()):
            raise ValueError("train_images hold NaN or infinite values")
        _check_number("threshold", self.threshold, 0.0, 1.0)
        _check_number("patience", self.patience, 0, 1e9, integer=True)
        _check_number("ratio", self.ratio, 0.0, 1.0, hi_open=True)
        _check_number("cosine", self.cosine, -1.0, 1.0, lo_open=False)
        if self.embedding is not None and not callable(self.embedding):
            raise TypeError(f"embedding must be callable, images → [S, D] features (got {type(self.embedding).__name__})")
        self.device = _check_device(self.device) if self.device is not None else x.device
        self._shape, self._dtype = tuple(x.shape[1:]), x.dtype
        self._range = _value_range(x)
        self._train = x.float().reshape(len(x), -1).to(self.device)  # [N, D]
        self._train_emb = self.embedding(x) if self.embedding is not None else None
        self._check_tests()

    @torch.no_grad()
    def evaluate(self, samples: torch.Tensor, step: int) -> MonitorResult:
        """The memorization test on `samples` ([S, C, H, W], the training images' range) at
        training step `step` (increasing from call to call), added to the history."""
        _check_number("step", step, -1, math.inf, integer=True, hi_open=True)
        if self.history and step <= self.history[-1].step:
            raise ValueError(f"steps must increase (got {step} after {self.history[-1].step})")
        x = self._check_samples(samples)
        finite = bool(torch.isfinite(x).all())
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

    def _check_samples(self, samples) -> torch.Tensor:
        """Samples as the training images are: same per-image shape and layout, a real dtype of
        the same kind (uint8 with uint8), and, where finite, a value range that overlaps theirs
        (samples in [-1, 1] against images in [0, 255] would count no copy, silently)."""
        x = _check_images("samples", samples)
        if len(x) == 0:
            raise ValueError("samples is an empty batch: generate at least one sample")
        if tuple(x.shape[1:]) != self._shape:
            raise ValueError(f"samples must be [S, {', '.join(map(str, self._shape))}] shaped like train_images (got shape {list(x.shape)}): same channels, height, width and layout")
        if (x.dtype == torch.uint8) != (self._dtype == torch.uint8):
            raise TypeError(f"samples are {x.dtype} but train_images are {self._dtype}: give both in the same range and dtype")
        x = x.float()
        ok = torch.isfinite(x)
        if bool(ok.any()):
            lo, hi = float(x[ok].min()), float(x[ok].max())
            if _other_scale((lo, hi), self._range):
                tlo, thi = self._range
                raise ValueError(
                    f"samples span [{lo:.3g}, {hi:.3g}] but train_images span [{tlo:.3g}, {thi:.3g}]: give samples in the"
                    " training images' range (e.g. both in [-1, 1], or both in [0, 255])"
                )  # fmt: skip
        return x

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
