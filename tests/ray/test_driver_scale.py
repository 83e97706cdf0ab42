"""The driver at scale (issue 25): a sweep of many instant trials through real Ray, whose driver
writes O(1) per reported result. Reports carry no evaluation history, each result's metrics row
goes into a part file of one row (the same size at a trial's last evaluation as at its first),
and when the sweep ends every trial's rows are in metrics/<trial>.parquet, with no part left.
benchmarks/driver_scale.py measures the same at 10, 100 and 1,000 trials."""

from __future__ import annotations

import collections

import pyarrow.parquet as pq
import pytest
import yaml

from raydiff import cli, results
from raydiff.tune import callback as cbmod

pytestmark = pytest.mark.ray

TRIALS, STEPS = 32, 6  # a report per step: six evaluations a trial
SPACE = {
    "sweep": {"name": "many", "resources": {"cpu": 0.25, "gpu": 0}, "max_failures": 0},
    "grid": {"train.seed": list(range(TRIALS))},
    "data": {"dataset": "digits", "n_train": 8, "n_test": 16},
    "model": {"base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16},
    "diffusion": {"objective": "ddpm", "sample_steps": 2},
    "train": {"batch_size": 8, "lr": 5e-3, "max_steps": STEPS, "budget_scaling": "fixed", "device": "cpu"},
    "eval": {"every_steps": 1, "cadence": "uniform", "num_samples": 8, "fid_every": 0, "probe_images": 2,
             "probe_noise_levels": 1, "save_samples": 0, "refine_snapshots": 0},
    "stop": {"mem_frac_threshold": 1.0, "patience": 2},  # no onset: every trial reports to its budget
}  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("many")
    space = tmp / "many.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    seen = {"keys": [], "writes": collections.defaultdict(list)}  # writes: (trial, evaluation k) → (path, bytes)
    current: list = [None]
    mp = pytest.MonkeyPatch()
    on_result, replace = cbmod.ResultsCallback.on_trial_result, results.replace_file
    count: collections.Counter = collections.Counter()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "train_loss" in result:
            count[trial.trial_id] += 1
            seen["keys"].append(set(result))
            current[0] = (trial.trial_id, count[trial.trial_id])
        try:
            return on_result(self, iteration, trials, trial, result, **info)
        finally:
            current[0] = None

    def replace_file(fs, path, data):
        if current[0] is not None:
            seen["writes"][current[0]].append((path, len(data) if isinstance(data, bytes) else data.size))
        return replace(fs, path, data)

    mp.setattr(cbmod.ResultsCallback, "on_trial_result", on_trial_result)
    mp.setattr(results, "replace_file", replace_file)
    try:
        code = cli.main(["sweep", str(space), "--storage", str(tmp / "storage")])
    finally:
        mp.undo()
    return code, tmp / "storage" / "many", seen


def test_every_trial_finishes_with_its_rows_compacted(sweep):
    code, root, _ = sweep
    assert code == 0
    trials = pq.read_table(root / "trials.parquet").to_pylist()
    assert len(trials) == TRIALS and all(t["status"] == "budget" and t["steps_done"] == STEPS for t in trials)
    files = sorted(p.name for p in (root / "metrics").iterdir())
    assert files == sorted(f"{t['trial_id']}.parquet" for t in trials)  # one file a trial, no part left
    rows = results.read_metrics(*results.filesystem(str(root))).to_pylist()
    assert sorted((r["trial_id"], r["step"]) for r in rows) == sorted((t["trial_id"], s) for t in trials for s in range(1, STEPS + 1))


def test_reports_carry_no_history(sweep):
    _, _, seen = sweep
    assert len(seen["keys"]) == TRIALS * STEPS
    for keys in seen["keys"]:
        assert not [k for k in keys if k.startswith("history_")], keys
        assert "tau_prev_step" in keys


def test_a_result_writes_as_much_at_the_last_evaluation_as_at_the_first(sweep):
    """Per result the driver writes one part file of one row (and the ledger's file of that
    evaluation): what it writes does not grow with the trial's history."""
    _, _, seen = sweep
    by_k = collections.defaultdict(list)
    for (trial, k), writes in seen["writes"].items():
        metrics = [(p, n) for p, n in writes if "/metrics/" in p]
        assert len(metrics) == 1 and results.part_step(metrics[0][0]) == k, writes  # the part of this step
        by_k[k].append(sum(n for _, n in writes))
    first, last = sum(by_k[1]) / len(by_k[1]), sum(by_k[STEPS]) / len(by_k[STEPS])
    assert last <= first * 1.02, (first, last)
