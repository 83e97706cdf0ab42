"""Narrowing τ_mem's bracket: between two evaluations the trial keeps copies of the evaluated
weights; when a definition the stop waits on has just crossed (a memorization test's fraction
risen to the threshold, or the probes' loss excess above stop.loss_gap), a binary search over them
(that test only, or the probe losses only) finds the first snapshot above it. And the interim rows (refinement, fidelity-only
evaluations) merged in step order before the evaluation that follows them."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from raydiff import measures
from raydiff.config import ExperimentConfig
from raydiff.evaluation import Evaluator
from raydiff.metrics.onset import relative_gap
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


@dataclass(frozen=True)
class Crossing:
    """One onset definition the stop rule waits on whose bracket refinement narrows: a ratio test
    (`measure` its memorization test, `field` its history column, above at ≥ `bound`, the
    threshold) or the loss divergence (`measure` "loss": above where the probes' relative gap
    exceeds `baseline`, the first regular evaluation's, by more than `bound`, stop.loss_gap)."""

    measure: str
    field: str
    bound: float
    baseline: float | None = None  # the loss divergence's g_0

    @property
    def probes(self) -> bool:
        """Read from the probe losses (else from a memorization test)."""
        return self.baseline is not None

    def above(self, metrics: dict[str, Any]) -> bool:
        if self.probes:
            g = relative_gap(metrics.get("train_loss"), metrics.get("test_loss"))
            return g is not None and g - self.baseline > self.bound
        return _at_least(metrics.get(self.field), self.bound)


def loss_gaps(history: list[dict[str, Any]]) -> list[float]:
    """The relative train/test gap of each regular evaluation (not a refinement's snapshot) whose
    probe losses were measured, in order (metrics/onset.loss_divergence_onset's points)."""
    gaps = (relative_gap(h.get("train_loss"), h.get("test_loss")) for h in history if not h.get("refined"))
    return [g for g in gaps if g is not None]


def loss_crossed(history: list[dict[str, Any]], metrics: dict[str, Any], gap: float) -> float | None:
    """The loss excess has just risen above `gap` at this evaluation: its excess over the first
    regular evaluation's gap exceeds `gap`, the last regular evaluation before it was at or below
    (the first evaluation is the baseline: no bracket). Returns the baseline g_0, or None."""
    now, before = relative_gap(metrics.get("train_loss"), metrics.get("test_loss")), loss_gaps(history)
    if now is None or not before or now - before[0] <= gap:
        return None
    return before[0] if before[-1] - before[0] <= gap else None


def crossings(cfg: ExperimentConfig, history: list[dict[str, Any]], metrics: dict[str, Any]) -> tuple[Crossing, ...]:
    """The definitions the stop rule waits on (stop.on's ratio definitions on the evaluated weights
    and its loss divergence; by default the trial's first test, mem_frac) whose value has just
    risen above its bound at this evaluation: the brackets refinement narrows."""
    threshold = cfg.stop.mem_frac_threshold
    if cfg.stop.on:
        defs = [measures.definition(d) for d in cfg.stop.on]
        fields = [(d.measure, d.field) for d in defs if d.rule == "ratio" and not d.raw]
        g0 = loss_crossed(history, metrics, cfg.stop.loss_gap) if any(d.rule == "loss_divergence" for d in defs) else None
    else:
        fields, g0 = [(cfg.memorization_tests[0], "mem_frac")] if cfg.memorization_tests else [], None
    out = [Crossing(t, f, threshold) for t, f in fields if crossed(history, metrics.get(f), threshold, f)]
    if g0 is not None:
        out.append(Crossing("loss", "test_loss", cfg.stop.loss_gap, g0))  # the test loss departing from the train loss
    return tuple(out)


def search(
    n: int, fresh: tuple[Crossing, ...], evaluate: Callable[[int, bool], dict[str, Any]], steps: list[int], fraction: float | None = None,
) -> tuple[dict[int, dict[str, Any]], set[tuple[int, bool]]]:  # fmt: skip
    """The binary search of each crossing over n snapshots (`bisect_crossing`), each snapshot
    evaluated at most once for the memorization tests and once for the probes: `evaluate(i,
    probes)` gives snapshot i's metrics (the probe losses with `probes`, else the tests'). A
    snapshot one search evaluated serves the others. Returns (snapshot index → its metrics merged,
    the (index, probes) pairs evaluated). The trial (`refine`) evaluates with its Evaluator, the
    cost model (tune/cost.py) on its assumed curves."""
    done: dict[int, dict[str, Any]] = {}
    seen: set[tuple[int, bool]] = set()

    def above(i: int, c: Crossing) -> bool:
        if (i, c.probes) not in seen:
            seen.add((i, c.probes))
            m = evaluate(i, c.probes)
            keep = LOSSES if c.probes else [k for k in m if k not in (*LOSSES, "eval_s")]
            was = done.get(i, dict.fromkeys(LOSSES, math.nan))
            done[i] = {**was, **{k: m[k] for k in keep}, "eval_s": was.get("eval_s", 0.0) + m.get("eval_s", 0.0)}
        return c.above(done[i])

    for c in fresh:
        bisect_crossing(n, lambda i, c=c: above(i, c), steps, fraction)
    return done, seen


def refine(
    evaluator: Evaluator, net: torch.nn.Module, snaps: list, b: int, fresh: tuple[Crossing, ...], fraction: float | None = None,
) -> list[tuple[dict, dict]]:  # fmt: skip
    """Evaluate the snapshots a binary search for each crossing (`crossings`) visits, each for
    what that crossing reads: the crossing memorization tests, or the probe losses alone (the loss
    divergence); a snapshot one search evaluated serves the others (`search`). `fraction`:
    eval.refine_fraction."""
    tests = tuple(c.measure for c in fresh if not c.probes)
    scratch = copy.deepcopy(net)

    def evaluate(i: int, probes: bool) -> dict[str, Any]:
        scratch.load_state_dict(snaps[i][2])
        return evaluator(scratch, snaps[i][0], memorization_only=True, tests=() if probes else tests, probes=probes)

    done, _ = search(len(snaps), fresh, evaluate, [s[0] for s in snaps], fraction)
    out = []
    for i in sorted(done):
        step, wall_s, _ = snaps[i]
        out.append(({**history_row(step, b, wall_s, done[i]), "refined": True}, done[i]))
    return out


LOSSES = measures.get("loss").column_names()  # the probe losses: train_loss, test_loss


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
