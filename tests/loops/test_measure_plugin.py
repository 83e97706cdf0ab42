"""A measure registered from the test folder, with no edit of raydiff: the trial computes it, the
results contract stores its columns, the stop rule can stop on its onset, `raydiff analyze` fits
τ by it and shows it in the report."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

import toy_measure  # noqa: F401  (registers the "toy" measure)
from raydiff import measures, results
from raydiff.analysis.report import analyze
from raydiff.config import apply_overrides
from raydiff.trial import train
from raydiff.tune.callback import metric_row, trial_row
from tiny_trial import tiny


def test_registered_from_outside():
    assert "toy" in measures.names("memorization") and "toy" in measures.definition_names()
    assert "mem_frac_toy" in results.metrics_schema().names and "tau_mem_toy_step" in results.trials_schema().names
    assert "toy_raw" not in measures.definition_names()  # no raw variant declared


def test_toy_measure_computed_stored_fitted_reported(tmp_path, one_torch_thread):
    base = tiny(
        eval={"measures": ["pixel", "toy", "loss"], "every_steps": 20},
        train={"max_steps": 400},
        stop={"on": ["toy"], "patience": 1},
    )
    assert base.definitions == ("pixel", "toy", "loss")
    root = tmp_path / "toy-sweep"
    space = {"sweep": {"name": root.name}, "grid": {"data.n_train": [4, 8, 16]}}
    meta = results.provenance(json.dumps(space, sort_keys=True))
    minima = {"n_train": 4, "batch_size": base.batch, "lr": base.train.lr}
    trials, fs = [], results.filesystem(str(root))[0]
    for i, n in enumerate((4, 8, 16)):
        cfg = apply_overrides(base, {"data.n_train": n})
        reports: list[dict] = []
        train(cfg, lambda m, ckpt: reports.append(m) or bool(m.get("stop_status")))
        rows = [r for r in (metric_row(f"t{i}", m) for m in reports) if r is not None]
        assert all(r["mem_frac_toy"] is not None for r in rows)  # computed at every evaluation
        last = reports[-1]
        assert last["stop_status"] == "memorized" and last["tau_mem_step"] == last["tau_mem_toy_step"]
        trials.append(trial_row(f"t{i}", cfg, last, rows, minima, last["stop_status"], last["stop_reason"]))
        results.write_atomic(results.table(rows, results.metrics_schema(), meta), fs, str(root / "metrics" / f"t{i}.parquet"))
    results.write_atomic(results.table(trials, results.trials_schema(), meta), fs, str(root / results.TRIALS_FILE))

    stored = pq.read_table(root / results.TRIALS_FILE).to_pylist()
    assert all(t["tau_mem_toy_step"] is not None for t in stored)  # stored, one τ column per definition
    out = analyze(str(root), str(tmp_path / "analysis"), n_boot=50)
    fits = json.loads((out / "fits.json").read_text())
    by_column = {d["column"]: d for d in fits["definitions"]}
    assert by_column["tau_mem_toy_step"]["n_onset"] == 3  # fitted
    assert "toy nearest-image test" in (out / "report.html").read_text()  # shown
