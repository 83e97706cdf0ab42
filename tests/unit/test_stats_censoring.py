"""`raydiff analyze --censored auto` (the default, issue 13): the censored likelihood (tobit)
whenever a fit has a censored trial, least squares otherwise; `ols` (alias `exclude`, the old
default) drops the censored trials and says, in one warning line, that this biases the exponents
toward 0. On synthetic folders (tests/analysis_synth.py) whose slowest trials hit a step budget,
with α = 1 underneath."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from analysis_synth import write_sweep
from raydiff.analysis.report import analyze
from raydiff.analysis.scaling import analyze_sweep
from raydiff.cli import main
from raydiff.errors import UserError
from raydiff.results_folder import load_sweep

ALPHA = 1.0
BUDGET = 3000  # about a third of the 36 trials (the large-N, small-B ones) end censored


def alphas(root) -> tuple[float, float, int]:
    sw = load_sweep(str(root))
    auto = analyze_sweep(sw, n_boot=0, sensitivity=False).joint
    ols = analyze_sweep(sw, censored="ols", n_boot=0, sensitivity=False).joint
    assert auto.method == "tobit" and ols.method == "ols" and auto.n_censored == len(ols.excluded) > 0
    return auto.coef("n_train").value, ols.coef("n_train").value, auto.n_censored


def test_auto_is_closer_to_the_truth_than_dropping_on_the_same_folder(tmp_path, capsys):
    root = tmp_path / "c"
    write_sweep(root, sigma=0.2, budget=BUDGET, seed=0)
    a_auto, a_ols, n_cens = alphas(root)
    assert n_cens >= 10
    assert abs(a_auto - ALPHA) < abs(a_ols - ALPHA)
    assert a_ols < a_auto  # dropping the slowest trials flattens α
    # the command line's default is auto; --censored exclude is the old behaviour, warned about
    assert main(["analyze", str(root), "--out", str(tmp_path / "a"), "--boot", "50"]) == 0
    auto_out = capsys.readouterr().out
    fits = json.loads((tmp_path / "a" / "fits.json").read_text())
    assert fits["censored"] == "auto" and fits["joint"]["method"] == "tobit"
    assert fits["joint"]["coefficients"][0]["value"] == pytest.approx(a_auto)
    assert "toward 0" not in auto_out
    assert main(["analyze", str(root), "--out", str(tmp_path / "x"), "--boot", "50", "--censored", "exclude"]) == 0
    ols_out = capsys.readouterr().out
    fits = json.loads((tmp_path / "x" / "fits.json").read_text())
    assert fits["censored"] == "ols" and fits["joint"]["method"] == "ols"
    assert fits["joint"]["coefficients"][0]["value"] == pytest.approx(a_ols)
    warned = [ln for ln in ols_out.splitlines() if ln.startswith("warning:") and "biases the exponents toward 0" in ln]
    assert len(warned) == 1


def test_over_replicate_folders_dropping_is_biased_and_tobit_is_not(tmp_path):
    """Eight folders: the ols α lies below the tobit α in every one (selection on the outcome), and
    tobit's errors are the smaller on average."""
    got = [alphas((write_sweep(tmp_path / f"r{s}", sigma=0.2, budget=BUDGET, seed=s), tmp_path / f"r{s}")[1]) for s in range(8)]
    a_auto, a_ols = np.array([g[0] for g in got]), np.array([g[1] for g in got])
    assert np.all(a_ols < a_auto)
    assert np.mean(np.abs(a_auto - ALPHA)) < np.mean(np.abs(a_ols - ALPHA))
    assert abs(np.median(a_auto) - ALPHA) < abs(np.median(a_ols) - ALPHA)


def test_auto_without_censored_trials_is_least_squares(tmp_path):
    write_sweep(tmp_path / "u", n=(64, 128, 256), b=(16, 32), lr=(1e-4,), seed=3)
    sw = load_sweep(str(tmp_path / "u"))
    auto = analyze_sweep(sw, n_boot=50, sensitivity=False)
    ols = analyze_sweep(sw, censored="ols", n_boot=50, sensitivity=False)
    assert auto.joint.method == "ols" and auto.joint.coef("n_train") == ols.joint.coef("n_train")
    assert not [w for w in ols.warnings if "toward 0" in w]  # nothing was dropped: nothing to warn of
    tobit = analyze_sweep(sw, censored="tobit", n_boot=0, sensitivity=False)
    assert tobit.joint.method == "tobit"  # asked for: the censored likelihood, even with none censored
    assert tobit.joint.coef("n_train").value == pytest.approx(auto.joint.coef("n_train").value, abs=1e-6)


def test_an_unknown_mode_is_refused(tmp_path):
    write_sweep(tmp_path / "m", n=(64, 128, 256), b=(16,), lr=(1e-4,), seed=4)
    with pytest.raises(UserError, match="--censored must be one of auto, tobit, ols, exclude"):
        analyze(str(tmp_path / "m"), str(tmp_path / "o"), censored="drop", n_boot=10, out=io.StringIO())
