"""Replicate seeds (issue 13): trials that share every setting but train.seed are replicates of
one grid point. Each is one observation in the fits, and the report gives τ_mem's spread over
them at each point (mean, sd, n). A synthetic sweep with 3 seeds per point (tests/analysis_synth.py)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from analysis_synth import write_sweep
from raydiff.analysis.report import analyze
from raydiff.analysis.scaling import analyze_sweep
from raydiff.analysis.trials import point_key, trial_stats
from raydiff.results_folder import load_sweep

SEEDS = 3
SIGMA = 0.15


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep") / "rep"
    truth = write_sweep(root, n=(64, 128, 256, 512), b=(16, 32), lr=(1e-4,), sigma=SIGMA, seeds=SEEDS, seed=21)
    return root, truth


def test_every_replicate_is_an_observation(sweep):
    root, truth = sweep
    an = analyze_sweep(load_sweep(str(root)), n_boot=200, sensitivity=False)
    assert len(truth) == 8 * SEEDS
    assert an.joint.n_trials == 8 * SEEDS and sorted(an.joint.trials) == sorted(truth)
    assert an.axes == ["n_train", "batch_size"]  # the seed is no axis
    a = an.joint.coef("n_train")
    assert a.lo <= 1.0 <= a.hi


def test_spread_per_point(sweep):
    root, truth = sweep
    sw = load_sweep(str(root))
    an = analyze_sweep(sw, n_boot=50, sensitivity=False)
    assert len(an.replicates) == 8
    stats = {s.trial_id: s for s in trial_stats(sw)}
    for r in an.replicates:
        assert r.n == SEEDS and r.n_onset == SEEDS and r.n_censored == 0 and r.seeds == [0, 1, 2]
        taus = np.array([stats[t].tau for t in r.trials])
        assert len({(stats[t].n_train, stats[t].batch_size, stats[t].lr) for t in r.trials}) == 1
        assert r.mean == pytest.approx(taus.mean()) and r.sd == pytest.approx(taus.std(ddof=1))
        assert r.sd_log == pytest.approx(np.log(taus).std(ddof=1))
    assert [r.label for r in an.replicates][:2] == ["N=64, B=16", "N=64, B=32"]
    # the pooled within-point spread of log τ estimates the noise the sweep drew (σ = 0.15),
    # with 16 degrees of freedom; the grid's evaluation steps add a little
    assert 0.5 * SIGMA < an.replicate_sigma < 1.6 * SIGMA
    # replicates see the same τ up to the noise: the re-read τ tracks the truth per trial
    assert max(abs(math.log(stats[t].tau / truth[t])) for t in truth) < 0.05


def test_report_text_and_fits_json(sweep, tmp_path):
    root, _ = sweep
    buf = io.StringIO()
    analyze(str(root), str(tmp_path / "o"), n_boot=50, out=buf)
    text = buf.getvalue()
    assert "replicates (trials sharing every setting but train.seed" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("N=512, B=32"))
    assert line.split()[2:5] == ["3", "3", "0"] and line.rstrip().endswith("0,1,2")
    assert "pooled sd of log tau within points" in text
    fits = json.loads((tmp_path / "o" / "fits.json").read_text())
    assert len(fits["replicates"]) == 8 and all(r["n"] == 3 for r in fits["replicates"])
    assert fits["replicate_sigma"] == pytest.approx(analyze_sweep(load_sweep(str(root)), n_boot=0, sensitivity=False).replicate_sigma)
    assert {t["seed"] for t in fits["trials"]} == {0, 1, 2}


def test_one_seed_per_point_has_no_replicate_table(tmp_path):
    write_sweep(tmp_path / "one", n=(64, 128, 256), b=(16,), lr=(1e-4,), seed=22)
    an = analyze_sweep(load_sweep(str(tmp_path / "one")), n_boot=0, sensitivity=False)
    assert an.replicates == [] and an.replicate_sigma is None


def test_a_censored_replicate_makes_the_mean_a_lower_bound(tmp_path):
    # a budget that cuts some seeds of the slow points and not others
    write_sweep(tmp_path / "c", n=(256, 512), b=(16,), lr=(1e-4,), sigma=0.3, seeds=4, budget=7000, seed=5)
    an = analyze_sweep(load_sweep(str(tmp_path / "c")), n_boot=0, sensitivity=False)
    mixed = [r for r in an.replicates if r.n_onset and r.n_censored]
    assert mixed, [(r.n_onset, r.n_censored) for r in an.replicates]
    stats = {s.trial_id: s for s in an.stats}
    for r in mixed:
        vals = [stats[t].tau if stats[t].state == "onset" else stats[t].censor_step for t in r.trials]
        assert r.mean == pytest.approx(np.mean(vals)) and r.to_dict()["mean_is_lower_bound"]
    from raydiff.analysis.text import replicates_text

    assert "≥" in replicates_text(an)


def test_point_key_ignores_the_seed_and_the_budget_only():
    cfg = {"train": {"seed": 0, "lr": 1e-4, "max_steps": 100, "batch_size": 16}, "data": {"n_train": 64, "root": "/a"}}
    other = json.loads(json.dumps(cfg))
    other["train"].update(seed=7, max_steps=900)
    other["data"]["root"] = "/b"
    assert point_key({"config": json.dumps(cfg)}) == point_key({"config": json.dumps(other)})
    other["train"]["lr"] = 2e-4
    assert point_key({"config": json.dumps(cfg)}) != point_key({"config": json.dumps(other)})
    # without a recorded config: the trials.parquet columns
    row = {"dataset": "digits", "n_train": 64, "batch_size": 16, "lr": 1e-4, "seed": 0}
    assert point_key(row) == point_key({**row, "seed": 3}) != point_key({**row, "n_train": 128})
