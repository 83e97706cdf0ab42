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
from raydiff.config import ExperimentConfig
from raydiff.evaluation import Evaluator
from raydiff.training.reports import history_row


def crossed(history: list[dict[str, Any]], value: float | None, threshold: float, field: str = "mem_frac") -> bool:
    """A test's fraction (`field` of the history rows) has just risen to the threshold: this
    evaluation is at or above it, the last measured one before it (if any) below. That bracket is
    what refinement narrows."""
    if value is None or not math.isfinite(value) or value < threshold:
        return False
    before = [h[field] for h in history if h.get(field) is not None]
    return not before or not (math.isfinite(before[-1]) and before[-1] >= threshold)


def bisect_crossing(n: int, above: Callable[[int], bool], steps: list[int] | None = None, fraction: float | None = None) -> int:
    """Binary search over n snapshots in time order, bracketed by an evaluation below the threshold
    before them and one above after them: the index of the first snapshot found above (n: none),
    for ⌈log₂(n + 1)⌉ calls of `above`, or fewer once two snapshots bracket the crossing within
    `fraction` (eval.refine_fraction) of the upper one's step (`steps`: the snapshots' steps).
    Every snapshot evaluated before that index is below and every one after it above, so the one
    onset rule, run over the merged history, lands on it."""
    lo, hi = -1, n
    while hi - lo > 1 and not (fraction is not None and 0 <= lo and hi < n and steps[hi] - steps[lo] <= fraction * steps[hi]):
        mid = (lo + hi) // 2
        if above(mid):
            hi = mid
        else:
            lo = mid
    return hi


def crossings(cfg: ExperimentConfig, history: list[dict[str, Any]], metrics: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(test, history field) of each memorization test the stop rule waits on (stop.on's ratio
    definitions on the evaluated weights; by default the trial's first test, mem_frac) whose value
    has just risen to the threshold at this evaluation: the brackets refinement narrows."""
    threshold = cfg.stop.mem_frac_threshold
    if cfg.stop.on:
        tests = [measures.definition(d) for d in cfg.stop.on]
        fields = [(d.measure, d.field) for d in tests if d.rule == "ratio" and not d.raw]
    else:
        fields = [(cfg.memorization_tests[0], "mem_frac")] if cfg.memorization_tests else []
    return tuple((t, f) for t, f in fields if crossed(history, metrics.get(f), threshold, f))


def refine(
    evaluator: Evaluator, net: torch.nn.Module, snaps: list, threshold: float, b: int,
    fresh: tuple[tuple[str, str], ...] = (), fraction: float | None = None,
) -> list[tuple[dict, dict]]:  # fmt: skip
    """Evaluate (the crossing memorization tests only) the snapshots a binary search for each
    crossing visits; a snapshot one search evaluated serves the others. `fresh`: (test, field)
    pairs (`crossings`; default: mem_frac's test). `fraction`: eval.refine_fraction."""
    fresh = fresh or (("", "mem_frac"),)
    tests = tuple(t for t, _ in fresh if t) or None
    scratch = copy.deepcopy(net)
    done: dict[int, dict[str, Any]] = {}
    steps = [s[0] for s in snaps]

    def value(i: int, field: str) -> float | None:
        if i not in done:
            scratch.load_state_dict(snaps[i][2])
            done[i] = evaluator(scratch, snaps[i][0], memorization_only=True, tests=tests)
        return done[i].get(field)

    for _, field in fresh:
        bisect_crossing(len(snaps), lambda i, f=field: _at_least(value(i, f), threshold), steps, fraction)
    out = []
    for i in sorted(done):
        step, wall_s, _ = snaps[i]
        out.append(({**history_row(step, b, wall_s, done[i]), "refined": True}, done[i]))
    return out


def _at_least(v: Any, bound: float) -> bool:
    return v is not None and math.isfinite(v) and v >= bound




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
            keys = (c for m in measures.names("fidelity") for c in measures.get(m).column_names())  # the figures' columns
            fid = {k: fid_metrics[k] for k in keys if fid_metrics.get(k) is not None}
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
