"""The one onset rule. The stopper, the trial's own record and `raydiff analyze` all call it, so a
τ_mem means the same thing everywhere.

Missing and NaN values are explicit: an evaluation without a mem_frac (None) did not measure
memorization and is skipped; a NaN mem_frac was measured and failed, so it breaks a streak and
never counts as above the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def mem_onset(
    steps: Sequence[int], mem_frac: Sequence[float | None], threshold: float, patience: int = 1
) -> int | None:
    """First step of the first run of `patience` consecutive evaluations with mem_frac ≥ threshold.

    Returns the step at which that run starts (the first crossing), or None if there is none yet.
    """
    run_start, run_len = None, 0
    for step, v in zip(steps, mem_frac):
        if v is None:
            continue  # not measured at this evaluation
        if _finite(v) and v >= threshold:
            if run_len == 0:
                run_start = step
            run_len += 1
            if run_len >= patience:
                return run_start
        else:
            run_start, run_len = None, 0
    return None


def interpolated_onset(
    steps: Sequence[int], mem_frac: Sequence[float | None], threshold: float, patience: int = 1
) -> float | None:
    """The onset with the crossing interpolated between the evaluation before it and the onset
    evaluation, linearly in log(step): a finer τ_mem than the evaluation grid."""
    onset = mem_onset(steps, mem_frac, threshold, patience)
    if onset is None:
        return None
    pairs = [(s, v) for s, v in zip(steps, mem_frac) if v is not None]
    i = next(i for i, (s, _) in enumerate(pairs) if s == onset)
    if i == 0:
        return float(onset)
    (s0, v0), (s1, v1) = pairs[i - 1], pairs[i]
    if not _finite(v0) or v1 == v0 or s0 <= 0:
        return float(onset)
    w = (threshold - v0) / (v1 - v0)
    w = min(max(w, 0.0), 1.0)
    return float(math.exp(math.log(s0) + w * (math.log(s1) - math.log(s0))))


def relative_gap(train_loss, test_loss) -> float | None:
    """(test − train) / train of one evaluation's probe losses; None where either is missing or
    non-finite, or the train loss ≤ 0 (such an evaluation is skipped by the loss onset)."""
    if not (_finite(train_loss) and _finite(test_loss)) or train_loss <= 0:
        return None
    return (test_loss - train_loss) / train_loss


def loss_divergence_onset(
    steps: Sequence[int],
    train_loss: Sequence[float | None],
    test_loss: Sequence[float | None],
    gap: float = 0.05,
    window: int = 3,
    refined: Sequence[bool | None] | None = None,
) -> int | None:
    """Marion & Wu's τ_mem: the first step where the test loss departs from the train loss.

    At each evaluation the relative gap g_i = (test − train) / train is measured against its value
    at the first evaluation, g_i − g_0: the probes' own offset (different images, different
    difficulty) is there before any overfitting and is not a departure. The onset is the first
    evaluation whose excess exceeds `gap` and that the next `window − 1` evaluations confirm (all
    above `gap` too), reported at that first exceedance, not at the end of the window: a step
    jump at evaluation k gives step k exactly, one noisy evaluation never fires with window ≥ 2,
    and an excess that has not yet been confirmed (too few evaluations after it) is no onset yet.
    (The rule it replaces averaged the gap over a trailing window, which put a jump one
    evaluation late, and compared the raw gap, offset included.)

    `refined` flags the rows that are refinement snapshots (training/refine.py) rather than
    regular evaluations. The baseline and the confirmation read regular evaluations only (a
    refined row never confirms, nor breaks a window); once an exceedance at regular evaluation k
    is confirmed, the onset moves back to the earliest refined point between the regular
    evaluation before k and k from which every refined point up to k exceeds `gap`. Without
    refined rows the rule is the one above.

    Evaluations with a missing or non-finite loss, or a train loss ≤ 0, are skipped; the baseline
    g_0 is the first regular evaluation that remains.
    """
    flags = refined if refined is not None else [False] * len(steps)
    pts = [(s, g, bool(r)) for s, tr, te, r in zip(steps, train_loss, test_loss, flags) if (g := relative_gap(tr, te)) is not None]
    regular = [i for i, (_, _, r) in enumerate(pts) if not r]  # indices into pts
    if not regular:
        return None
    g0 = pts[regular[0]][1]
    above = [g - g0 > gap for _, g, _ in pts]
    need = max(1, int(window))
    for j in range(len(regular) - need + 1):
        if all(above[regular[j + m]] for m in range(need)):
            k = regular[j]
            start, lower = k, regular[j - 1] if j > 0 else k  # the bracket (lower, k]: refined points only
            while start - 1 > lower and above[start - 1]:
                start -= 1
            return pts[start][0]
    return None
