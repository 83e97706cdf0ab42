"""Every published finding (analysis/findings.py) on synthetic sweeps built once to reproduce it
and once to contradict it (tests/analysis_synth.py: a known power law and known curves underneath)."""

from __future__ import annotations

import json

import pytest

from analysis_synth import write_sweep
from raydiff.analysis import findings as fl
from raydiff.analysis.scaling import analyze_sweep
from raydiff.results_folder import load_sweep

# continue_evals: each trial evaluates past its onset (as stop.continue_for makes it), so its memorization rate is measurable
GRID = dict(n=(64, 128, 256), b=(16, 32), lr=(1e-4, 4e-4), p=(40_000, 160_000), sigma=0.03, fid_every=2, tau_gen=40.0, gen_sigma=0.03,
            continue_evals=8)
# reproduces every finding but "flat in B" and the double descent (τ ∝ 1/B ties the synthetic rate to B)
REPRODUCE = dict(alpha=1.0, beta=-1.0, gamma=-0.3, delta=-0.5, fid_train_gap=0.02,
                 fid_exponents={"n_train": -0.5, "params": -0.3, "batch_size": 0.3, "lr": -0.3})
REPRODUCE_B = dict(alpha=1.0, beta=0.0, gamma=-0.3, fid_bump=200.0, tau_gen=None)  # rate flat in B; FID falls, rises, falls
CONTRADICT = dict(alpha=-0.5, beta=-0.3, gamma=-1.0, delta=0.5, fid_train_gap=0.5, tau_gen_alpha=1.0,
                  fid_exponents={"n_train": 0.5, "params": 0.3, "batch_size": -0.3, "lr": 0.3})  # fmt: skip

CLAIMS = {claim: run for _, claim, run in fl.FINDINGS}
ROWS = [  # claim, the sweep that reproduces it, the one that contradicts it
    ("curves collapse under normalized time for N", "R", "C"),
    ("curves collapse under normalized time for B", "R", "C"),
    ("curves do not collapse under normalized time for η", "R", "C"),
    ("the memorization rate falls with N", "R", "C"),
    ("the memorization rate is flat in B", "RB", "C"),
    ("peak fidelity improves with N", "R", "C"),
    ("peak fidelity improves with P", "R", "C"),
    ("peak fidelity improves with smaller B", "R", "C"),
    ("peak fidelity improves with larger η", "R", "C"),
    ("larger models memorize sooner", "R", "C"),
    ("train and test distributional distances are nearly equal", "R", "C"),
    ("the fidelity distances (SWD, Fréchet) descend, rise and descend again in training", "RB", "C"),
    ("τ_mem ∝ n", "R", "C"),
    ("τ_gen ≈ constant in n", "R", "C"),
    ("τ_mem falls with the U-Net's width", "R", "C"),
]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    out = {}
    for name, kw in (("R", REPRODUCE), ("RB", REPRODUCE_B), ("C", CONTRADICT)):
        write_sweep(root / name, seed=1, **{**GRID, **kw})
        out[name] = analyze_sweep(load_sweep(str(root / name)), n_boot=200, sensitivity=False)
    return out


def test_every_finding_is_tested_both_ways():
    assert [c for c, _, _ in ROWS] == [claim for _, claim, _ in fl.FINDINGS]


@pytest.mark.parametrize("claim, good, bad", ROWS, ids=[r[0] for r in ROWS])
def test_finding_reproduced_and_contradicted(sweeps, claim, good, bad):
    yes = CLAIMS[claim](sweeps[good], 200)
    no = CLAIMS[claim](sweeps[bad], 200)
    assert yes.verdict == "reproduced", (yes.statistic, yes.value, yes.lo, yes.hi, yes.why)
    assert no.verdict == "contradicted", (no.statistic, no.value, no.lo, no.hi, no.why)


def test_not_testable_says_why(tmp_path):
    """One N, one B: nothing about B, η, P or the fidelity across them can be tested."""
    write_sweep(tmp_path / "s", n=(64, 128, 256), b=(16,), lr=(1e-4,), seed=2)
    an = analyze_sweep(load_sweep(str(tmp_path / "s")), n_boot=100, sensitivity=False)
    out = CLAIMS["curves collapse under normalized time for B"](an, 100)
    assert out.verdict == "not testable" and "does not vary B" in out.why
    out = CLAIMS["train and test distributional distances are nearly equal"](an, 100)
    assert out.verdict == "not testable" and "both splits" in out.why
    # any other space shows only what it can test; every row has a verdict from the list
    assert an.findings and all(f.verdict in fl.VERDICTS and f.verdict != "not testable" for f in an.findings)
    assert {f.claim for f in an.findings} >= {"τ_mem ∝ n", "curves collapse under normalized time for N"}


def test_a_paper_space_shows_all_its_rows(tmp_path):
    write_sweep(tmp_path / "bonnaire2025", n=(64, 128, 256), b=(16,), lr=(1e-4,), seed=3)
    an = analyze_sweep(load_sweep(str(tmp_path / "bonnaire2025")), n_boot=100, sensitivity=False)
    assert [f.claim for f in an.findings] == [c for who, c, _ in fl.FINDINGS if who == fl.BONNAIRE]
    width = next(f for f in an.findings if "width" in f.claim)
    assert width.verdict == "not testable" and "does not vary P" in width.why


def test_clean_fid_train_reference_is_not_testable(sweeps):
    an = sweeps["R"]
    for rows in an.sweep.evals.values():
        for r in rows:
            if r.get("fid_reference"):
                r["fid_reference"] = "test=cleanfid:cifar10_clean_test_32.npz;train=cleanfid:cifar10_clean_train_32.npz"
    out = CLAIMS["train and test distributional distances are nearly equal"](an, 100)
    assert out.verdict == "not testable" and "whole training split" in out.why


@pytest.mark.parametrize(
    "values, bump",
    [
        ([100, 60, 40, 30, 28, 27, 26, 25], False),  # descent, then flat
        ([100, 60, 40, 30, 45, 60, 40, 25, 24], True),  # descent, rise, descent
        ([100, 60, 40, 30, 31, 30, 29, 28], False),  # a wiggle within the noise floor
        ([100, 60, 40, 30, 40, 50, 60, 70], False),  # descent, then rise only (memorization)
    ],
)
def test_double_descent_table(values, bump):
    assert fl.has_double_descent(values) is bump


def test_findings_in_the_outputs(tmp_path):
    from raydiff.analysis.report import analyze

    write_sweep(tmp_path / "s", n=(64, 128, 256), b=(16,), lr=(1e-4,), seed=4)
    import io

    buf = io.StringIO()
    out = analyze(str(tmp_path / "s"), str(tmp_path / "a"), n_boot=100, out=buf)
    assert "findings (τ_mem: mem_frac" in buf.getvalue() and "τ_mem ∝ n" in buf.getvalue()
    fits = json.loads((out / "fits.json").read_text())
    assert fits["headline"] == "mem_frac" and any(f["claim"] == "τ_mem ∝ n" for f in fits["findings"])
    assert "<h2>Findings</h2>" in (out / "report.html").read_text()
