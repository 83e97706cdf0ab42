"""End to end through real Ray: `raydiff sweep smoke` → onset stopper → Parquet → `raydiff analyze`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raydiff import cli
from raydiff.config import load_search_space, packaged_search_space
from raydiff.metrics.onset import mem_onset
from unit.test_results import METRICS_CONTRACT, TRIALS_CONTRACT  # tests/unit/, through tests/ on the path

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    code = cli.main(["sweep", "smoke", "--storage", str(storage)])
    assert code == 0
    return load_search_space(packaged_search_space("smoke")), storage / "smoke"


def test_every_trial_stops_at_onset(smoke):
    space, root = smoke
    trials = pq.read_table(root / "trials.parquet")
    for name, typ in TRIALS_CONTRACT.items():
        assert trials.schema.field(name).type == typ, name
    rows = trials.to_pylist()
    points = space.points()
    assert len(rows) == len(points)  # one row per grid point
    assert sorted(r["n_train"] for r in rows) == sorted(p["data.n_train"] for p in points)
    assert len({r["trial_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["status"] == "memorized", r
        assert r["tau_mem_step"] is not None
        assert r["tau_mem_step"] <= r["steps_done"] < r["budget_steps"]  # stopped at onset, not by budget
        assert r["tau_mem_images"] == r["tau_mem_step"] * r["batch_size"]
        assert r["tau_mem_normalized"] is not None and r["tau_mem_seconds"] > 0
        assert r["params"] > 0 and r["dataset"] == "digits" and r["objective"] == "ddpm"
        assert "mem_frac" in r["stop_reason"]
        json.loads(r["config"])
    md = trials.schema.metadata
    assert b"raydiff.versions" in md and b"raydiff.git_commit" in md


def test_metrics_rows_per_evaluation(smoke):
    space, root = smoke
    metrics = pq.read_table(root / "metrics")  # the folder as one Parquet dataset
    for name, typ in METRICS_CONTRACT.items():
        assert metrics.schema.field(name).type == typ, name
    trials = {r["trial_id"]: r for r in pq.read_table(root / "trials.parquet").to_pylist()}
    rows = metrics.to_pylist()
    assert {r["trial_id"] for r in rows} == set(trials)
    keys = [(r["trial_id"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys))  # no duplicated evaluation
    every = space.base.eval_every_steps
    for tid, t in trials.items():
        mine = [r for r in rows if r["trial_id"] == tid]  # file order
        steps = [r["step"] for r in mine]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)
        assert steps == list(range(every, t["steps_done"] + 1, every))  # every evaluation, none lost
        # the onset is not degenerate: there are evaluations before it
        assert t["tau_mem_step"] > steps[0]
        # τ_mem in trials.parquet is the one onset rule applied to the metrics rows
        stop = space.base.stop
        assert mem_onset(steps, [r["mem_frac"] for r in mine], stop.mem_frac_threshold, stop.patience) == t["tau_mem_step"]
        assert all(r["images_seen"] == r["step"] * t["batch_size"] for r in mine)
        assert all(0.0 <= r["mem_frac_lo"] <= r["mem_frac"] <= r["mem_frac_hi"] <= 1.0 for r in mine)
        assert mine[0]["fid"] is not None  # the first evaluation measures FID (fid_every)


def test_analyze_writes_figures_and_fit(smoke, capsys, tmp_path):
    _, root = smoke
    out = tmp_path / "analysis"
    capsys.readouterr()
    assert cli.main(["analyze", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    # the fit of τ_mem against N, with its exponent and interval
    fit = [ln for ln in lines if "fit" in ln and "tau_mem" in ln and "no " not in ln.split("fit")[0]]
    assert fit, text
    assert re.search(r"α.*=\s*[+-]?\d+\.\d+\s+\[", text), text
    for tid in pq.read_table(root / "trials.parquet").column("trial_id").to_pylist():  # a line per trial
        assert any(tid in ln and "memorized" in ln for ln in lines), (tid, text)
    pngs = [Path(m) for m in re.findall(r"^wrote (.+\.png)$", text, flags=re.M)]
    assert any("tau_vs_n" in p.name for p in pngs), pngs  # τ_mem vs N with the fit
    assert len(pngs) >= 2  # and the mem_frac curves
    for p in pngs:
        data = p.read_bytes()
        assert p.parent == out and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, p
