"""Refinement of the loss divergence's bracket (issue 22): when stop.on names `loss` and
eval.refine_snapshots > 0, the evaluation where the probes' loss excess first rises above
stop.loss_gap is followed by a binary search over the snapshots kept since the evaluation before,
on the probe losses alone; the onset, confirmed by regular evaluations, moves back into the bracket.
And a trial restored from a checkpoint after that refinement goes on to the same onset."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch

from raydiff.analysis.trials import Definition, onset_of
from raydiff.config import apply_overrides, load_search_space, packaged_search_space
from raydiff.metrics.onset import relative_gap
from raydiff.trial import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

# 4 digits, evaluations 20, 30, 45, … apart by half: the smoke model's test loss departs from its
# train loss within ~40 steps (the loss excess over the first evaluation's gap passes 0.2 there)
OVER = {
    "data.n_train": 4, "eval.every_steps": 20, "eval.cadence": "geometric", "eval.geometric_ratio": 1.5, "eval.fid_every": 0,
    "train.max_steps": 400, "eval.measures": ["pixel", "loss"], "stop.on": ["loss"], "stop.loss_gap": 0.2, "stop.loss_window": 2,
}  # fmt: skip


def smoke(**over):
    space = load_search_space(packaged_search_space("smoke"))
    return apply_overrides(space.base, OVER | over)


class Recorder:
    """Every report, and the state of each regular one serialized as the Ray trainable does."""

    def __init__(self):
        self.reports, self.states = [], {}

    def __call__(self, m, state_fn):
        self.reports.append(m)
        if state_fn is not None:
            buf = io.BytesIO()
            torch.save(state_fn(), buf)
            self.states[m["step"]] = buf.getvalue()
        return state_fn is not None and m.get("stop_status") is not None


@pytest.fixture(scope="module")
def refined_run():
    cfg = smoke(**{"eval.refine_snapshots": 3})
    rec, n = Recorder(), torch.get_num_threads()
    torch.set_num_threads(1)  # as one_torch_thread, which a module's fixture runs before
    try:
        train(cfg, rec)
    finally:
        torch.set_num_threads(n)
    return cfg, rec


def test_the_loss_onset_is_refined_inside_its_bracket(refined_run):
    cfg, rec = refined_run
    last = rec.reports[-1]
    tau = last["tau_mem_loss_step"]
    assert last["stop_status"] == "memorized" and tau is not None and last["tau_mem_step"] == tau
    regular = [m for m in rec.reports if not m.get("refined")]
    refined = [m for m in rec.reports if m.get("refined")]
    g0 = relative_gap(regular[0]["train_loss"], regular[0]["test_loss"])
    excess = [relative_gap(m["train_loss"], m["test_loss"]) - g0 for m in regular]
    # the bracket: the evaluation where the excess first rose above the gap, and the one before
    k = next(i for i, e in enumerate(excess) if e > cfg.stop.loss_gap)
    lo, hi = regular[k - 1]["step"], regular[k]["step"]
    assert lo < tau < hi  # narrower than the cadence's gap
    inside = [m for m in refined if lo < m["step"] < hi]
    assert 1 <= len(inside) <= math.ceil(math.log2(cfg.eval.refine_snapshots + 1))  # a binary search
    # the probes alone: finite losses, no memorization test, no checkpoint, reported in step order
    for m in inside:
        assert m["train_loss"] > 0 and m["test_loss"] > 0 and m.get("mem_frac") is None and m["fid"] is None
    at = next(m for m in inside if m["step"] == tau)
    assert relative_gap(at["train_loss"], at["test_loss"]) - g0 > cfg.stop.loss_gap
    below = [m for m in inside if m["step"] < tau]  # what the search saw before τ is at or below the gap
    assert all(relative_gap(m["train_loss"], m["test_loss"]) - g0 <= cfg.stop.loss_gap for m in below)
    steps = [m["step"] for m in rec.reports]
    assert steps == sorted(steps)
    # `raydiff analyze` reads the same onset from the rows (their `refined` flags)
    assert onset_of(rec.reports, Definition(kind="loss"), cfg.stop) == tau


def test_without_refinement_the_onset_is_the_evaluation(refined_run):
    cfg, rec = refined_run
    plain = Recorder()
    train(smoke(), plain)
    assert not any(m.get("refined") for m in plain.reports)
    tau, plain_tau = rec.reports[-1]["tau_mem_loss_step"], plain.reports[-1]["tau_mem_loss_step"]
    regular_steps = [m["step"] for m in rec.reports if not m.get("refined")]
    assert plain_tau in regular_steps and tau < plain_tau  # refinement moved it back into the bracket before it
    # snapshots and probe-only evaluations do not perturb training: the regular evaluations agree
    by_step = {m["step"]: m["train_loss"] for m in plain.reports}
    assert all(by_step[m["step"]] == m["train_loss"] for m in rec.reports if not m.get("refined"))


def test_a_trial_restored_after_the_refinement_goes_on_to_the_same_onset(refined_run):
    cfg, rec = refined_run
    first_refined = min(m["step"] for m in rec.reports if m.get("refined"))
    after = min(s for s in rec.states if s > first_refined)  # the checkpoint of the evaluation that refined
    state = torch.load(io.BytesIO(rec.states[after]), weights_only=False)
    state = pickle.loads(pickle.dumps(state))  # a state crosses processes pickled
    assert any(h.get("refined") for h in state["history"])  # the refined rows come along in the history
    resumed = Recorder()
    train(cfg, resumed, state=state)
    assert resumed.reports and resumed.reports[0]["step"] > after
    original = [m for m in rec.reports if m["step"] > after]
    assert [m["step"] for m in resumed.reports] == [m["step"] for m in original]
    assert resumed.reports[-1]["tau_mem_loss_step"] == rec.reports[-1]["tau_mem_loss_step"]
    assert resumed.reports[-1]["stop_status"] == rec.reports[-1]["stop_status"]
