"""Memorization tests.

Pixel space (Bonnaire et al. 2025): a sample x is memorized when ‖x − a₁‖ / ‖x − a₂‖ < 1/3, with
a₁, a₂ its nearest and second-nearest training images. Feature space (Marion & Wu 2026): a sample
is memorized when its maximum cosine similarity to a training image's embedding exceeds 0.6.

The nearest-neighbour search is exact and chunked: memory is bounded by `chunk` × N distances
whatever the number of samples S, so N = 50,000 CIFAR images and S = 10,000 samples fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Neighbours:
    d1: torch.Tensor  # [S] distance to the nearest training image
    d2: torch.Tensor  # [S] distance to the second nearest (inf when N = 1)
    index: torch.Tensor  # [S] index of the nearest training image


def nearest_two(samples: torch.Tensor, train: torch.Tensor, chunk: int = 1024, candidates: int = 8) -> Neighbours:
    """Exact two nearest training images (Euclidean) for each sample.

    samples: [S, ...], train: [N, ...] (flattened inside). Distances are first ranked with the
    matmul expansion ‖a‖² + ‖b‖² − 2ab (fast, but it loses digits to cancellation), then the best
    `candidates` per sample are re-measured directly, so the returned distances are exact.
    """
    s = samples.reshape(samples.shape[0], -1).float()
    t = train.reshape(train.shape[0], -1).to(s.device, torch.float32)
    n = t.shape[0]
    k = min(n, max(2, candidates))
    t_sq = torch.linalg.vector_norm(t, dim=1).square()  # [N]; no [N, D] temporary, unlike t.square()
    # two buffers reused by every chunk (no allocator churn): the ranking matrix and one candidate
    rows = min(chunk, s.shape[0])
    approx_buf = torch.empty(rows, n, device=s.device)  # [c, N]: the peak, bounded by chunk × N
    diff_buf = torch.empty(rows, t.shape[1], device=s.device)  # [c, D]
    d1, d2, idx = [], [], []
    for start in range(0, s.shape[0], chunk):
        block = s[start : start + chunk]  # [c, D]
        c = block.shape[0]
        # ‖t‖² − 2·block·tᵀ (+ ‖block‖², constant per row, left out)
        approx = torch.addmm(t_sq[None, :], block, t.T, alpha=-2.0, out=approx_buf[:c])
        cand = approx.topk(k, dim=1, largest=False).indices  # [c, k]
        exact = torch.empty(c, k, device=s.device)
        for j in range(k):  # one candidate rank at a time: [c, D] at most, never [c, k, D]
            diff = torch.index_select(t, 0, cand[:, j], out=diff_buf[:c])
            exact[:, j] = diff.sub_(block).square_().sum(1)
        exact, order = exact.sqrt_().sort(dim=1)
        d1.append(exact[:, 0])
        d2.append(exact[:, 1] if k > 1 else torch.full_like(exact[:, 0], float("inf")))
        idx.append(cand.gather(1, order[:, :1]).squeeze(1))
    return Neighbours(torch.cat(d1), torch.cat(d2), torch.cat(idx))


def distance_ratio(nb: Neighbours) -> torch.Tensor:
    """[S]: ‖x − a₁‖ / ‖x − a₂‖. An exact copy has d1 = 0: the ratio is 0 even when d2 is 0 too
    (duplicate training images)."""
    return torch.where(nb.d1 == 0, torch.zeros_like(nb.d1), nb.d1 / nb.d2)


def memorized_pixel(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3, **kw) -> tuple[torch.Tensor, Neighbours]:
    """Boolean [S]: ‖x − a₁‖ / ‖x − a₂‖ < ratio. Returns the neighbours too (for figures)."""
    nb = nearest_two(samples, train, **kw)
    return distance_ratio(nb) < ratio, nb


def memorized_cosine(sample_emb: torch.Tensor, train_emb: torch.Tensor, threshold: float = 0.6, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [S]: max cosine similarity to any training embedding > threshold; and that max."""
    best, _ = nearest_cosine(sample_emb, train_emb, chunk)
    return best > threshold, best


def nearest_cosine(sample_emb: torch.Tensor, train_emb: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample [S]: the largest cosine similarity to a training embedding [N, D], and that image's index."""
    a = torch.nn.functional.normalize(sample_emb.float(), dim=1)
    b = torch.nn.functional.normalize(train_emb.float().to(a.device), dim=1)
    best = [(a[i : i + chunk] @ b.T).max(dim=1) for i in range(0, a.shape[0], chunk)]
    return torch.cat([m.values for m in best]), torch.cat([m.indices for m in best])


@dataclass(frozen=True)
class Fraction:
    value: float
    lo: float
    hi: float


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval for a binomial proportion, k successes of n.

    lo = Beta⁻¹(a; k, n − k + 1), hi = Beta⁻¹(1 − a; k + 1, n − k), a = (1 − level)/2, with lo = 0
    at k = 0 and hi = 1 at k = n. Its coverage is at least `level` for every p: unlike a bootstrap,
    it does not collapse to [0, 0] when no sample is memorized (0/128 gives [0, 0.0284]).
    """
    from scipy.stats import beta  # a dependency already; scipy.stats is imported on first use only

    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 ≤ k ≤ n (got k={k}, n={n})")
    a = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return lo, hi


def settled(k: int, n: int, threshold: float, looks: int, level: float = 0.95) -> bool:
    """The sequential memorization test's stopping rule: after k memorized of n samples, the
    fraction's exact interval lies wholly on one side of `threshold` (hi < threshold: below;
    lo ≥ threshold: at or above). With `looks` rounds the test may stop at, each look uses level
    1 − (1 − level) / looks (Bonferroni), so stopping at any of them errs with probability at most
    1 − level, as one look at the full count would."""
    if n <= 0:
        return False
    lo, hi = clopper_pearson(k, n, 1.0 - (1.0 - level) / max(1, looks))
    return hi < threshold or lo >= threshold


def fraction_with_interval(
    flags: torch.Tensor | np.ndarray, n_boot: int | None = None, seed: int | None = None, level: float = 0.95
) -> Fraction:
    """Fraction of True flags with its exact Clopper–Pearson interval (`clopper_pearson`).

    `n_boot` and `seed` are accepted for older callers and ignored: the interval is exact, drawn
    from no resampling (it used to be a percentile bootstrap, which reads [0, 0] at 0/128).
    """
    flags = np.asarray(flags.cpu() if isinstance(flags, torch.Tensor) else flags, dtype=bool)
    s = int(flags.size)
    if s == 0:
        nan = float("nan")
        return Fraction(nan, nan, nan)
    k = int(flags.sum())
    lo, hi = clopper_pearson(k, s, level)
    return Fraction(k / s, lo, hi)
