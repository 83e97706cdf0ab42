"""The stop decision (`raydiff.metrics.stop.decide`, made once by `train()` and carried in its
reports), the Ray stopper that reads it, and the one onset rule they share with the trial record
and `raydiff analyze`."""

from __future__ import annotations

import math
import re
import pickle

import pytest

from raydiff.config import StopConfig
from raydiff.metrics.onset import interpolated_onset, loss_divergence_onset, mem_onset
from raydiff.metrics.stop import StopDecision, decide, final_status, reported, stop_fields
from raydiff.tune.stopper import MemorizationOnsetStopper
from raydiff.tune.trainable import for_tune

NAN = float("nan")


def result(fracs, *, every=100, budget=1000, step=None, **extra):
    """A reported result as `raydiff.trial.train` builds it: the history of one eval per `every` steps."""
    steps = [every * (i + 1) for i in range(len(fracs))]
    out = {
        "step": step if step is not None else (steps[-1] if steps else 0),
        "budget_steps": budget,
        "history_steps": steps,
        "history_mem_frac": list(fracs),
        "diverged": False,
    }
    out.update(extra)
    return out


def decided(r, stop):
    """`r` as train() reports it: with the decision it computed once."""
    return {**r, **stop_fields(decide(r, stop))}


# (history of mem_frac, threshold, patience, budget) → expected status (None: go on) and onset step
DECIDE_CASES = [
    pytest.param([0.0, 0.05], 0.1, 1, 1000, None, None, id="below-threshold"),
    pytest.param([0.0, 0.05, 0.2], 0.1, 1, 1000, "memorized", 300, id="crossing-patience1"),
    pytest.param([0.0, 0.1], 0.1, 1, 1000, "memorized", 200, id="equal-to-threshold-counts"),
    pytest.param([0.0, 0.2], 0.1, 2, 1000, None, None, id="patience2-one-above"),
    pytest.param([0.0, 0.2, 0.3], 0.1, 2, 1000, "memorized", 200, id="patience2-two-above"),
    pytest.param([0.2, 0.3], 0.1, 3, 1000, None, None, id="patience3-two-above"),
    pytest.param([0.0, 0.2, 0.3, 0.4], 0.1, 3, 1000, "memorized", 200, id="patience3-three-above"),
    pytest.param([0.2, 0.05, 0.2], 0.1, 2, 1000, None, None, id="streak-broken-by-lower"),
    pytest.param([0.2, 0.05, 0.2, 0.3], 0.1, 2, 1000, "memorized", 300, id="streak-restarts-after-break"),
    pytest.param([0.2, NAN, 0.2], 0.1, 2, 1000, None, None, id="nan-breaks-streak"),
    pytest.param([NAN, NAN, NAN], 0.1, 1, 1000, None, None, id="nan-never-counts"),
    pytest.param([0.2, None, 0.2], 0.1, 2, 1000, "memorized", 100, id="none-skipped-keeps-streak"),
    pytest.param([None, None], 0.1, 1, 1000, None, None, id="all-none"),
    pytest.param([0.0, 0.0], 0.1, 1, 200, "budget", None, id="budget-reached"),
    pytest.param([0.0, 0.0, 0.0], 0.1, 1, 250, "budget", None, id="budget-passed"),
    pytest.param([0.0, 0.5], 0.1, 1, 200, "memorized", 200, id="onset-at-last-eval-of-budget"),
    pytest.param([0.0, 0.5, 0.6], 0.1, 2, 300, "memorized", 200, id="patience2-completes-at-budget"),
    pytest.param([0.0, 0.0, 0.6], 0.1, 2, 300, "budget", None, id="patience2-incomplete-at-budget"),
]


@pytest.mark.parametrize("fracs, threshold, patience, budget, status, onset", DECIDE_CASES)
def test_decide(fracs, threshold, patience, budget, status, onset):
    stop = StopConfig(mem_frac_threshold=threshold, patience=patience)
    r = result(fracs, budget=budget)
    d = decide(r, stop)
    if status is None:
        assert d is None
    else:
        assert isinstance(d, StopDecision) and d.status == status
        if status == "memorized":
            assert f"from step {onset}" in d.reason
    # the stopper and the onset rule agree: an onset exactly when the decision is "memorized"
    assert mem_onset(r["history_steps"], r["history_mem_frac"], threshold, patience) == onset
    assert MemorizationOnsetStopper()("t0", decided(r, stop)) is (status is not None)
    assert reported(decided(r, stop)) == d  # the report carries the decision, reason and all
    # as Ray gets the report (lists as tuples, so its TensorBoard logger skips them): same decision
    as_tuples = for_tune(r)
    assert isinstance(as_tuples["history_mem_frac"], tuple)
    assert decide(as_tuples, stop) == d


@pytest.mark.parametrize(
    "res, status",
    [
        pytest.param({"step": 100, "budget_steps": 1000}, None, id="no-history-keys"),
        pytest.param({"step": 1000, "budget_steps": 1000}, "budget", id="no-history-budget"),
        pytest.param({"budget_steps": 1000}, None, id="no-step"),
        pytest.param({"step": 5000}, None, id="no-budget"),
        pytest.param({}, None, id="empty-result"),
        pytest.param({"history_steps": [], "history_mem_frac": [], "step": 0, "budget_steps": 10}, None, id="empty-history"),
        pytest.param({"history_steps": [100], "history_mem_frac": None, "step": 100, "budget_steps": 100}, "budget", id="history-fracs-none"),
    ],
)
def test_decide_missing_metric(res, status):
    d = decide(res, StopConfig(mem_frac_threshold=0.1, patience=1))
    assert (d.status if d else None) == status


@pytest.mark.parametrize(
    "fracs, budget",
    [
        pytest.param([0.0, 0.0], 1000, id="diverged-early"),
        pytest.param([0.5, 0.5], 1000, id="diverged-after-onset"),
        pytest.param([0.0, 0.0], 200, id="diverged-at-budget"),
    ],
)
def test_diverged_wins(fracs, budget):
    r = result(fracs, budget=budget, diverged=True, diverged_step=150)
    d = decide(r, StopConfig(mem_frac_threshold=0.1, patience=1))
    assert d.status == "diverged" and "150" in d.reason


def test_stopper_interface():
    s = MemorizationOnsetStopper()
    assert s.stop_all() is False
    assert s("t", decided(result([0.0]), StopConfig())) is False


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_stopper_pickle_round_trip(patience):
    stop = StopConfig(mem_frac_threshold=0.25, patience=patience)
    s = MemorizationOnsetStopper()
    s2 = pickle.loads(pickle.dumps(s))
    histories = [[0.0], [0.3], [0.3, 0.3], [0.3, 0.3, 0.3], [0.3, NAN, 0.3], [0.1, 0.2, 0.24], [0.0] * 10]
    for fr in histories:
        for budget in (100, 300, 1000):
            r = decided(result(fr, budget=budget), stop)
            assert s2("t", r) == s("t", r) == (decide(r, stop) is not None)
            assert s2("t", for_tune(r)) == s("t", r)  # as Ray gets it


# (fields a report carries) → the status the stopper, the results callback and the progress
# table read from it; a report without a decision that ends the trial spent its budget
REPORTED_CASES = [
    pytest.param({"stop_status": "memorized", "stop_reason": "onset"}, True, "memorized", id="memorized"),
    pytest.param({"stop_status": "diverged", "stop_reason": "nan"}, True, "diverged", id="diverged"),
    pytest.param({"stop_status": "budget", "stop_reason": "spent"}, True, "budget", id="budget"),
    pytest.param({"stop_status": None, "stop_reason": None, "budget_steps": 60}, False, "budget", id="no-decision-yet"),
    pytest.param({"budget_steps": 60}, False, "budget", id="no-decision-fields"),
    pytest.param({}, False, "budget", id="empty-report"),
    # a report whose history shows an onset but carries no decision (a refined snapshot row): the
    # stopper does not decide again
    pytest.param({**result([0.5, 0.5]), "stop_status": None}, False, "budget", id="history-without-decision"),
]


@pytest.mark.parametrize("report, stops, status", REPORTED_CASES)
def test_reported_decision(report, stops, status):
    assert MemorizationOnsetStopper()("t", report) is stops
    assert (reported(report) is not None) is stops
    assert final_status(report).status == status
    if stops:
        assert reported(report).reason == report["stop_reason"]


# ------------------------------------------------------------------------------ onset rules


@pytest.mark.parametrize(
    "steps, fracs, threshold, patience, expected",
    [
        pytest.param([10, 20, 30], [0.0, 0.0, 0.0], 0.1, 1, None, id="never"),
        pytest.param([10, 20, 30], [0.0, 0.2, 0.0], 0.1, 1, 20, id="first-crossing"),
        pytest.param([10, 20, 30, 40], [0.2, 0.0, 0.2, 0.2], 0.1, 2, 30, id="second-run"),
        pytest.param([10, 20, 30], [0.2, None, 0.2], 0.1, 2, 10, id="none-skipped"),
        pytest.param([10, 20, 30], [0.2, NAN, 0.2], 0.1, 2, None, id="nan-breaks"),
        pytest.param([10, 20, 30], [0.2, math.inf, 0.2], 0.1, 2, None, id="inf-breaks"),
        pytest.param([], [], 0.1, 1, None, id="empty"),
        pytest.param([5, 7, 9], [0.5, 0.6, 0.7], 0.5, 3, 5, id="from-first-eval"),
    ],
)
def test_mem_onset(steps, fracs, threshold, patience, expected):
    assert mem_onset(steps, fracs, threshold, patience) == expected


def test_interpolated_onset_log_linear():
    # crossing between (200, 0.05) and (300, 0.2): w = (0.1 − 0.05) / 0.15 = 1/3 of the way in log(step)
    got = interpolated_onset([100, 200, 300], [0.0, 0.05, 0.2], 0.1, 1)
    assert got == pytest.approx(200.0 * 1.5 ** (1.0 / 3.0), rel=1e-12)  # = 228.942...
    assert 200 < got < 300


@pytest.mark.parametrize(
    "steps, fracs, patience, expected",
    [
        pytest.param([100, 200], [0.5, 0.6], 1, 100.0, id="onset-at-first-eval"),
        pytest.param([100, 200], [0.0, 0.0], 1, None, id="no-onset"),
        pytest.param([100, 200, 300], [0.05, None, 0.2], 1, 100.0 * 3.0 ** (1.0 / 3.0), id="none-skipped"),
        pytest.param([100, 200], [NAN, 0.2], 1, 200.0, id="nan-before-falls-back"),
        pytest.param([100, 200, 300], [0.0, 0.1, 0.2], 2, 200.0, id="exactly-at-threshold"),
    ],
)
def test_interpolated_onset_cases(steps, fracs, patience, expected):
    got = interpolated_onset(steps, fracs, 0.1, patience)
    assert got == (None if expected is None else pytest.approx(expected, rel=1e-12))


@pytest.mark.parametrize(
    "train, test, gap, window, expected",
    [
        # relative gaps 0, 0, .2, .2, .2, .2 against the first: the jump at step 3, confirmed by the
        # next window − 1 evaluations, is reported where it happened (issue 13: no longer a trailing
        # average that put it one evaluation late: step 4 for a gap of 0.1)
        pytest.param([1.0] * 6, [1, 1, 1.2, 1.2, 1.2, 1.2], 0.05, 3, 3, id="window3"),
        pytest.param([1.0] * 6, [1, 1, 1.2, 1.2, 1.2, 1.2], 0.1, 3, 3, id="window3-larger-gap"),
        pytest.param([1.0] * 6, [1, 1, 1.2, 1.0, 1.0, 1.0], 0.05, 2, None, id="one-spike-ignored"),
        pytest.param([1.0] * 6, [1.1] * 6, 0.05, 1, None, id="constant-offset-is-no-departure"),
        pytest.param([1.0] * 6, [1.0] * 6, 0.05, 3, None, id="no-gap"),
        pytest.param([1, None, 1, 1, 1, 1], [1, 1, 1, 1.5, 1.5, 1.5], 0.05, 1, 4, id="missing-skipped"),
        pytest.param([1, 1, 1, NAN, 1, 1], [1, 1, 1.5, 1.5, 1.5, 1], 0.05, 1, 3, id="nan-skipped"),
        pytest.param([2.0] * 4, [2.0, 2.4, 2.4, 2.4], 0.1, 1, 2, id="relative-gap"),
    ],
)
def test_loss_divergence_onset(train, test, gap, window, expected):
    steps = [1, 2, 3, 4, 5, 6][: len(train)]
    assert loss_divergence_onset(steps, train, test, gap, window) == expected


def test_metric_row_is_the_same_from_what_ray_gets():
    """Ray gets list metrics as tuples (`for_tune`); the Parquet row built from them must equal the
    row built from the trial's own report, or a resumed sweep would rewrite unchanged files."""
    from raydiff.tune.callback import metric_row

    report = {**result([0.0, 0.2]), "train_loss": 0.1, "test_loss": 0.2, "mem_frac": 0.2,
              "samples_nn_index": [3, 1], "samples_nn_ratio": [0.2, 0.9], "eval_s": 1.0}  # fmt: skip
    row = metric_row("t0", for_tune(report))
    assert row == metric_row("t0", report)
    assert row["samples_nn_index"] == [3, 1] and isinstance(row["samples_nn_index"], list)


# ------------------------------------------------------------------ named onset definitions


def series(pixel=None, features=None, raw=None, train=None, test=None, every=100, budget=1000, step=None):
    """A report with the named series of `raydiff.training.reports.history_series`."""
    n = len(next(s for s in (pixel, features, raw, train) if s is not None))
    steps = [every * (i + 1) for i in range(n)]
    out = {"step": step if step is not None else steps[-1], "budget_steps": budget, "history_steps": steps, "diverged": False}
    for key, values in (("history_pixel", pixel), ("history_features", features), ("history_pixel_raw", raw),
                        ("history_train_loss", train), ("history_test_loss", test)):  # fmt: skip
        if values is not None:
            out[key] = list(values)
    return out


FLAT = [1.0] * 6
JUMP = [1.0, 1.0, 1.0, 1.5, 1.5, 1.5]  # the test loss departs at the 4th evaluation (step 400)

# (report, stop.on, continue_for) → status (None: go on), the stop rule's τ
ON_CASES = [
    pytest.param(series(pixel=[0, 0, 0.2, 0.3, 0.3, 0.3]), None, 0.0, "memorized", 300, id="default-is-pixel"),
    pytest.param(series(features=[0, 0, 0.2, 0.3, 0.3, 0.3]), None, 0.0, "memorized", 300, id="default-features-only"),
    pytest.param(series(pixel=[0, 0.2, 0.3, 0.3, 0.3, 0.3], features=[0] * 6, train=FLAT, test=JUMP), ("features", "loss"), 0.0, None, None, id="features-not-fired"),
    pytest.param(series(pixel=[0] * 6, features=[0, 0, 0, 0, 0.2, 0.3], train=FLAT, test=JUMP), ("features", "loss"), 0.0, "memorized", 500, id="both-fired-latest-is-tau"),
    pytest.param(series(features=[0, 0.2, 0.3, 0.3, 0.3, 0.3], train=FLAT, test=FLAT), ("features", "loss"), 0.0, None, None, id="loss-not-fired"),
    pytest.param(series(pixel=[0, 0.2, 0.3, 0.3, 0.3, 0.3], raw=[0.2, 0.3, 0.3, 0.3, 0.3, 0.3]), ("pixel_raw",), 0.0, "memorized", 100, id="raw-weights-earlier"),
    pytest.param(series(pixel=[0, 0.2, 0.3, 0.3, 0.3, 0.3], step=250), ("pixel",), 0.5, None, 200, id="continuing-after-onset"),
    pytest.param(series(pixel=[0, 0.2, 0.3, 0.3, 0.3, 0.3], step=300), ("pixel",), 0.5, "memorized", 200, id="continued-half-tau"),
    pytest.param(series(pixel=[0, 0.2, 0.3, 0.3, 0.3, 0.3], step=250, budget=250), ("pixel",), 5.0, "memorized", 200, id="budget-ends-the-continuation"),
    pytest.param(series(pixel=[0] * 6, budget=600), ("pixel",), 0.0, "budget", None, id="budget-without-onset"),
]


@pytest.mark.parametrize("report, on, continue_for, status, tau", ON_CASES)
def test_decide_on_named_definitions(report, on, continue_for, status, tau):
    from raydiff.metrics.stop import onsets, stop_onset

    stop = StopConfig(mem_frac_threshold=0.1, patience=2, loss_gap=0.05, loss_window=2, on=on, continue_for=continue_for)
    d = decide(report, stop)
    assert (d.status if d else None) == status
    assert stop_onset(onsets(report, stop), stop) == tau
    assert MemorizationOnsetStopper()("t", decided(report, stop)) is (status is not None)


@pytest.mark.parametrize(
    "section, needle",
    [
        pytest.param({"stop": {"on": ["pixels"]}}, "stop.on[0]", id="unknown-definition"),
        pytest.param({"stop": {"on": []}}, "at least one", id="empty"),
        pytest.param({"stop": {"on": ["pixel", "pixel"]}}, "twice", id="repeated"),
        pytest.param({"stop": {"on": ["features"]}}, "does not measure", id="not-measured"),
        pytest.param({"stop": {"on": ["pixel_raw"]}}, "does not measure", id="raw-without-ema"),
        pytest.param({"stop": {"continue_for": -0.5}}, "stop.continue_for", id="negative-continuation"),
    ],
)
def test_stop_rule_errors(section, needle):
    from raydiff.config import search_space_from_dict
    from raydiff.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(needle)):
        search_space_from_dict(section)


# ---------------------------------------------------------------- confirming an onset at once

AWAIT_CASES = [
    # fracs, patience, awaiting: an open run of 1 … patience − 1 values at or above 0.1
    ([0.0, 0.0], 2, False),  # nothing crossed
    ([0.0, 0.12], 2, True),  # crossed once: the confirmation is due
    ([0.0, 0.12, 0.2], 2, False),  # confirmed: the onset fired
    ([0.0, 0.12, 0.05], 2, False),  # the run broke: back to the schedule
    ([0.0, 0.12, 0.15], 3, True),  # two of three
    ([0.0, 0.12, None], 2, True),  # an evaluation that did not measure memorization changes nothing
    ([0.0, 0.12, NAN], 2, False),  # a failed measurement breaks the run
    ([0.0, 0.12], 1, False),  # patience 1: the crossing is the onset
    ([], 2, False),
]


@pytest.mark.parametrize("fracs, patience, awaiting", AWAIT_CASES)
def test_awaiting_confirmation(fracs, patience, awaiting):
    from raydiff.metrics.stop import awaiting_confirmation

    stop = StopConfig(mem_frac_threshold=0.1, patience=patience)
    assert awaiting_confirmation(result(fracs), stop) is awaiting
    assert awaiting_confirmation({**result([]), "history_pixel": list(fracs)}, stop) is awaiting  # the named series


def test_awaiting_confirmation_follows_stop_on():
    from raydiff.metrics.stop import awaiting_confirmation

    r = {**result([0.0, 0.0]), "history_pixel": [0.0, 0.0], "history_features": [0.0, 0.3]}
    assert not awaiting_confirmation(r, StopConfig(mem_frac_threshold=0.1, patience=2))  # pixel decides
    assert awaiting_confirmation(r, StopConfig(mem_frac_threshold=0.1, patience=2, on=("features",)))
    assert awaiting_confirmation(r, StopConfig(mem_frac_threshold=0.1, patience=2, on=("pixel", "features")))


@pytest.mark.parametrize(
    "fracs, fraction, in_sight",
    [
        ([0.0, 0.04], 0.5, False),
        ([0.0, 0.05], 0.5, True),  # half the threshold: onset in sight
        ([0.06, 0.0], 0.5, False),  # it fell back
        ([0.0, 0.05], None, False),  # off
        ([0.0, 0.12], None, True),  # a crossing awaits confirmation either way
        ([0.0, 0.12, 0.2], 0.5, False),  # fired: nothing left to see coming
        ([0.0, 0.05, NAN], 0.5, False),
    ],
)
def test_onset_in_sight(fracs, fraction, in_sight):
    from raydiff.metrics.stop import onset_in_sight

    assert onset_in_sight(result(fracs), StopConfig(mem_frac_threshold=0.1, patience=2), fraction) is in_sight
