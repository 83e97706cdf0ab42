"""Experiment trackers (MLflow, Weights & Biases) outside Ray: is the one asked for there, and the
analysis of a sweep as one run.

`check_tracker` runs before a sweep or an analysis starts: a tracking server that does not answer
or refuses, or W&B without credentials, is one line (a UserError, exit 2) with nothing started.
Once a sweep runs, a tracker that fails is a warning and nothing more (tune/loggers.py): raydiff's
own record is the Parquet files, which never wait on a tracker.

`log_analysis` sends what `raydiff analyze` wrote as one run of the sweep's MLflow experiment or
W&B project (named after the sweep, as its trials' runs are): the fit coefficients as metrics,
the findings (the report's text) and every file written (fits, figures, report.html).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raydiff.errors import UserError

PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}
# `raydiff sweep --log-to` names → the package each needs (json and csv: none beyond Ray)
LOGGERS = {"tensorboard": "tensorboardX", "csv": "ray", "json": "ray", "mlflow": "mlflow", "wandb": "wandb"}


def parse_log_to(values: list[str] | None, allowed: dict[str, str] | tuple[str, ...] = tuple(LOGGERS)) -> tuple[str, ...]:
    """`--log-to mlflow --log-to wandb` or `--log-to mlflow,wandb` → ("mlflow", "wandb")."""
    names: list[str] = []
    for v in values or []:
        for name in filter(None, (p.strip() for p in v.split(","))):
            if name not in allowed:
                raise UserError(f"--log-to: unknown logger {name!r} (allowed: {', '.join(allowed)})")
            if name not in names:
                names.append(name)
    return tuple(names)
OFFLINE_WANDB = ("offline", "disabled", "dryrun")


def needs_packages(names: tuple[str, ...]) -> None:
    """UserError for the first `--log-to` name whose package is not installed."""
    for name in names:
        if importlib.util.find_spec(LOGGERS.get(name, name)) is None:
            extra = ' -e ".[trackers]"' if name in PACKAGES else f" {LOGGERS.get(name, name)}"
            raise UserError(f"--log-to {name} needs the {LOGGERS.get(name, name)} package: pip install{extra}")


def needs_package(name: str) -> None:
    if importlib.util.find_spec(PACKAGES.get(name, name)) is None:
        raise UserError(f'--log-to {name} needs the {PACKAGES.get(name, name)} package: pip install -e ".[trackers]"')


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def mlflow_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()  # $MLFLOW_TRACKING_URI, else ./mlruns


def check_tracker(name: str, timeout_s: float = 5.0) -> None:
    """UserError (one line) where the tracker `name` cannot take runs from here now."""
    if name not in PACKAGES:
        return
    needs_package(name)
    if name == "mlflow":
        from mlflow.tracking import MlflowClient

        uri = mlflow_uri()
        try:  # one request, no retries: a server that is down answers at once
            with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout_s))):
                MlflowClient(uri).search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - connection refused, 401/403, a bad URI: mlflow raises many types
            raise UserError(f"--log-to mlflow: the tracking server {uri} does not take runs: {_first_line(e)}") from None
        return
    mode = os.environ.get("WANDB_MODE", "online")
    if mode in OFFLINE_WANDB:
        return
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    url = urllib.parse.urlparse(base)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--log-to wandb: {base} does not answer ({e}); or set WANDB_MODE=offline") from None
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(url.hostname or ""):
        raise UserError("--log-to wandb: no credentials (set WANDB_API_KEY or run `wandb login`), or set WANDB_MODE=offline")


def _netrc_has(host: str) -> bool:
    import netrc

    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


# ------------------------------------------------------------------------ the analysis as a run


def fit_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """fits.parquet's rows → flat metrics: '<fit>/<definition>/<coefficient>' (and its interval's
    ends, and the fit's R²); marginal fits also name their axis' slice."""
    out: dict[str, float] = {}
    for r in rows:
        prefix = "/".join(p for p in (r["fit"], r["definition"]) if p)
        name = r["name"] if r.get("axis") in (None, "") else f"{r['name']}_{r['axis']}"
        for suffix, key in (("", "value"), ("_lo", "lo"), ("_hi", "hi")):
            if isinstance(r.get(key), (int, float)):
                out[_metric_key(f"{prefix}/{name}{suffix}")] = float(r[key])
        if isinstance(r.get("r2"), (int, float)):
            out[_metric_key(f"{prefix}/r2")] = float(r["r2"])
    return out


def _metric_key(key: str) -> str:
    """MLflow and W&B keys: letters, digits, _ - . / and spaces; anything else becomes '_'."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def log_analysis(names: tuple[str, ...], sweep: str, out_dir: Path, metrics: dict[str, float], params: dict[str, Any], findings: str) -> list[str]:
    """One run per tracker named: returns a line per run saying where it went."""
    lines = []
    for name in names:
        if name == "mlflow":
            lines.append(_mlflow_analysis(sweep, out_dir, metrics, params, findings))
        elif name == "wandb":
            lines.append(_wandb_analysis(sweep, out_dir, metrics, params, findings))
    return lines


def _mlflow_analysis(sweep: str, out_dir: Path, metrics: dict[str, float], params: dict[str, Any], findings: str) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri())
    exp = client.get_experiment_by_name(sweep)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(sweep)
    run = client.create_run(exp_id, run_name=f"{sweep}-analysis", tags={"raydiff.kind": "analysis"})
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag("raydiff.sweep", sweep)],
        )
        client.log_text(run_id, findings, "findings.txt")
        client.log_artifacts(run_id, str(out_dir))
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return f"mlflow: run {run_id} ({sweep}-analysis) in experiment {sweep!r} at {mlflow_uri()}"


def _wandb_analysis(sweep: str, out_dir: Path, metrics: dict[str, float], params: dict[str, Any], findings: str) -> str:
    import wandb

    run = wandb.init(project=sweep, name=f"{sweep}-analysis", job_type="analysis", config=params, reinit="finish_previous")
    try:
        run.summary.update(metrics)
        (Path(run.dir) / "findings.txt").write_text(findings)
        for p in sorted(out_dir.rglob("*")):
            if p.is_file():
                run.save(str(p), base_path=str(out_dir), policy="now")
        where = f"wandb: run {run.id} ({sweep}-analysis) in project {sweep!r}" + (f", files in {run.dir}" if run.settings.mode == "offline" else "")
    finally:
        run.finish()
    return where
