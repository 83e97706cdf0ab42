"""τ_gen beside τ_mem (issue 13; Bonnaire et al. 2025: τ_gen ≈ constant in n, τ_mem ∝ n). τ_gen
is the first evaluation whose FID is within 5% of the best FID at or before the onset
(trials.generalization_time), fitted over the same axes as τ_mem; the report shows both
exponents and the ratio τ_mem/τ_gen. Synthetic FID curves with a known minimum."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pyarrow.parquet as pq
import pytest

from analysis_synth import write_sweep
from raydiff.analysis.report import analyze
from raydiff.analysis.scaling import analyze_sweep, generation_fits
from raydiff.analysis.text import generation_text
from raydiff.analysis.trials import TAU_GEN_WITHIN, generalization_time
from raydiff.results_folder import load_sweep

STEPS = [100, 200, 300, 400, 500, 600, 700, 800]
FID = [300.0, 120.0, 60.0, 41.0, 40.0, 45.0, 80.0, 90.0]  # the minimum, 40, at step 500


def rows(fid=FID, steps=STEPS):
    return [{"step": s, "fid": f} for s, f in zip(steps, fid)]


@pytest.mark.parametrize(
    "fid, onset, within, expected",
    [
        pytest.param(FID, 700, 0.05, (400, False), id="first-within-5pct"),  # 41 ≤ 1.05 × 40
        pytest.param(FID, 700, 0.0, (500, False), id="the-best-fid-step"),
        pytest.param(FID, 700, 0.01, (500, False), id="41-is-not-within-1pct"),
        pytest.param(FID, 300, 0.05, (300, False), id="only-evaluations-up-to-the-onset"),
        pytest.param(FID, 450, 0.05, (400, False), id="onset-between-evaluations"),
        pytest.param(FID, None, 0.05, (400, False), id="no-onset-minimum-seen"),
        pytest.param([300.0, 200.0, 100.0, 50.0], None, 0.05, (400, True), id="no-onset-still-falling: lower bound"),
        pytest.param([300.0, 200.0, 100.0, 50.0], 400, 0.05, (400, False), id="onset-ends-the-search"),
        pytest.param([None, 100.0, None, 60.0, None, 61.0, float("nan"), 90.0], 800, 0.05, (400, False), id="missing-skipped"),
        pytest.param([None] * 8, 700, 0.05, (None, False), id="no-fid"),
    ],
)
def test_generalization_time(fid, onset, within, expected):
    assert generalization_time(rows(fid), onset, within) == expected


def test_the_default_margin_is_five_percent():
    assert TAU_GEN_WITHIN == 0.05
    assert generalization_time(rows(), 700) == (400, False)


@pytest.fixture(scope="module")
def gen_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "gen"
    gen: dict[str, float] = {}
    truth = write_sweep(root, n=(64, 128, 256, 512), b=(16, 32), lr=(1e-4, 4e-4), sigma=0.1, seed=31,
                        tau_gen=150.0, gen_sigma=0.1, gen_truth=gen, fid_every=1)  # fmt: skip
    return root, truth, gen


def test_tau_gen_per_trial_sits_just_before_the_fid_minimum(gen_sweep):
    root, _, gen = gen_sweep
    an = analyze_sweep(load_sweep(str(root)), n_boot=0, sensitivity=False)
    for s in an.stats:
        # FID = 20·(1 + 10·log²(step/τ)): within 5% of the minimum from τ·e^(−0.0707) on, and the
        # evaluations are 3% apart
        ratio = s.tau_gen / gen[s.trial_id]
        assert math.exp(-0.0707) / 1.031 <= ratio <= 1.0, (s.trial_id, ratio)
        assert not s.tau_gen_censored and s.tau_gen < s.tau


def test_tau_gen_exponents_and_the_ratio(gen_sweep, tmp_path):
    root, _, _ = gen_sweep
    an = analyze_sweep(load_sweep(str(root)), n_boot=300, sensitivity=False)
    g = an.generation
    assert g.n == 16 and g.fit.n_trials == 16 and g.fit.method == "ols"
    a_gen, a_mem, a_ratio = g.fit.coef("n_train"), an.joint.coef("n_train"), g.ratio_fit.coef("n_train")
    assert a_gen.lo <= 0.0 <= a_gen.hi and abs(a_gen.value) < 0.1  # τ_gen ≈ constant in N
    assert a_mem.lo <= 1.0 <= a_mem.hi  # τ_mem ∝ N
    # log(τ_mem/τ_gen) = log τ_mem − log τ_gen, the same design: the exponents subtract exactly
    assert a_ratio.value == pytest.approx(a_mem.value - a_gen.value, abs=1e-9)
    for axis in ("batch_size", "lr"):
        assert abs(g.fit.coef(axis).value) < 0.15
    assert g.ratio_median > 5 and g.ratio_range[0] <= g.ratio_median <= g.ratio_range[1]

    buf = io.StringIO()
    analyze(str(root), str(tmp_path / "o"), n_boot=100, out=buf)
    text = buf.getvalue()
    assert "tau_gen beside tau_mem (tau_gen: first FID within 5% of its best at or before the onset" in text
    for name in ("tau_mem ", "tau_gen ", "tau_mem/tau_gen "):
        assert any(ln.strip().startswith(name) and "α (N) = " in ln for ln in text.splitlines()), name
    fits = json.loads((tmp_path / "o" / "fits.json").read_text())
    tg = fits["tau_gen"]
    assert tg["fit"]["coefficients"][0]["name"] == "alpha" and abs(tg["fit"]["coefficients"][0]["value"]) < 0.1
    assert tg["ratio_fit"]["target"] == "tau_mem_step / tau_gen_step" and tg["ratio_median"] == pytest.approx(g.ratio_median)
    assert all(t["tau_gen"] is not None for t in fits["trials"])
    kinds = {r["fit"] for r in pq.read_table(tmp_path / "o" / "fits.parquet").to_pylist()}
    assert {"tau_gen", "tau_ratio"} <= kinds
    stats = pq.read_table(tmp_path / "o" / "trial_stats.parquet").to_pylist()
    assert all(s["tau_gen"] is not None and s["tau_gen_censored"] is False for s in stats)


def test_censored_tau_gen_is_fitted_as_a_lower_bound(tmp_path):
    """Trials cut by their budget while FID still falls: τ_gen ≥ the step of their last FID."""
    write_sweep(tmp_path / "c", n=(64, 128, 256, 512), b=(16, 32, 64), lr=(1e-4, 2e-4), budget=3000, seed=32)
    an = analyze_sweep(load_sweep(str(tmp_path / "c")), n_boot=0, sensitivity=False)
    cens = [s for s in an.stats if s.tau_gen_censored]
    assert cens and all(s.state == "censored" for s in cens)
    assert an.generation.fit.method == "tobit" and an.generation.fit.n_censored == len(cens)
    # the ratio leaves out a bound over a bound
    assert an.generation.ratio_fit.n_trials == an.generation.n - len(cens)


def test_one_fid_per_trial_and_none_at_all(tmp_path):
    write_sweep(tmp_path / "n", n=(64, 128, 256), b=(16,), lr=(1e-4,), fid_every=10**9, seed=33)
    an = analyze_sweep(load_sweep(str(tmp_path / "n")), n_boot=0, sensitivity=False)
    assert all(s.tau_gen == 10 and not s.tau_gen_censored for s in an.stats)  # only the first evaluation has one
    # no FID anywhere: said in one line, nothing fitted
    no_fid = [dataclasses.replace(s, tau_gen=None) for s in an.stats]
    g = generation_fits(no_fid, an.axes, "auto", 0)
    assert g.n == 0 and g.fit is None and g.ratio_fit is None and "no trial measured FID" in g.note
    assert generation_text(dataclasses.replace(an, generation=g)) == f"tau_gen: {g.note}"
