"""Trackers for real: one sweep of two tiny trials through real Ray, logging to a real MLflow
tracking server the test starts on 127.0.0.1 and to W&B in offline mode; read back through
MLflow's client and W&B's run files, against the sweep's own Parquet. Then `raydiff analyze
--log-to mlflow --log-to wandb` as one run of the sweep in each."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow_server import mlflow_server
from paths import ROOT
from wandb_files import run_contents

from raydiff.cli import main
from raydiff.config import load_search_space
from raydiff.results_folder import load_sweep

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytestmark = pytest.mark.ray
SWEEP = "tracked"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """The smoke space, two trials (N = 8, 12), no FID: `--log-to mlflow,wandb`."""
    from raydiff.tune.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("trackers")
    raw = yaml.safe_load((ROOT / "raydiff" / "search_spaces" / "smoke.yaml").read_text())
    raw["sweep"]["name"] = SWEEP
    raw["grid"] = {"data.n_train": [8, 12]}
    raw["eval"].update(fid_every=0)
    raw["train"].update(max_steps=600)
    path = tmp / "tracked.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp), "WANDB_SILENT": "true",  # nothing in the user's home:
           "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
           "WANDB_DATA_DIR": str(tmp / "wandb-data")}  # fmt: skip
    with mlflow_server(tmp) as uri, pytest.MonkeyPatch.context() as mp:
        for k, v in {**env, "MLFLOW_TRACKING_URI": uri}.items():
            mp.setenv(k, v)  # before Ray starts: its workers (W&B's logging actors) inherit them
        loc = run_sweep(load_search_space(path), storage=str(tmp / "results"), log_to=("mlflow", "wandb"))
        yield {"uri": uri, "results": loc.uri, "tmp": tmp, "mp": mp}


def evaluations(results: str) -> dict[str, list[dict]]:
    """trial_id → its evaluation rows (metrics/ Parquet), in step order."""
    sweep = load_sweep(results)
    return {t["trial_id"]: sorted(sweep.evals[t["trial_id"]], key=lambda r: r["step"]) for t in sweep.trials}


def trial_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(SWEEP)
    assert exp is not None, [e.name for e in client.search_experiments()]
    return client, exp, [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("raydiff.kind") != "analysis"]


def test_mlflow_has_one_run_per_trial_with_its_parameters_and_every_evaluation(tracked):
    client, _, runs = trial_runs(tracked["uri"])
    evals = evaluations(tracked["results"])
    assert len(runs) == len(evals) == 2
    for run in runs:
        (tid,) = [t for t in evals if t in run.info.run_name]  # Ray's trial name holds the trial id
        rows = evals[tid]
        assert run.info.status == "FINISHED"
        assert run.data.params["data.n_train"] == str(rows[0]["n_train"])  # the resolved config
        assert run.data.params["data.dataset"] == "digits" and run.data.params["train.lr"] == "0.005"
        history = sorted(client.get_metric_history(run.info.run_id, "mem_frac"), key=lambda m: m.step)
        assert [m.step for m in history] == [r["step"] for r in rows]  # every evaluation, at its optimizer step
        assert [m.value for m in history] == pytest.approx([r["mem_frac"] for r in rows])


def test_wandb_offline_run_files_hold_each_trial(tracked):
    evals = evaluations(tracked["results"])
    runs = [run_contents(d) for d in sorted((tracked["tmp"] / "wandb").glob("offline-run-*"))]
    trials = [r for r in runs if r["run"][2] != "analysis"]
    assert len(trials) == 2 and {r["run"][0] for r in trials} == {SWEEP}  # project = the sweep
    for r in trials:
        tid = r["config"]["trial_id"] if "trial_id" in r["config"] else next(t for t in evals if t in r["run"][1])
        steps = [h["step"] for h in r["history"] if "mem_frac" in h]
        assert steps == [e["step"] for e in evals[tid]]
        assert r["config"]["point"]["data.n_train"] == evals[tid][0]["n_train"]


def test_analyze_logs_one_run_of_the_sweep(tracked, capsys):
    import pyarrow.parquet as pq

    from raydiff.trackers import fit_metrics

    out = Path(tracked["results"]) / "analysis"
    assert main(["analyze", tracked["results"], "--boot", "50", "--log-to", "mlflow", "--log-to", "wandb"]) == 0
    printed = capsys.readouterr().out
    assert "logged mlflow: run" in printed and "logged wandb: run" in printed
    metrics = fit_metrics(pq.read_table(out / "fits.parquet").to_pylist())
    client, exp, _ = trial_runs(tracked["uri"])
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`raydiff.kind` = 'analysis'")
    assert run.info.run_name == f"{SWEEP}-analysis" and run.data.params["censored"] == "auto" and run.data.params["n_boot"] == "50"
    assert run.data.metrics == pytest.approx(metrics)
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"findings.txt", "report.html", "fits.json", "fits.parquet"} <= files
    findings = Path(client.download_artifacts(run.info.run_id, "findings.txt", str(tracked["tmp"]))).read_text()
    assert findings.splitlines()[0] in printed  # the report as analyze printed it
    (analysis,) = [run_contents(d) for d in (tracked["tmp"] / "wandb").glob("offline-run-*") if run_contents(d)["run"][2] == "analysis"]
    assert analysis["run"][:2] == (SWEEP, f"{SWEEP}-analysis")
    assert {k: v for k, v in analysis["summary"].items() if k in metrics} == pytest.approx(metrics)
    saved = {p.name for p in (tracked["tmp"] / "wandb").glob("offline-run-*/files/**/*") if p.is_file()}
    assert {"findings.txt", "report.html", "fits.json"} <= saved
