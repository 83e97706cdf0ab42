"""The benchmark suite at toy sizes (`python -m benchmarks.run --quick` and its parts), so it does not rot.

The full run (`python -m benchmarks.run`) takes about an hour and is not part of the test suite.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks import e2e, measurement, neighbours, onset
from benchmarks.common import alternate, config, default_space
from paths import ROOT


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_alternate_swaps_the_order_every_round():
    order = []
    out = alternate({"a": lambda: order.append("a") or 1, "b": lambda: order.append("b") or 2}, 3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1, 1, 1], "b": [2, 2, 2]}


def test_quick_cli_writes_results(tmp_path):
    out, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", "1,3a,5", "--out", str(out), "--json", str(raw)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## Summary" in text and "Command: `python -m benchmarks.run --quick" in text
    for head in ("### 1. Framework tax", "### 3a. Measurement tax", "### 5. Stopper savings"):
        assert head in text
    data = {s["key"]: s for s in json.loads(raw.read_text())["sections"]}
    assert set(data) == {"1", "3a", "5"}
    assert 0 < data["1"]["data"]["ratio"] < 10
    assert all(math.isfinite(x) and x > 0 for x in data["1"]["data"]["bare"])
    # the report renders again from the dump alone
    again = tmp_path / "again.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--from-json", str(raw), "--out", str(again)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert again.read_text().split("## Summary")[1] == text.split("## Summary")[1]


def test_unknown_section_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--only", "99"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown section" in proc.stderr


def step_curve(tau: int, last: int, d: int = 1) -> onset.Curve:
    """mem_frac 0 before step τ, 0.5 from it on, on a dense grid every d steps."""
    steps = list(range(d, last + 1, d))
    return steps, [0.5 if s >= tau else 0.0 for s in steps]


def test_replay_of_cadences_on_a_known_curve():
    space = default_space()
    curve = step_curve(1000, 5000)
    uni = onset.replay(curve, config(space, {"eval.cadence": "uniform", "eval.every_steps": 300, "eval.refine_snapshots": 0}))
    assert uni == {"tau": 1200, "full": 5, "mem": 0, "stop": 1500}  # evals at 300 … 1200, 1500
    geo = config(space, {"eval.cadence": "geometric", "eval.every_steps": 100, "eval.geometric_ratio": 2.0,
                         "eval.refine_snapshots": 15})  # fmt: skip
    r = onset.replay(curve, geo)  # evals at 100, 200, 400, 800, 1600: bracket (800, 1600], 16 parts
    assert r["full"] == 5 and r["mem"] == 4 and r["stop"] == 1600
    assert 1000 <= r["tau"] <= 1050
    # the measurement-tax model counts the same evaluations as the replay
    steps, full, mem = measurement.evals_to_stop(geo, 1000)
    assert (steps, full, mem) == (r["stop"], r["full"], r["mem"])


@pytest.mark.parametrize(
    "steps, mem_frac, expected",
    [
        ([100, 200, 400], [0.0, 0.1, 0.3], 200.0),  # lands on a point
        ([100, 400], [0.0, 0.2], 200.0),  # halfway in log(step): √(100·400)
        # the jitter is pooled (0.13, 0.03 → 0.08, 0.08), so the crossing is past 300, not at 200
        ([100, 200, 300, 400], [0.0, 0.13, 0.03, 0.2], 300 * (4 / 3) ** (1 / 6)),
        ([100, 200], [0.2, 0.3], 100.0),  # above from the start
        ([100, 200], [0.0, 0.05], None),  # never reaches it
    ],
)
def test_monotone_crossing(steps, mem_frac, expected):
    got = onset.monotone_crossing(steps, mem_frac, 0.1)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_onset_section_quick():
    s = onset.run(quick=True)
    assert s.key == "4" and len(s.rows) == len(onset.policies(True))
    c = s.data["checks"]["on-grid"]  # the replay decides as the real run did
    assert c["real"] is not None and (c["real"], c["real_evals"]) == (c["replay"], c["replay_evals"])


def test_measurement_parts_quick():
    cifar = measurement.cifar_size(quick=True)
    assert cifar.data["costs"]["step"] > 0 and 0 < cifar.data["direct_tax"] < 1
    assert len(cifar.rows) == 5 and all(0 < x < 1 for r in cifar.rows for x in r[1:])
    assert cifar.rows[1][1] < cifar.rows[0][1]  # the default's evaluation, after < before
    steps = measurement.sampler_steps(quick=True)
    assert {r[3] for r in steps.rows} == {50, 10}


def test_neighbours_quick_exact_and_measured():
    s = neighbours.run(quick=True)
    ours = s.data["1000/100/raydiff chunk 1024"]
    assert ours["wrong_nn"] == 0 and ours["max_rel_err"] < 1e-5 and ours["index_agreement"] > 0.99
    assert all(v["seconds"] > 0 and v["peak_mib"] >= 0 for v in s.data.values())


def test_before_space_is_the_default_as_it_shipped_before_issue_21(tmp_path):
    """Section 7's "before": the packaged default with its FD measured in the training loop."""
    from raydiff.config import load_search_space

    space = load_search_space(e2e.before_space_file(str(tmp_path)))
    assert space.points() == default_space().points()
    assert space.base.eval.figures == "loop" and default_space().base.eval.figures == "snapshots"
    for key, value in e2e.ROUND_BEFORE.items():
        section, name = key.split(".")
        assert getattr(getattr(space.base, section), name) == value


def test_gpu_script_dry_mode_on_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--cpu", "--seconds", "0.2", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["train"] and all(r["steps_s"] > 0 and r["tflop_step"] > 0 for r in raw["train"])
    assert raw["eval"] and all(r["eval_s"] > r["mem_full_s"] > 0 for r in raw["eval"])
    # a fresh model generalizes: the sequential test settles with fewer samples than the full count
    assert all(r["mem_sequential_samples"] < r["mem_full_samples"] == r["num_samples"] for r in raw["eval"])
    assert [r["trials"] for r in raw["pack"]] == [1, 2] and all(r["aggregate_steps_s"] > 0 for r in raw["pack"])
    assert [r["memory_cap"] for r in raw["pack"]] == ["1/1", "1/2"]


def test_gpu_sh_opens_with_the_smoke_sweep(tmp_path):
    """gpu.sh's dry mode: the CIFAR-size smoke sweep's dry run (4 trials of 32×32×3 data at ¼ GPU
    each), then gpu.py (its parts skipped here: the test above runs them)."""
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--cpu", "--skip", "train,eval,pack", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 trials (grid mode)" in proc.stdout and proc.stdout.count("0.25 GPU") == 4
    assert out.exists() and json.loads(out.with_suffix(".json").read_text())["info"]["device"] == "cpu"


def test_issue_targets_table_reads_its_sections():
    """The targets table takes each figure from its section (its own data, or a JSON dump's with
    string keys), judges it against the issue's target, and says which were not measured."""
    from benchmarks.common import Section
    from benchmarks.run import targets_table

    after = {"units": 5000.0, "measurement_tax": 0.02, "taus": {"16": 193, "32": 421, "64": 1455, "128": 3887}}
    sections = [
        Section("3d", "t", "g", "h", True, [], [], data={"marion_share": 0.084, "bonnaire_share": {"10000": 0.12}}),
        Section("7", "t", "g", "h", True, [], [], data={"default, after": after}),
    ]
    lines = {line.split(" | ")[0].lstrip("| "): line for line in targets_table(sections).splitlines()[2:]}
    assert len(lines) == 6
    marion, bonnaire, cadence, tax, taus, end_to_end = lines.values()
    assert "8.4%" in marion and "| met |" in marion
    assert "12.0%" in bonnaire and "NOT met" in bonnaire
    assert "not measured in this run" in cadence
    assert "2.0%" in tax and "| met |" in tax
    assert "| met |" in taus
    assert "5,000" in end_to_end and "NOT met" in end_to_end


@pytest.mark.ray
def test_step_cost_quick():
    """Section 9 times the same step in a bare loop, train(), one Ray trial and two at once."""
    from benchmarks import step_cost

    s = step_cost.run(quick=True)
    assert len(s.rows) == 5 and all(ms > 0 for _, ms, _ in s.rows)
    assert s.rows[0][2] == 1.0  # the bare loop alone is the unit


@pytest.mark.ray
def test_ray_tax_quick():
    from benchmarks import ray_tax

    s = ray_tax.run(quick=True)
    assert s.data["ratio"] > 0 and s.data["ratio_with_startup"] >= s.data["ratio"]


def test_checkpoint_section_quick():
    """Section 8 measures what a trial checkpoint holds: ~16 bytes a parameter (weights, EMA,
    Adam's two moments), for the presets it sizes."""
    from benchmarks import checkpoints

    s = checkpoints.run(quick=True)
    assert [r[0] for r in s.rows] == checkpoints.QUICK
    for preset, params, mib, seconds, per_param in s.rows:
        assert 15.0 <= float(per_param) <= 20.0 and float(seconds) >= 0.0
