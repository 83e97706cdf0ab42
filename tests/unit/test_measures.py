"""The registry of measures and what reads it, by table: registration rules, onset definitions and
their series, config checks, the sequential test's first round, refinement's crossings and
narrowing, the exact stop after continue_for."""

from __future__ import annotations

import math

import pytest

from raydiff import measures
from raydiff.config import ConfigError
from raydiff.evaluation import sequential_looks, sequential_plan
from raydiff.metrics.memorization import settled
from raydiff.training.refine import Crossing, bisect_crossing, crossings, loss_crossed
from raydiff.training.reports import Onsets
from raydiff.training.schedule import upcoming_evaluations
from tiny_trial import tiny


def test_builtin_registry():
    assert measures.names()[:2] == ("pixel", "features") and {"loss", "fid", "swd"} <= set(measures.names())
    assert set(measures.names("memorization")) >= {"pixel", "features", "dinov2", "clip", "inception"}
    assert measures.names("fidelity") == ("fid", "swd") and measures.names("loss") == ("loss",)
    assert measures.definition_names()[:2] == ("pixel", "features")
    assert measures.definition_names()[-2:] == ("pixel_raw", "loss")  # raw variants after the tests, the loss last
    d = measures.definition("pixel_raw")
    assert d.raw and d.series == ("history_pixel_raw",) and d.field == "mem_frac_raw" and d.tau_column == "tau_mem_pixel_raw_step"
    assert measures.definition("loss").series == ("history_train_loss", "history_test_loss")
    assert measures.definition("features").field == "mem_frac_features"


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"name": "bad-name"}, "identifier"),
        ({"name": "x_raw"}, "identifier not ending"),
        ({"name": "pixel"}, "registered already"),
        ({"name": "newone", "kind": "vibes"}, "kind must be one of"),
        ({"name": "newone2", "onset": "ratio", "history": ()}, "onset rule"),
        ({"name": "newone3", "onset": "sometimes", "history": ("x",)}, "onset rule"),
    ],
)
def test_registration_refused(attrs, message):
    cls = type("Bad", (measures.Measure,), {"kind": "fidelity", "description": "", **attrs})
    with pytest.raises(ValueError, match=message):
        measures.register(cls)
    assert measures.REGISTRY.get(attrs["name"]) is not cls


@pytest.mark.parametrize(
    "eval_, stop, measured, definitions",
    [
        ({}, {}, ("pixel", "loss"), ("pixel", "loss")),
        ({"memorization_space": "both", "embedding": "x.pt"}, {}, ("pixel", "features", "loss"), ("pixel", "features", "loss")),
        ({"measures": ["features", "loss"], "embedding": "x.pt"}, {"on": ["features", "loss"]}, ("features", "loss"), ("features", "loss")),
        # the raw-weights test only where stop.on names it (EMA evaluated), or raw_memorization: true
        ({"measures": ["pixel", "loss"]}, {"on": ["pixel_raw"]}, ("pixel", "loss"), ("pixel", "pixel_raw", "loss")),
        ({"measures": ["pixel", "loss"], "raw_memorization": True}, {}, ("pixel", "loss"), ("pixel", "pixel_raw", "loss")),
        ({"measures": ["pixel", "loss"]}, {}, ("pixel", "loss"), ("pixel", "loss")),
    ],
)
def test_measured_and_definitions(eval_, stop, measured, definitions):
    cfg = tiny(eval=eval_, stop=stop)
    assert cfg.measured == measured and cfg.definitions == definitions


@pytest.mark.parametrize(
    "eval_, stop, key",
    [
        ({"measures": ["pixl"]}, {}, "eval.measures[0]"),
        ({"measures": []}, {}, "eval.measures"),
        ({"measures": ["pixel", "pixel"]}, {}, "eval.measures"),
        ({"measures": ["pixel"], "memorization_space": "both"}, {}, "eval.measures"),
        ({"measures": ["loss"]}, {}, "eval.measures"),  # no memorization test, no stop.on: nothing to stop on
        ({"measures": ["pixel", "loss"]}, {"on": ["features"]}, "stop.on"),
        ({"measures": ["pixel", "loss"], "raw_memorization": False}, {"on": ["pixel_raw"]}, "stop.on"),
        ({"measures": ["features"]}, {}, "eval.embedding"),
        ({"figures": "later"}, {}, "eval.figures"),
        ({"refine_fraction": 1.5}, {}, "eval.refine_fraction"),
    ],
)
def test_config_refusals(eval_, stop, key):
    with pytest.raises(ConfigError) as e:
        tiny(eval=eval_, stop=stop)
    assert e.value.key == key


@pytest.mark.parametrize(
    "first, total, threshold, expected",
    [
        (32, 128, 0.1, (64, 3)),  # 0/32 over three looks: upper bound 0.139 > 0.1 — a round that cannot settle
        (64, 128, 0.1, (64, 2)),
        (8, 1024, 0.1, (64, 8)),
        (32, 32, 0.1, (32, 1)),  # one look at the full count: nothing to double
        (64, 4, 0.1, (4, 1)),  # a round past num_samples: one look
        (None, 128, 0.1, (128, 1)),
        (128, 1024, 0.05, (128, 4)),
    ],
)
def test_sequential_plan(first, total, threshold, expected):
    r, looks = sequential_plan(first, total, threshold)
    assert (r, looks) == expected
    if r < total:
        assert looks == sequential_looks(first, total)  # the configured round's looks: each keeps its level
        assert settled(0, r, threshold, looks) and (r == first or not settled(0, r // 2, threshold, looks))


def test_doubling_the_first_round_leaves_every_decision():
    """The default's test (round 32 of 128 at 0.1): every count k at 64 and 128 samples settles,
    or not, as it did with the round of 32 — the τ fingerprint does not move."""
    first, looks = sequential_plan(32, 128, 0.1)
    assert (first, looks) == (64, sequential_looks(32, 128))
    for n in (64, 128):
        for k in range(n + 1):
            assert settled(k, n, 0.1, looks) == settled(k, n, 0.1, sequential_looks(32, 128))


@pytest.mark.parametrize(
    "steps, crossing, fraction, calls",
    [
        (list(range(110, 260, 10)), 7, None, 4),  # 15 snapshots: ⌈log₂ 16⌉ evaluations
        (list(range(110, 260, 10)), 7, 0.2, 3),  # 180 vs 160: within 20% of τ̂ after three, not four
    ],
)
def test_bisect_narrows_to_a_fraction(steps, crossing, fraction, calls):
    seen = []

    def above(i):
        seen.append(i)
        return i >= crossing

    found = bisect_crossing(len(steps), above, steps, fraction)
    assert len(seen) == calls and found >= crossing
    if fraction is None:
        assert found == crossing


def test_crossings_follow_the_stop_rule():
    cfg = tiny(eval={"measures": ["pixel", "features", "loss"], "embedding": "x.pt"}, stop={"on": ["features", "loss"]})
    history = [{"step": 100, "mem_frac": 0.0, "mem_frac_features": 0.0}]
    assert crossings(cfg, history, {"mem_frac": 0.5, "mem_frac_features": 0.2}) == (Crossing("features", "mem_frac_features", 0.1),)
    assert crossings(cfg, history, {"mem_frac": 0.5, "mem_frac_features": 0.05}) == ()
    default = tiny()
    assert crossings(default, [{"step": 1, "mem_frac": 0.0}], {"mem_frac": 0.3}) == (Crossing("pixel", "mem_frac", 0.1),)


@pytest.mark.parametrize(
    "history, now, expected",
    [
        # (train, test) of the regular evaluations before; this one's; the baseline g_0 when it crossed
        pytest.param([(1.0, 1.1)], (1.0, 1.2), 0.1, id="first-rise-above-the-gap-over-the-baseline"),
        pytest.param([(1.0, 1.1)], (1.0, 1.15), None, id="excess-at-the-gap-is-not-above"),
        pytest.param([(1.0, 1.0), (1.0, 1.1)], (1.0, 1.2), None, id="already-above-at-the-evaluation-before"),
        pytest.param([(1.0, 1.0), (1.0, 1.1), (1.0, 1.0)], (1.0, 1.2), 0.0, id="a-second-rise-is-a-new-bracket"),
        pytest.param([], (1.0, 1.5), None, id="the-first-evaluation-is-the-baseline"),
        pytest.param([(1.0, 1.0), (None, None)], (1.0, 1.2), 0.0, id="an-unmeasured-evaluation-is-skipped"),
        pytest.param([(1.0, 1.0)], (None, None), None, id="not-measured-now"),
    ],
)
def test_loss_crossed(history, now, expected):
    rows = [{"step": 100 * (i + 1), "train_loss": tr, "test_loss": te} for i, (tr, te) in enumerate(history)]
    rows.append({"step": 100 * len(rows) + 50, "train_loss": 1.0, "test_loss": 9.0, "refined": True})  # a snapshot: neither baseline nor bracket end
    got = loss_crossed(rows, {"train_loss": now[0], "test_loss": now[1]}, 0.05)
    assert got == (None if expected is None else pytest.approx(expected))


def test_the_loss_crossing_joins_the_ratio_ones():
    cfg = tiny(eval={"measures": ["pixel", "features", "loss"], "embedding": "x.pt"}, stop={"on": ["features", "loss"], "loss_gap": 0.05})
    history = [{"step": 100, "mem_frac_features": 0.0, "train_loss": 1.0, "test_loss": 1.0}]
    got = crossings(cfg, history, {"mem_frac_features": 0.2, "train_loss": 1.0, "test_loss": 1.1})
    assert got == (Crossing("features", "mem_frac_features", 0.1), Crossing("loss", "test_loss", 0.05, 0.0))
    assert [c.probes for c in got] == [False, True]
    assert got[1].above({"train_loss": 1.0, "test_loss": 1.06}) and not got[1].above({"train_loss": 1.0, "test_loss": 1.04})
    assert not got[1].above({"train_loss": math.nan, "test_loss": math.nan})  # a snapshot the probes did not measure
    pixel_only = tiny(eval={"measures": ["pixel", "loss"]})  # no stop.on: the loss never drives the stop, never refined
    assert crossings(pixel_only, history, {"mem_frac": 0.0, "train_loss": 1.0, "test_loss": 2.0}) == ()


def test_stop_exactly_at_continue_for():
    cfg = tiny(stop={"continue_for": 0.25, "patience": 1}, train={"max_steps": 2000}, eval={"every_steps": 20})
    history = [{"step": s, "mem_frac": f, "train_loss": 1.0, "test_loss": 1.0} for s, f in ((100, 0.0), (200, 0.5))]
    onset = Onsets.of(cfg, history)
    assert onset.tau == 200
    assert upcoming_evaluations(cfg, 200, history, [400, 600], onset) == [250, 400, 600]  # τ + ⌈0.25 τ⌉
    assert upcoming_evaluations(cfg, 250, history, [400], onset) == [400]  # the stop step is behind
