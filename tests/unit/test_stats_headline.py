"""The headline τ_mem a space declares (stop.headline) through `raydiff analyze`; the
rise-time-free onset (the back-extrapolated start of f_mem's rise); τ's binomial bracket."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis_synth import THRESHOLD, eval_steps, write_sweep
from raydiff.analysis.scaling import analyze_sweep
from raydiff.analysis.trials import Definition, onset_of, peak_fidelity, rise_start
from raydiff.config import StopConfig
from raydiff.errors import ConfigError
from raydiff.metrics.onset import loss_divergence_onset, mem_onset
from raydiff.results_folder import load_sweep
from tiny_trial import tiny


@pytest.mark.parametrize("k", [0.08, 0.15, 0.4])
def test_rise_start_is_free_of_the_rise_time(k):
    """f = k·log(step/s0) after s0: the fixed level 0.1 is reached at s0·e^(0.1/k), later the
    slower the rise; the back-extrapolated start is s0 whatever the slope."""
    s0 = 5000.0
    steps = eval_steps(200_000, first=100, ratio=1.05).tolist()
    f = [float(np.clip(k * math.log(s / s0), 0.0, 1.0)) if s > s0 else 0.0 for s in steps]
    fixed = mem_onset(steps, f, THRESHOLD, 2)
    start = rise_start(steps, f, THRESHOLD, 2)
    assert fixed == pytest.approx(s0 * math.exp(0.1 / k), rel=0.06)
    assert start == pytest.approx(s0, rel=0.06) and start <= fixed


def test_rise_start_none_without_a_rise():
    steps = [100, 200, 400]
    assert rise_start(steps, [0.0, 0.01, 0.02], THRESHOLD, 2) is None


def test_headline_loss_is_what_analyze_fits(tmp_path):
    """Marion & Wu's headline, the loss divergence: analyze's τ is each trial's loss onset."""
    write_sweep(tmp_path / "s", n=(64, 128, 256), b=(16,), lr=(1e-4,), seeds=2, definitions=True, headline="loss", seed=3)
    sweep = load_sweep(str(tmp_path / "s"))
    an = analyze_sweep(sweep, n_boot=50, sensitivity=False)
    assert an.headline == "loss" and an.definition.kind == "loss"
    assert "loss divergence" in an.definition_label and "stop.headline: loss" in an.definition_label
    stop = StopConfig()
    for s in an.stats:
        rows = sweep.evals[s.trial_id]
        want = loss_divergence_onset([r["step"] for r in rows], [r["train_loss"] for r in rows], [r["test_loss"] for r in rows],
                                     stop.loss_gap, stop.loss_window)  # fmt: skip
        assert s.tau == (None if want is None else float(want))
    assert an.joint is not None and an.joint.target.startswith("tau_mem_step [loss divergence")


def test_headline_features_reads_the_sscd_fraction(tmp_path):
    write_sweep(tmp_path / "s", n=(64, 128, 256), b=(16,), lr=(1e-4,), definitions=True, headline="features", seed=4)
    sweep = load_sweep(str(tmp_path / "s"))
    an = analyze_sweep(sweep, n_boot=50, sensitivity=False)
    assert an.definition == Definition(series="features") and "SSCD" in an.definition_label
    for s in an.stats:
        rows = sweep.evals[s.trial_id]
        want = mem_onset([r["step"] for r in rows], [r["mem_frac_features"] for r in rows], 0.1, 2)
        assert s.tau == (None if want is None else float(want))
        assert s.mem_rate_series == "mem_frac_features"  # the memorization rate from the SSCD score
    assert not [w for w in an.warnings if "differs from trials.parquet" in w]


def test_no_headline_keeps_mem_frac(tmp_path):
    write_sweep(tmp_path / "s", n=(64, 128, 256), b=(16,), lr=(1e-4,), seed=5)
    an = analyze_sweep(load_sweep(str(tmp_path / "s")), n_boot=50, sensitivity=False)
    assert an.headline == "mem_frac" and an.definition == Definition()


def test_binomial_bracket_holds_tau(tmp_path):
    """τ under the fraction's interval ends: the upper ends cross first, the lower ends last."""
    write_sweep(tmp_path / "s", n=(64, 128, 256), b=(16,), lr=(1e-4,), seed=6, budget=None)
    an = analyze_sweep(load_sweep(str(tmp_path / "s")), n_boot=50, sensitivity=False)
    onsets = [s for s in an.stats if s.state == "onset"]
    assert onsets and all(s.tau_lo is not None and s.tau_lo < s.tau for s in onsets)
    # the synthetic series stop two evaluations after the crossing: the lower ends (f − 0.05) may not cross
    assert all(s.tau_hi is None or s.tau_hi > s.tau for s in onsets)
    assert onset_of([], Definition(kind="loss"), StopConfig()) is None


def test_peak_fidelity_by_swd():
    rows = [{"step": 10, "sliced_wasserstein": 3.0, "fid": 50.0}, {"step": 20, "sliced_wasserstein": 2.0, "fid": 60.0},
            {"step": 30, "sliced_wasserstein": 1.0, "fid": 40.0}]  # fmt: skip
    assert peak_fidelity(rows, 20, "sliced_wasserstein") == (2.0, 20)
    assert peak_fidelity(rows, 20) == (50.0, 10)


@pytest.mark.parametrize(
    "sections, key",
    [
        ({"stop": {"headline": "sscd"}}, "stop.headline"),
        ({"stop": {"headline": "features"}}, "stop.headline"),  # features not measured (pixel only)
    ],
)
def test_headline_is_validated(sections, key):
    with pytest.raises(ConfigError) as e:
        tiny(**sections)
    assert e.value.key == key
