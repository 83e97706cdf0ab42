"""The embedded default's second finding (issue 13): peak fidelity before onset against N, in
fidelity_vs_n.png, report.html and the report text, with the fidelity named for its features
("FID" only for Inception, "FD (digits classifier)" on the digits). Synthetic sweeps shaped like
the default (tests/analysis_synth.py): N ∈ {16, 32, 64, 128}, FID only in fidelity-only rows."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import pytest

from analysis_synth import write_sweep
from raydiff.analysis.fidelity import extractor_label, fidelity_label
from raydiff.analysis.report import analyze
from raydiff.analysis.scaling import analyze_sweep
from raydiff.analysis.text import report_text
from raydiff.results_folder import load_sweep

PNG = b"\x89PNG\r\n\x1a\n"
DIGITS = "digits_classifier/v3"
INCEPTION = "inception_v3/clean"


def default_like(root, *, extractor=DIGITS, exponent=-1.0, fidelity_every=25, n=(16, 32, 64, 128), **kw):
    """The embedded default's shape: one B and η, four N; FID only in fidelity-only rows
    (eval.fid_every 0, fid_every_steps 25); the FID curve scaled by N^exponent."""
    write_sweep(root, n=n, b=(64,), lr=(2e-3,), log_c=math.log(35.0), fid_every=0, fidelity_every_steps=fidelity_every,
                fid_extractor=extractor, fid_n_exponent=exponent, seed=3, **kw)  # fmt: skip
    return root


def text_of(root) -> str:
    return report_text(analyze_sweep(load_sweep(str(root)), n_boot=20, sensitivity=False))


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    root = default_like(tmp_path_factory.mktemp("sweeps") / "default")
    out = root.parent / "analysis"
    buf = io.StringIO()
    analyze(str(root), str(out), n_boot=50, out=buf)
    return root, out, buf.getvalue()


def test_figure_report_and_text_show_fidelity_improving_with_n(analyzed):
    root, out, text = analyzed
    fig = out / "fidelity_vs_n.png"
    assert fig.read_bytes()[:8] == PNG
    assert f"wrote {fig}" in text
    lines = text.splitlines()
    peak = next(ln for ln in lines if ln.startswith("peak "))
    assert peak.startswith("peak FD (digits classifier) before onset vs N: N=16: ")
    assert "improves with N: yes (Spearman ρ = -1.00, p = 0.083, 4 trials)" in peak
    counts = lines[lines.index(peak) + 1]
    assert counts.strip().startswith("fidelity values before onset per trial: min ")
    assert "every trial has ≥ 4" in counts
    assert "FID" not in text  # a digits-classifier distance is never called FID
    html = (out / "report.html").read_text()
    assert "alt='fidelity_vs_n.png'" in html and "peak FD (digits classifier)</th>" in html
    assert "<h3>FD (digits classifier) before memorization: peak against N</h3>" in html
    fits = json.loads((out / "fits.json").read_text())["fidelity"]
    assert fits["label"] == "FD (digits classifier)" and fits["improves"] is True and fits["rho"] == pytest.approx(-1.0)
    assert fits["min_before_onset"] >= 4 and [p["n_train"] for p in fits["points"]] == [16, 32, 64, 128]
    peaks = [p["peak"] for p in fits["points"]]
    assert peaks == sorted(peaks, reverse=True)


def test_a_stale_fidelity_figure_is_removed(analyzed, tmp_path):
    root, out, _ = analyzed
    again = tmp_path / "again"
    analyze(str(root), str(again), n_boot=0, out=io.StringIO())
    assert (again / "fidelity_vs_n.png").exists()
    bare = default_like(tmp_path / "nofid", fidelity_every=None)
    (again / "fidelity_vs_n.png").touch()
    analyze(str(bare), str(again), n_boot=0, out=io.StringIO())
    assert not (again / "fidelity_vs_n.png").exists()


@pytest.mark.parametrize(
    ("extractor", "label"),
    [(DIGITS, "FD (digits classifier)"), (INCEPTION, "FID"), ("inception_v3/legacy", "FID"), ("sscd_resnet/v1", "FD (sscd resnet)"),
     (None, "FID")],  # fmt: skip
)
def test_label_names_the_features(extractor, label):
    rows = [{"step": 10, "fid": 50.0, "fid_extractor": extractor}, {"step": 20, "fid": None, "fid_extractor": None}]
    assert fidelity_label(SimpleNamespace(evals={"t": rows})) == label
    assert extractor_label(None if extractor is None else extractor.split("/")[0]) == label


def test_mixed_extractors_are_both_named():
    evals = {"a": [{"step": 1, "fid": 3.0, "fid_extractor": DIGITS}], "b": [{"step": 1, "fid": 9.0, "fid_extractor": INCEPTION}]}
    assert fidelity_label(SimpleNamespace(evals=evals)) == "FD (digits classifier / inception v3)"


def test_inception_sweep_says_fid(tmp_path):
    text = text_of(default_like(tmp_path / "cifar_like", extractor=INCEPTION))
    assert "peak FID before onset vs N: N=16: " in text and "improves with N: yes" in text
    assert "FD (" not in text


def test_fidelity_that_does_not_improve_says_no(tmp_path):
    text = text_of(default_like(tmp_path / "worse", exponent=1.0))
    assert "improves with N: no (Spearman ρ = +1.00" in text


def test_two_trials_use_a_monotone_check_and_few_values_are_named(tmp_path):
    text = text_of(default_like(tmp_path / "two", n=(16, 32), fidelity_every=120))
    assert "improves with N: yes (monotone check over 2 trials; Spearman needs ≥ 3)" in text
    counts = next(ln for ln in text.splitlines() if "fidelity values before onset per trial" in ln)
    assert "fewer than 4 in" in counts and "two_00000 (N=16, " in counts


def test_a_sweep_without_fid_says_so_in_one_line_and_draws_no_figure(tmp_path):
    root = default_like(tmp_path / "nofid", fidelity_every=None)
    out = tmp_path / "analysis"
    buf = io.StringIO()
    analyze(str(root), str(out), n_boot=0, out=buf)
    text = buf.getvalue()
    said = [ln for ln in text.splitlines() if "before onset vs N" in ln or "fidelity values before onset" in ln]
    assert said == ["peak FID before onset vs N: no FID measured at or before any trial's onset"
                    " (eval.fid_every, eval.fid_every_steps): no fidelity_vs_n.png"]  # fmt: skip
    assert not (out / "fidelity_vs_n.png").exists() and (out / "curves_step.png").exists()
    assert "fidelity_vs_n" not in (out / "report.html").read_text().split("<h2>Figures</h2>")[1].split("<h2>")[0]
