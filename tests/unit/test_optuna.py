"""Optuna search: the `search:` schema, objectives defined at every report, the searcher's edge
cases, and end to end through Ray Tune (single objective; multi-objective interrupted and resumed)."""

from __future__ import annotations

import copy
import glob
import json
import math
import os
import pickle
import signal

import pytest

from paths import ROOT
from raydiff.analysis.pareto import dominates, pareto_front
from raydiff.config import search_space_from_dict
from raydiff.errors import ConfigError, UserError
from raydiff.metrics.objectives import objective_values

TINY = {
    "sweep": {"name": "tiny", "resources": {"cpu": 1}, "max_failures": 0},
    "data": {"dataset": "digits", "n_test": 64},
    "model": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "emb_dim": 32},
    "diffusion": {"objective": "ddpm", "sample_steps": 10},
    "train": {"batch_size": 32, "lr": 5.0e-3, "max_steps": 1500},
    "eval": {"every_steps": 50, "num_samples": 64, "fid_every": 1, "fid_samples": 64, "probe_images": 16},
    "search": {
        "sampler": "random", "num_samples": 2, "max_concurrent": 2,
        "axes": {"data.n_train": {"int": [4, 8]}, "train.lr": {"log_uniform": [4.0e-3, 6.0e-3]}},
    },
}  # fmt: skip


def space_with(**search):
    raw = copy.deepcopy(TINY)
    raw["search"].update(search)
    return search_space_from_dict(raw)


# ------------------------------------------------------------------ schema


def test_search_parses_and_round_trips_through_the_saved_space():

    space = space_with(objective=[{"metric": "tau_mem_step"}, {"metric": "best_fid_before_onset", "mode": "min"}],
                       axes={"train.batch_size": {"choice": [16, 32]}, "train.lr": {"log_uniform": ["1e-4", 4e-4]},
                             "data.n_train": {"int_log": [32, 256]}})  # fmt: skip
    s = space.search
    assert s.metrics == ["tau_mem_step", "best_fid_before_onset"] and s.modes == ["max", "min"]
    assert s.axes["train.lr"].values == (1e-4, 4e-4)  # YAML's string floats coerced
    assert len(s.corners()) == 8 and space.minima() == {"n_train": 32, "batch_size": 16, "lr": 1e-4}
    again = search_space_from_dict(json.loads(json.dumps(space.to_dict())))
    assert again.search == s


@pytest.mark.parametrize(
    "change, key",
    [
        ({"axes": {"train.lr": {"int": [1, 2]}}}, "search.axes.train.lr.int"),
        ({"axes": {"train.lr": {"log_uniform": [0, 1e-3]}}}, "search.axes.train.lr.log_uniform"),
        ({"axes": {"train.lr": {"uniform": [1e-3, 1e-4]}}}, "search.axes.train.lr.uniform"),
        ({"axes": {"train.lr": {"normal": [0, 1]}}}, "search.axes.train.lr.normal"),
        ({"axes": {"stop.patience": {"choice": [1, 2]}}}, "search.axes.stop.patience"),
        ({"axes": {"train.lrate": {"choice": [1e-3]}}}, "search.axes.train.lrate"),
        ({"axes": {"model.channel_mults": {"choice": [[1, 2]]}}}, "search.axes.model.channel_mults.choice"),
        ({"axes": {}}, "search.axes"),
        ({"objective": [{"metric": "fid"}]}, "search.objective[0].metric"),
        ({"objective": [{"metric": "tau_mem_step", "mode": "up"}]}, "search.objective[0].mode"),
        ({"objective": ["tau_mem_step", "tau_mem_step"]}, "search.objective"),
        ({"sampler": "cmaes"}, "search.sampler"),
        ({"num_samples": 0}, "search.num_samples"),
        ({"trials": 3}, "search.trials"),
    ],
)
def test_search_errors_name_the_key(change, key):
    with pytest.raises(ConfigError) as e:
        space_with(**change)
    assert e.value.key == key


def test_search_conflicts_with_a_grid_and_the_planner():
    raw = copy.deepcopy(TINY)
    raw["grid"] = {"data.n_train": [4, 8]}
    with pytest.raises(ConfigError, match="replaces the grid"):
        search_space_from_dict(raw)
    raw = copy.deepcopy(TINY)
    raw["sweep"]["budget_planner"] = {"enabled": True}
    with pytest.raises(ConfigError, match="budget planner"):
        search_space_from_dict(raw)
    raw = copy.deepcopy(TINY)
    raw["eval"]["fid_every"] = 0
    raw["search"]["objective"] = "best_fid_before_onset"
    with pytest.raises(ConfigError, match="needs FID"):
        search_space_from_dict(raw)


# ------------------------------------------------------------------ objectives


def hist(*rows):
    return [{"step": s, "fid": f} for s, f in rows]


@pytest.mark.parametrize(
    "history, tau, step, expect",
    [
        pytest.param(hist((50, 90.0), (100, None)), None, 100, (100.0, 90.0, True), id="no-onset-yet: steps so far, censored"),
        pytest.param(hist((50, None)), None, 50, (50.0, math.inf, True), id="no-fid-yet: +inf"),
        pytest.param(hist((50, 90.0), (100, 70.0), (150, 60.0), (200, 50.0)), 150, 200, (150.0, 60.0, False),
                     id="onset: fid after it ignored"),  # fmt: skip
        pytest.param(hist((50, 90.0), (100, math.nan)), 100, 150, (100.0, 90.0, False), id="nan-fid-skipped"),
    ],
)
def test_objective_values(history, tau, step, expect):
    v = objective_values(history, tau, step, batch_size=32)
    got = (v["objective_tau_mem_step"], v["objective_best_fid_before_onset"], v["objective_tau_mem_censored"])
    assert got == expect and v["objective_tau_mem_images"] == expect[0] * 32


def test_diverged_trial_has_no_objectives():
    v = objective_values(hist((50, 90.0)), None, 60, 32, diverged=True)
    assert all(x is None for x in v.values())


def test_pareto_front():
    pts = [[100, 50.0], [200, 60.0], [150, 55.0], [120, 70.0], [200, 65.0]]
    assert pareto_front(pts, ["max", "min"]) == [0, 1, 2]
    assert dominates([200, 60.0], [200, 65.0], ["max", "min"]) and not dominates([1, 1], [1, 1], ["max", "min"])


def test_failed_objectives_are_told_to_optuna_as_failed():
    import optuna

    from raydiff.tune.search import build_optuna

    space = space_with(objective=["tau_mem_step", "best_fid_before_onset"])
    s = build_optuna(space.search, "t")
    s.suggest("a"), s.suggest("b")
    s.on_trial_complete("a", {"objective_tau_mem_step": None, "objective_best_fid_before_onset": None})
    s.on_trial_complete("b", {"objective_tau_mem_step": 300.0, "objective_best_fid_before_onset": math.inf})
    states = [t.state for t in s.study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    single = build_optuna(space_with().search, "u")
    single.suggest("c")
    single.on_trial_result("c", {"objective_tau_mem_step": None, "training_iteration": 1})  # skipped, no crash
    assert single.suggest("d")["data.n_train"] in range(4, 9)  # dotted keys pass through unchanged


def test_log_to_is_never_required():
    from raydiff.tune.loggers import logger_callbacks, parse_log_to

    assert parse_log_to(["mlflow,wandb", "mlflow"]) == ("mlflow", "wandb")
    with pytest.raises(UserError, match="unknown logger 'tensorbored'"):
        parse_log_to(["tensorbored"])
    callbacks = logger_callbacks(("csv", "json"), "x")  # each behind the guard that keeps a failing tracker from the sweep
    assert [(type(c).__name__, type(c.inner).__name__) for c in callbacks] == [("Guarded", "CSVLoggerCallback"), ("Guarded", "JsonLoggerCallback")]
    import importlib.util

    for name in ("mlflow", "wandb"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(UserError, match=f"needs the {name} package"):
                logger_callbacks((name,), "x")


# ------------------------------------------------------------------ end to end through Ray
# (the `ray_local` fixture, a 2-CPU local Ray for this module, is in tests/conftest.py)


def study_of(sweep_dir):
    """The Optuna study as Ray saved it with the experiment (what Tuner.restore restores)."""
    # one file per driver session, named by its start time (Ray re-syncs older ones too: not mtime)
    path = sorted(glob.glob(os.path.join(sweep_dir, "searcher-state-*.pkl")))[-1]
    with open(path, "rb") as f:
        return pickle.load(f)["_ot_study"]


def trial_rows(sweep_dir):
    import pyarrow.parquet as pq

    return pq.read_table(os.path.join(sweep_dir, "trials.parquet")).to_pylist()


@pytest.mark.ray
def test_single_objective_end_to_end(tmp_path, ray_local, capsys):
    from raydiff.tune.sweep import run_sweep

    pytest.importorskip("tensorboardX")
    loc = run_sweep(space_with(objective="tau_mem_step"), storage=str(tmp_path), name="single", log_to=("tensorboard",))
    rows = trial_rows(loc.uri)
    assert len(rows) == 2 and all(r["status"] == "memorized" for r in rows)
    study = study_of(loc.uri)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # what Optuna was told is the trial's τ_mem as trials.parquet records it
    assert sorted(t.value for t in study.trials) == sorted(float(r["tau_mem_step"]) for r in rows)
    for r in rows:  # the trials ran at the suggested points
        cfg = json.loads(r["config"])
        assert any(t.params == {"data.n_train": r["n_train"], "train.lr": cfg["train"]["lr"]} for t in study.trials)
    # Ray's TensorBoard logger, asked for by name: event files in each trial folder, and only it
    assert len(glob.glob(os.path.join(loc.uri, "*", "events.out.tfevents.*"))) == 2
    assert glob.glob(os.path.join(loc.uri, "*", "progress.csv")) == []  # Ray's automatic loggers are off


@pytest.mark.ray
def test_multi_objective_resumes_the_study(tmp_path, ray_local, monkeypatch, capsys):
    """Interrupted after its first trial (Ctrl-C), the resumed sweep continues the same study."""
    from raydiff.analysis.report import analyze
    from raydiff.tune import callback
    from raydiff.tune.sweep import run_sweep

    space = space_with(objective=["tau_mem_step", "best_fid_before_onset"], max_concurrent=1, sampler="tpe")
    original = callback.ResultsCallback.on_trial_complete
    fired = []

    def interrupt_once(self, *a, **k):
        original(self, *a, **k)
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # Tune's handler: stop, save the experiment, return

    monkeypatch.setattr(callback.ResultsCallback, "on_trial_complete", interrupt_once)
    loc = run_sweep(space, storage=str(tmp_path), name="multi")
    first = trial_rows(loc.uri)
    assert len(first) == 1
    monkeypatch.setattr(callback.ResultsCallback, "on_trial_complete", original)
    run_sweep(space, storage=str(tmp_path), name="multi", resume=True)

    rows = trial_rows(loc.uri)
    assert len(rows) == 2  # one more trial, not two more: the searcher knew what it had done
    study = study_of(loc.uri)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(len(t.values) == 2 for t in study.trials)
    done = first[0]
    assert study.trials[0].params["data.n_train"] == done["n_train"]  # the first run's trial, restored
    assert study.trials[0].values[0] == float(done["tau_mem_step"])
    capsys.readouterr()
    analyze(loc.uri, str(tmp_path / "analysis"))
    assert "Pareto front:" in capsys.readouterr().out


def test_packaged_optuna_example_matches_the_docs(capsys):
    """search_spaces/optuna_digits.yaml is docs/search.md's Optuna example: the same `search:` section,
    every corner of it a valid digits trial, and its dry run names the 8 trials."""
    import re

    from raydiff import cli
    from raydiff.config import load_search_space, packaged_search_space, parse_yaml

    page = (ROOT / "docs" / "search.md").read_text()
    block = re.search(r"```yaml\n(search:\n.*?)```", page, re.S).group(1)
    path = packaged_search_space("optuna_digits")
    assert parse_yaml(block)["search"] == parse_yaml(path.read_text())["search"]
    space = load_search_space(path)
    assert space.search.num_samples == 8 and space.base.data.dataset == "digits"
    assert len(space.extremes()) == 8  # 2 × 2 × 2 corners, each resolved
    assert all(e.train.device == "auto" and e.data.n_train <= 64 for e in space.extremes())
    assert cli.main(["sweep", "optuna_digits", "--dry-run"]) == 0
    assert "Optuna search (tpe): 8 trials" in capsys.readouterr().out
