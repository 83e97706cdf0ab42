"""τ_mem by loss divergence (Marion & Wu): the first step at which the test loss departs from the
train loss by more than a relative margin, smoothed over a trailing window, confirmed by the next
evaluation. Synthetic curves, one table row per case."""

from __future__ import annotations

import math

import pytest

from raydiff.config import ExperimentConfig, StopConfig
from raydiff.metrics.onset import loss_divergence_onset
from raydiff.trial import onset_summary

STEPS = [100 * (i + 1) for i in range(10)]  # 100, 200, ..., 1000
TRAIN = [1.0 - 0.05 * i for i in range(10)]  # a train loss that keeps falling


def curve(gaps):
    """test loss = train loss × (1 + relative gap)"""
    return [tr * (1.0 + g) for tr, g in zip(TRAIN, gaps)]


CASES = [
    # id, relative gaps per evaluation, margin, window, expected onset step
    ("never-departs", [0.0] * 10, 0.05, 3, None),
    ("below-margin", [0.04] * 10, 0.05, 1, None),
    ("test-below-train", [-0.3] * 10, 0.05, 1, None),
    ("step-departure-window1", [0.0] * 4 + [0.2] * 6, 0.05, 1, 500),
    # window 3: the smoothed gap at the first departed eval is 0.2/3 > 0.05 already
    ("step-departure-window3", [0.0] * 4 + [0.2] * 6, 0.05, 3, 500),
    # ... but with a 0.1 margin it takes a second departed eval (0.4/3 > 0.1)
    ("window-delays-onset", [0.0] * 4 + [0.2] * 6, 0.1, 3, 600),
    ("one-spike-is-not-onset", [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.05, 1, None),
    ("spike-then-real-departure", [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3], 0.05, 1, 700),
    ("needs-a-confirming-eval", [0.0] * 9 + [0.5], 0.05, 1, None),
    ("gradual-rise", [0.02 * i for i in range(10)], 0.05, 1, 400),  # 0.06 at the 4th index
    ("gradual-rise-smoothed", [0.02 * i for i in range(10)], 0.05, 3, 500),  # mean(0.04,0.06,0.08)
]


@pytest.mark.parametrize("gaps, margin, window, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_loss_divergence_onset(gaps, margin, window, expected):
    assert loss_divergence_onset(STEPS, TRAIN, curve(gaps), gap=margin, window=window) == expected


def test_missing_and_nonfinite_evaluations_are_skipped():
    gaps = [0.0] * 4 + [0.2] * 6
    test = curve(gaps)
    train = list(TRAIN)
    test[4] = None  # not measured at step 500
    train[5] = math.nan  # failed at step 600
    # 500 and 600 drop out; the next two departed evaluations are 700 and 800
    assert loss_divergence_onset(STEPS, train, test, gap=0.05, window=1) == 700


def test_nonpositive_train_loss_is_skipped():
    train = [0.0, -1.0] + TRAIN[2:]
    test = curve([0.5, 0.5] + [0.0] * 8)
    assert loss_divergence_onset(STEPS, train, test, gap=0.05, window=1) is None


def test_empty_and_single_point():
    assert loss_divergence_onset([], [], []) is None
    assert loss_divergence_onset([100], [1.0], [2.0]) is None


def test_trial_records_it_with_the_stop_config():
    history = [{"step": s, "train_loss": tr, "test_loss": te, "mem_frac": 0.0}
               for s, tr, te in zip(STEPS, TRAIN, curve([0.0] * 4 + [0.2] * 6))]  # fmt: skip
    loose = ExperimentConfig(stop=StopConfig(loss_gap=0.1, loss_window=3))
    tight = ExperimentConfig(stop=StopConfig(loss_gap=0.05, loss_window=1))
    assert onset_summary(loose, history) == {"tau_mem_step": None, "tau_mem_loss_step": 600}
    assert onset_summary(tight, history)["tau_mem_loss_step"] == 500
