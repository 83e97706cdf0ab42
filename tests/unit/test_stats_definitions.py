"""Onset definitions as named series (issue 13): `raydiff analyze` fits every τ column
trials.parquet records (tau_mem_step, tau_mem_pixel_step, tau_mem_features_step,
tau_mem_pixel_raw_step, tau_mem_loss_step) that has onsets, skips the columns no trial filled
(older folders), and prints a trial the sweep's own stop cut before a definition fired as a lower
bound (`≥ step`), fitted as censored."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from analysis_synth import FEATURES_AT, write_sweep
from raydiff.analysis.report import analyze
from raydiff.analysis.scaling import DefinitionFit, analyze_sweep
from raydiff.results_folder import load_sweep


@pytest.fixture(scope="module")
def defs_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("defs") / "defs"
    truth = write_sweep(root, sigma=0.1, seed=41, definitions=True)
    return root, truth


def by_column(an):
    return {d.column: d for d in an.definitions}


def test_every_recorded_definition_is_fitted(defs_sweep):
    root, truth = defs_sweep
    sw = load_sweep(str(root))
    an = analyze_sweep(sw, n_boot=200)
    d = by_column(an)
    assert list(d) == ["tau_mem_step", "tau_mem_pixel_step", "tau_mem_features_step", "tau_mem_pixel_raw_step", "tau_mem_loss_step"]
    rows = {t["trial_id"]: t for t in sw.trials}
    for col in ("tau_mem_step", "tau_mem_pixel_step", "tau_mem_pixel_raw_step", "tau_mem_loss_step"):
        assert d[col].n_onset == 36 and d[col].n_censored == 0 and d[col].fit.method == "ols", col
        assert d[col].onsets == {t: rows[t][col] for t in truth}
        a = d[col].fit.coef("n_train")
        assert a.lo <= 1.0 <= a.hi, (col, a)
    # the stop rule's and the pixel test's are the same onsets here: the same fit as the joint
    assert d["tau_mem_pixel_step"].fit.coef("n_train").value == pytest.approx(an.joint.coef("n_train").value)
    # the raw weights memorize earlier (0.8 τ): the same exponents, a lower constant
    assert d["tau_mem_pixel_raw_step"].fit.intercept.value < d["tau_mem_pixel_step"].fit.intercept.value


def test_a_definition_the_sweep_stopped_before_is_censored(defs_sweep):
    root, _ = defs_sweep
    sw = load_sweep(str(root))
    an = analyze_sweep(sw, n_boot=200)
    f = by_column(an)["tau_mem_features_step"]
    assert FEATURES_AT[1] > 1  # odd trials: the features test would fire well after the stop rule
    odd = {t["trial_id"] for i, t in enumerate(sw.trials) if i % 2}
    assert set(f.censored) == odd and set(f.onsets) == {t["trial_id"] for t in sw.trials} - odd
    steps = {t["trial_id"]: t["steps_done"] for t in sw.trials}
    assert all(f.censored[t] == steps[t] for t in odd)  # a lower bound at the trial's last step
    assert f.fit.method == "tobit" and f.fit.n_censored == 18 and f.fit.n_trials == 36
    # with a lower bound per censored trial, α stays near the truth
    assert abs(f.fit.coef("n_train").value - 1.0) < 0.2
    tid = sorted(odd)[0]
    assert f.cell(tid) == f"≥{steps[tid]}"


def test_report_text_and_files(defs_sweep, tmp_path):
    root, _ = defs_sweep
    buf = io.StringIO()
    analyze(str(root), str(tmp_path / "o"), n_boot=100, out=buf)
    text = buf.getvalue()
    assert "onset definitions recorded in trials.parquet, each fitted (auto):" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("feature cosine test"))
    assert line.split()[3:5] == ["18", "18"] and "α (N) = " in line and "(tobit, 36 trials, 18 censored)" in line
    table = text[text.index("tau by definition"):]
    head = table.splitlines()[1].split()
    assert head == ["trial", "stop", "pixel", "features", "pixel_raw", "loss"]
    first_odd = next(ln for ln in table.splitlines()[2:] if ln.split()[0].endswith("00001"))
    assert first_odd.split()[3].startswith("≥")
    fits = json.loads((tmp_path / "o" / "fits.json").read_text())
    assert [d["column"] for d in fits["definitions"]][2] == "tau_mem_features_step"
    assert fits["definitions"][2]["n_censored"] == 18 and fits["definitions"][2]["fit"]["method"] == "tobit"
    rows = [r for r in pq.read_table(tmp_path / "o" / "fits.parquet").to_pylist() if r["fit"] == "definition"]
    assert {r["definition"].split(" ")[0] for r in rows} == {
        "tau_mem_step", "tau_mem_pixel_step", "tau_mem_features_step", "tau_mem_pixel_raw_step", "tau_mem_loss_step",
    }  # fmt: skip
    assert "feature cosine test" in (tmp_path / "o" / "report.html").read_text()


def test_an_older_folder_has_only_what_it_recorded(tmp_path):
    """A folder without the named columns (or with them all null): only tau_mem_step, no table."""
    write_sweep(tmp_path / "old", n=(64, 128, 256), b=(16, 32), lr=(1e-4,), seed=42)
    an = analyze_sweep(load_sweep(str(tmp_path / "old")), n_boot=50)
    assert [d.column for d in an.definitions] == ["tau_mem_step"]
    from raydiff.analysis.text import definitions_text

    assert definitions_text(an) == ""  # the stop rule's alone is the joint fit


def test_cells_and_too_few_onsets():
    d = DefinitionFit("tau_mem_features_step", "feature cosine test", {"a": 120}, {"b": 300}, None, "1 onset(s): at least 2 are needed")
    assert (d.cell("a"), d.cell("b"), d.cell("c")) == ("120", "≥300", "-")  # onset, lower bound, not measured
    assert d.to_dict()["n_onset"] == 1 and d.to_dict()["fit"] is None
