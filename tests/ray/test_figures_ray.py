"""Figures off the training loop through real Ray: trials save snapshots, Ray tasks measure them as
they land (sweep.measure_resources) — one of them killed mid-way and retried, leaving no half row —
and `raydiff measure` measures a finished sweep again, the same rows, and with a figure the sweep
did not run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from raydiff import cli, results
from raydiff.remeasure import FAULT_ENV
from raydiff.snapshots import SnapshotStore

pytestmark = pytest.mark.ray

SPACE = {
    "sweep": {"name": "figs", "resources": {"cpu": 1}, "measure_resources": {"cpu": 0.5}, "max_failures": 0},
    "grid": {"data.n_train": [8, 12]},
    "data": {"dataset": "digits", "n_test": 64},
    "model": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "emb_dim": 32},
    "diffusion": {"objective": "ddpm", "sample_steps": 10},
    "train": {"batch_size": 32, "lr": 5.0e-3, "max_steps": 600},
    "eval": {
        "every_steps": 50, "num_samples": 64, "probe_images": 16, "measures": ["pixel", "loss", "fid"],
        "fid_every": 0, "fid_every_steps": 100, "fid_samples": 64, "fid_features": "digits_classifier", "figures": "snapshots",
    },
    "stop": {"mem_frac_threshold": 0.1, "patience": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("figs")
    (d / "space.yaml").write_text(yaml.safe_dump(SPACE))
    with pytest.MonkeyPatch.context() as mp:  # the first task to measure step 200 dies right after writing it
        mp.setenv(FAULT_ENV, f"*:200:{d / 'killed'}")
        assert cli.main(["sweep", str(d / "space.yaml"), "--storage", str(d / "storage")]) == 0
    assert (d / "killed").exists()
    return d / "storage" / "figs"


def test_every_snapshot_measured_during_the_sweep(sweep):
    trials = pq.read_table(sweep / results.TRIALS_FILE).to_pylist()
    assert len(trials) == 2 and all(t["status"] in ("memorized", "budget") for t in trials)
    fs, root = results.filesystem(str(sweep))
    rows = results.read_figures(fs, root).to_pylist()
    for t in trials:
        steps = SnapshotStore(str(sweep), t["trial_id"]).steps()
        assert steps  # saved on the figure schedule
        got = sorted(r["step"] for r in rows if r["trial_id"] == t["trial_id"] and r["measure"] == "fid")
        assert got == steps and all(r["fid"] is not None for r in rows)  # every one measured, once
    metrics = pq.read_table(sweep / results.METRICS_DIR).to_pylist()
    assert all(r["fid"] is None for r in metrics)  # the loop measured none


def test_measuring_again_gives_the_same_rows(sweep):
    fs, root = results.filesystem(str(sweep))
    key = lambda r: (r["trial_id"], r["measure"], r["step"])  # noqa: E731
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k != "measure_s"} for r in rows), key=key)  # noqa: E731
    before = strip(results.read_figures(fs, root).to_pylist())
    assert cli.main(["measure", str(sweep), "--metrics", "fid"]) == 0
    assert strip(results.read_figures(fs, root).to_pylist()) == before


def test_measure_a_finished_sweep_with_a_new_figure(sweep, capsys):
    assert cli.main(["measure", str(sweep), "--metrics", "swd"]) == 0
    fs, root = results.filesystem(str(sweep))
    rows = results.read_figures(fs, root).to_pylist()
    swd = [r for r in rows if r["measure"] == "swd"]
    fid = [r for r in rows if r["measure"] == "fid"]
    assert len(swd) == len(fid) and all(r["sliced_wasserstein"] is not None for r in swd)
    assert cli.main(["measure", str(sweep), "--metrics", "swd"]) == 0  # again: the same rows, no more
    assert len([r for r in results.read_figures(fs, root).to_pylist() if r["measure"] == "swd"]) == len(swd)
    assert cli.main(["measure", str(sweep), "--metrics", "nope"]) == 2
    assert "not a figure measure" in capsys.readouterr().err
