"""Narrowing τ_mem's bracket: between two evaluations the trial keeps copies of the evaluated
weights; when mem_frac has just crossed the threshold, a binary search over them (memorization
test only) finds the first snapshot at or above it. And the interim rows (refinement, fidelity-only
evaluations) merged in step order before the evaluation that follows them."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch

from raydiff import measures
from raydiff.evaluation import Evaluator
from raydiff.training.reports import history_row


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


def refine(evaluator: Evaluator, net: torch.nn.Module, snaps: list, threshold: float, b: int) -> list[tuple[dict, dict]]:
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
