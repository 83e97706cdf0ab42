"""τ_mem by loss divergence (Marion & Wu): the first evaluation at which the relative gap
(test − train) / train exceeds its value at the first evaluation by more than a margin, confirmed
by the next `window − 1` evaluations, reported at that first exceedance. Synthetic curves, one
table row per case.

These cases were rewritten for that rule (issue 13). The ones they replace encoded the earlier
rule, a trailing moving average of the raw gap confirmed by one more evaluation, under which a
step jump at evaluation k was reported one evaluation late whenever the margin exceeded jump/window
("window-delays-onset": 600 for a jump at 500), and a constant offset between the train and test
probes (a gap that is there before any training) fired at once. Now a jump at k gives k for every
window, an offset never fires, and `window` is the number of evaluations that must agree (window 1:
no confirmation, so one spike does fire there; window ≥ 2 it never does).
"""

from __future__ import annotations

import math

import pytest

from raydiff.config import ExperimentConfig, StopConfig
from raydiff.metrics.onset import loss_divergence_onset
from raydiff.training.reports import onset_summary

STEPS = [100 * (i + 1) for i in range(10)]  # 100, 200, ..., 1000
TRAIN = [1.0 - 0.05 * i for i in range(10)]  # a train loss that keeps falling
JUMP = [0.0] * 4 + [0.2] * 6  # the test loss departs at the 5th evaluation, step 500


def curve(gaps):
    """test loss = train loss × (1 + relative gap)"""
    return [tr * (1.0 + g) for tr, g in zip(TRAIN, gaps)]


CASES = [
    # id, relative gaps per evaluation, margin, window, expected onset step
    ("never-departs", [0.0] * 10, 0.05, 3, None),
    ("below-margin", [0.04] * 10, 0.05, 1, None),
    ("test-below-train", [-0.3] * 10, 0.05, 1, None),
    # a step jump at evaluation k is reported at k, whatever the window or the margin below the jump
    ("step-jump-window1", JUMP, 0.05, 1, 500),
    ("step-jump-window2", JUMP, 0.05, 2, 500),
    ("step-jump-window3", JUMP, 0.05, 3, 500),
    ("step-jump-window3-margin0.1", JUMP, 0.1, 3, 500),  # the old moving average said 600
    ("step-jump-window6", JUMP, 0.05, 6, 500),  # the last six evaluations all confirm
    ("window-longer-than-the-departure", JUMP, 0.05, 7, None),  # not confirmed (yet)
    ("margin-above-the-jump", JUMP, 0.25, 1, None),  # an excess of 0.2 is no departure at margin 0.25
    # a constant offset between the probes is the baseline, not a departure
    ("constant-offset", [0.3] * 10, 0.05, 1, None),
    ("constant-offset-then-jump", [0.3] * 4 + [0.5] * 6, 0.05, 3, 500),
    ("negative-offset-then-jump", [-0.2] * 4 + [0.0] * 6, 0.05, 2, 500),  # departs from −0.2 to 0
    # one noisy spike: fires only when no confirmation is asked for
    ("one-spike-window1", [0.0, 0.0, 0.5] + [0.0] * 7, 0.05, 1, 300),
    ("one-spike-window2", [0.0, 0.0, 0.5] + [0.0] * 7, 0.05, 2, None),
    ("one-spike-window3", [0.0, 0.0, 0.5] + [0.0] * 7, 0.05, 3, None),
    ("spike-then-real-departure", [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3], 0.05, 2, 700),
    ("spike-inside-a-window-breaks-it", [0.0] * 4 + [0.2, 0.0] + [0.2] * 4, 0.05, 3, 700),
    ("needs-confirming-evals", [0.0] * 9 + [0.5], 0.05, 2, None),
    ("last-eval-window1", [0.0] * 9 + [0.5], 0.05, 1, 1000),
    # a gradual rise: the first evaluation past the margin that stays past it
    ("gradual-rise", [0.02 * i for i in range(10)], 0.05, 1, 400),  # 0.06 at the 4th index
    ("gradual-rise-window3", [0.02 * i for i in range(10)], 0.05, 3, 400),  # the window no longer delays it
    ("gradual-rise-from-offset", [0.1 + 0.02 * i for i in range(10)], 0.05, 3, 400),  # same, offset 0.1
]


@pytest.mark.parametrize("gaps, margin, window, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_loss_divergence_onset(gaps, margin, window, expected):
    assert loss_divergence_onset(STEPS, TRAIN, curve(gaps), gap=margin, window=window) == expected


@pytest.mark.parametrize("k", range(1, 9))
@pytest.mark.parametrize("window", [1, 2])
def test_a_step_jump_at_any_evaluation_is_found_there(k, window):
    gaps = [0.05] * k + [0.4] * (10 - k)  # offset 0.05 before; the jump at index k
    assert loss_divergence_onset(STEPS, TRAIN, curve(gaps), gap=0.1, window=window) == STEPS[k]


def test_missing_and_nonfinite_evaluations_are_skipped():
    test = curve(JUMP)
    train = list(TRAIN)
    test[4] = None  # not measured at step 500
    train[5] = math.nan  # failed at step 600
    # 500 and 600 drop out: the first departed evaluation left is 700, confirmed by 800 and 900
    assert loss_divergence_onset(STEPS, train, test, gap=0.05, window=3) == 700
    # a skipped evaluation neither breaks nor counts towards a window
    test = curve([0.0] * 4 + [0.2, 0.2, 0.2, 0.0, 0.0, 0.0])
    test[5] = None
    assert loss_divergence_onset(STEPS, TRAIN, test, gap=0.05, window=2) == 500
    assert loss_divergence_onset(STEPS, TRAIN, test, gap=0.05, window=3) is None


def test_the_baseline_is_the_first_evaluation_that_remains():
    train, test = list(TRAIN), curve([0.0] + [0.3] * 9)
    assert loss_divergence_onset(STEPS, train, test, gap=0.05, window=2) == 200
    train[0] = None  # the first evaluation lost: its offset-free baseline goes with it
    assert loss_divergence_onset(STEPS, train, test, gap=0.05, window=2) is None


def test_nonpositive_train_loss_is_skipped():
    train = [0.0, -1.0] + TRAIN[2:]
    test = curve([0.5, 0.5] + [0.0] * 8)
    assert loss_divergence_onset(STEPS, train, test, gap=0.05, window=1) is None


def test_empty_and_single_point():
    assert loss_divergence_onset([], [], []) is None
    assert loss_divergence_onset([100], [1.0], [2.0]) is None  # the baseline itself never departs
    assert loss_divergence_onset([100, 200], [None, 1.0], [None, 2.0]) is None


def test_trial_records_it_with_the_stop_config():
    history = [{"step": s, "train_loss": tr, "test_loss": te, "mem_frac": 0.0}
               for s, tr, te in zip(STEPS, TRAIN, curve(JUMP))]  # fmt: skip
    loose = ExperimentConfig(stop=StopConfig(loss_gap=0.1, loss_window=3))
    tight = ExperimentConfig(stop=StopConfig(loss_gap=0.05, loss_window=1))
    strict = ExperimentConfig(stop=StopConfig(loss_gap=0.3, loss_window=1))
    got = onset_summary(loose, history)
    assert got["tau_mem_step"] is None and got["tau_mem_loss_step"] == 500
    assert onset_summary(tight, history)["tau_mem_loss_step"] == 500
    assert onset_summary(strict, history)["tau_mem_loss_step"] is None


# ----------------------------------------------------------------- refined rows (issue 22)
# Refinement (training/refine.py) evaluates the probes on snapshots inside the bracket where the
# loss excess first rose above the gap. The rule: confirmation counts regular evaluations only; a
# confirmed exceedance at regular evaluation k moves back to the earliest refined point between the
# regular evaluation before k and k from which every refined point up to k exceeds the gap.


def with_refined(gaps, refined_points):
    """(steps, train, test, refined flags): the regular evaluations at STEPS with `gaps`, and the
    refined points (step, relative gap; NaN: a snapshot the probes did not measure) in step order."""
    rows = [(s, tr, tr * (1.0 + g), False) for s, tr, g in zip(STEPS, TRAIN, gaps)]
    rows += [(s, 1.0, 1.0 + g, True) for s, g in refined_points]
    rows.sort(key=lambda r: r[0])
    return tuple(list(c) for c in zip(*rows))


@pytest.mark.parametrize("gaps, margin, window, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_without_refined_rows_the_rule_is_unchanged(gaps, margin, window, expected):
    test = curve(gaps)
    assert loss_divergence_onset(STEPS, TRAIN, test, margin, window, [False] * 10) == expected
    assert loss_divergence_onset(STEPS, TRAIN, test, margin, window, [None] * 10) == expected
    # a ratio test's refined rows carry no probe losses (NaN): they change nothing either
    steps, train, test2, flags = with_refined(gaps, [(s + 50, math.nan) for s in STEPS])
    assert loss_divergence_onset(steps, train, test2, margin, window, flags) == expected


SPIKE = [0.0, 0.0, 0.5] + [0.0] * 7  # one regular evaluation above, at 300
REFINED = [
    # id, regular gaps, refined (step, gap), window, expected onset (margin 0.05)
    ("one-refined-point-narrows", JUMP, [(450, 0.2)], 3, 450),
    ("all-refined-above", JUMP, [(425, 0.2), (450, 0.2), (475, 0.2)], 3, 425),
    ("first-refined-below", JUMP, [(425, 0.0), (450, 0.2), (475, 0.2)], 3, 450),
    ("refined-below-next-to-k-keeps-k", JUMP, [(425, 0.2), (450, 0.2), (475, 0.0)], 3, 500),  # noisy: no run back to k
    ("noisy-refined-point-inside", JUMP, [(425, 0.2), (450, 0.0), (475, 0.2)], 3, 475),  # the run back stops at the noise
    ("window-1-narrows-too", JUMP, [(450, 0.2), (475, 0.2)], 1, 450),
    ("refined-in-an-earlier-bracket-ignored", JUMP, [(350, 0.2)], 3, 500),  # 400 was below: not k's bracket
    ("refined-after-k-do-not-break-the-window", JUMP, [(550, 0.0), (650, 0.0)], 3, 500),
    ("refined-after-k-do-not-move-it-later", JUMP, [(450, 0.0), (550, 0.2)], 3, 500),
    ("refined-never-confirm-alone", SPIKE, [(250, 0.5), (350, 0.5), (375, 0.5)], 2, None),
    ("refined-never-confirm-alone-window3", JUMP[:6] + [0.0] * 4, [(525, 0.2), (550, 0.2), (575, 0.2), (650, 0.2)], 3, None),
    ("spike-refined-then-real-departure", [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3], [(250, 0.5), (650, 0.3)], 2, 650),
    ("unconfirmed-yet", [0.0] * 9 + [0.5], [(950, 0.5)], 2, None),
    ("refined-before-the-baseline-ignored", JUMP, [(50, -1.0), (60, 0.9)], 3, 500),  # the baseline is the first regular evaluation
    ("probes-not-measured-are-skipped", JUMP, [(425, 0.2), (450, math.nan), (475, 0.2)], 3, 425),
]


@pytest.mark.parametrize("gaps, points, window, expected", [c[1:] for c in REFINED], ids=[c[0] for c in REFINED])
def test_refined_rows_narrow_a_confirmed_onset(gaps, points, window, expected):
    steps, train, test, flags = with_refined(gaps, points)
    assert loss_divergence_onset(steps, train, test, 0.05, window, flags) == expected


def test_refined_rows_as_regular_would_confirm():
    """The flags matter: the same rows read as regular evaluations confirm the spike at 300."""
    steps, train, test, flags = with_refined(SPIKE, [(350, 0.5)])
    assert loss_divergence_onset(steps, train, test, 0.05, 2, flags) is None
    assert loss_divergence_onset(steps, train, test, 0.05, 2) == 300


def test_the_trial_record_reads_the_refined_flags():
    steps, train, test, flags = with_refined(JUMP, [(450, 0.2)])
    history = [{"step": s, "train_loss": tr, "test_loss": te, "mem_frac": 0.0, **({"refined": True} if r else {})}
               for s, tr, te, r in zip(steps, train, test, flags)]  # fmt: skip
    cfg = ExperimentConfig(stop=StopConfig(loss_gap=0.05, loss_window=3, on=("loss",)))
    got = onset_summary(cfg, history)
    assert got["tau_mem_loss_step"] == got["tau_mem_step"] == 450
