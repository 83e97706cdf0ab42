"""Trackers without Ray: one that is down is one line before anything starts; one that fails
once the sweep runs is one warning and is dropped; the fits as metrics."""

from __future__ import annotations

import pytest
from mlflow_server import free_port

from raydiff.cli import main

pytest.importorskip("mlflow")


@pytest.fixture
def mlflow_down(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    return monkeypatch


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["sweep", "smoke", "--log-to", "mlflow"], id="sweep"),
        pytest.param(["analyze", "nowhere", "--log-to", "mlflow"], id="analyze"),
    ],
)
def test_mlflow_down_is_one_line_before_anything_starts(mlflow_down, argv, tmp_path, capsys):
    assert main([*argv, *(["--storage", str(tmp_path)] if argv[0] == "sweep" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("raydiff: error: --log-to mlflow: the tracking server http://127.0.0.1:") and "does not take runs" in err
    assert not any(tmp_path.iterdir())  # nothing written, Ray never started


def test_wandb_unreachable_or_without_credentials_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["sweep", "smoke", "--log-to", "wandb", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--log-to wandb: http://127.0.0.1:" in err and "WANDB_MODE=offline" in err
    monkeypatch.setenv("WANDB_MODE", "offline")  # offline: nothing to reach, nothing to check
    from raydiff.trackers import check_tracker

    check_tracker("wandb")


def test_analyze_names_only_trackers(capsys):
    assert main(["analyze", "nowhere", "--log-to", "csv"]) == 2
    assert "--log-to: unknown logger 'csv' (allowed: mlflow, wandb)" in capsys.readouterr().err


def test_a_tracker_failing_mid_sweep_is_one_warning(mlflow_down, capsys):
    """Ray's MLflow callback against a server gone away: its first hook raises inside; the guard
    prints one line and drops it, and later hooks do nothing (the sweep goes on)."""
    from types import SimpleNamespace

    from raydiff.tune.loggers import Guarded, mlflow_tracker

    mlflow_down.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cb = Guarded(mlflow_tracker("gone", None), "mlflow")
    cb.setup()
    trial = SimpleNamespace(config={}, trial_id="t0")
    cb.on_trial_start(iteration=1, trials=[trial], trial=trial)
    cb.on_trial_result(iteration=1, trials=[trial], trial=trial, result={"step": 10, "mem_frac": 0.0})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raydiff: warning: --log-to mlflow stopped (")
    assert err[0].endswith("the sweep goes on without it, its results (Parquet) are complete") and cb.failed


def test_fit_metrics_names_each_coefficient():
    from raydiff.trackers import fit_metrics

    rows = [
        {"fit": "joint", "definition": "pixel", "axis": "", "name": "log_c", "value": 1.5, "lo": 1.0, "hi": 2.0, "r2": 0.99},
        {"fit": "joint", "definition": "pixel", "axis": "n_train", "name": "alpha", "value": 1.1, "lo": None, "hi": None, "r2": 0.99},
        {"fit": "definition", "definition": "tau_mem_step [f ≥ 0.1]", "axis": "n_train", "name": "alpha", "value": 0.9,
         "lo": 0.8, "hi": 1.0, "r2": None},
    ]  # fmt: skip
    assert fit_metrics(rows) == {
        "joint/pixel/log_c": 1.5, "joint/pixel/log_c_lo": 1.0, "joint/pixel/log_c_hi": 2.0, "joint/pixel/r2": 0.99,
        "joint/pixel/alpha_n_train": 1.1,
        "definition/tau_mem_step _f _ 0.1_/alpha_n_train": 0.9, "definition/tau_mem_step _f _ 0.1_/alpha_n_train_lo": 0.8,
        "definition/tau_mem_step _f _ 0.1_/alpha_n_train_hi": 1.0,
    }  # fmt: skip
