"""Trial resources against a cluster, joining one, and pre-staging: the parts that need no Ray."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config

from paths import ROOT
from raydiff.config import Resources
from raydiff.errors import UserError
from raydiff.tune.connect import check_reachable, gcs_endpoint
from raydiff.tune.resources import check_resources, node_types_from_config

HEAD = {"CPU": 0.0, "memory": 1e9}  # a head like cluster/aws.yaml's: no CPU for trials
A10G = {"CPU": 4.0, "GPU": 1.0}


@pytest.fixture(autouse=True)
def _no_autoscaling_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYDIFF_AUTOSCALING", raising=False)
    monkeypatch.setenv("RAYDIFF_AUTOSCALING_CONFIG", str(tmp_path / "absent.yaml"))


def test_fits_an_alive_node():
    check_resources(Resources(cpu=4, gpu=1), nodes=[HEAD, A10G], node_types=[])
    check_resources(Resources(cpu=1, gpu=0.25), nodes=[HEAD, A10G], node_types=[])  # a fraction of a GPU


def test_a_gpu_on_a_cpu_cluster_fails_in_one_line():
    with pytest.raises(UserError) as e:
        check_resources(Resources(cpu=1, gpu=1), nodes=[HEAD, {"CPU": 2.0}], node_types=[])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("sweep.resources: ")
    assert "1 CPU and 1 GPU" in msg and "largest node: 2 CPU, 0 GPU" in msg


def test_resources_count_per_node_not_per_cluster():
    with pytest.raises(UserError):  # two 1-GPU nodes cannot host one 2-GPU trial
        check_resources(Resources(cpu=1, gpu=2), nodes=[A10G, A10G], node_types=[])


def test_autoscaling_node_types_of_aws_yaml():
    """The head of cluster/aws.yaml has no worker yet: GPU requests pass because a node type the
    autoscaler may start has them; more GPUs than any type has still fails."""
    cfg = prepare_config(yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text()))
    types = node_types_from_config(cfg)
    assert sorted(t["GPU"] for t in types) == [1.0, 1.0, 8.0]  # on-demand and spot A10G, H100x8; not the head
    check_resources(Resources(cpu=4, gpu=1), nodes=[HEAD], node_types=types)
    check_resources(Resources(cpu=8, gpu=8), nodes=[HEAD], node_types=types)
    with pytest.raises(UserError, match="3 autoscaling node type"):
        check_resources(Resources(cpu=1, gpu=9), nodes=[HEAD], node_types=types)
    no_gpu_nodes = {**cfg, "available_node_types": {k: {**v, "max_workers": 0} for k, v in cfg["available_node_types"].items()}}
    assert node_types_from_config(no_gpu_nodes) == []  # types that may not start count for nothing


def test_node_types_read_from_the_launchers_file(tmp_path, monkeypatch):
    cfg = prepare_config(yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text()))
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("RAYDIFF_AUTOSCALING_CONFIG", str(path))
    check_resources(Resources(cpu=1, gpu=8), nodes=[HEAD])  # node_types read from the file


def test_autoscaling_env_trusts_the_autoscaler(monkeypatch):
    monkeypatch.setenv("RAYDIFF_AUTOSCALING", "1")
    check_resources(Resources(cpu=1, gpu=4), nodes=[HEAD], node_types=[])


def test_address_parsing():
    assert gcs_endpoint("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert gcs_endpoint("[::1]:6379") == ("::1", 6379)
    assert gcs_endpoint(None) is None and gcs_endpoint("auto") is None and gcs_endpoint("ray://h:10001") is None
    with pytest.raises(UserError, match="host:port"):
        gcs_endpoint("10.0.0.5")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def test_unreachable_address_fails_fast(monkeypatch):
    """Fast by its work, not by the clock: one connection attempt with a short timeout, no retries."""
    tries = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: (tries.append(timeout), real(address, timeout=timeout))[1])
    with pytest.raises(UserError, match="no Ray cluster answers at 127.0.0.1"):
        check_reachable(f"127.0.0.1:{_closed_port()}")
    assert len(tries) == 1 and tries[0] <= 10


def test_sweep_with_a_mistyped_address_exits_2_before_ray_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "raydiff.cli", "sweep", "smoke", "--storage", str(tmp_path / "r"),
         "--address", f"127.0.0.1:{_closed_port()}"],
        capture_output=True, text=True, timeout=900,  # a guard against a hang, far above any honest run
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    # the check_reachable line: the sweep stopped before ray.init and its minutes of retries
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("raydiff: error: no Ray cluster answers")
    assert not (tmp_path / "r").exists()  # nothing written


def test_prestage_cli(tmp_path, monkeypatch, capsys):
    """`raydiff prestage SPACE...` hands each space to the sweep's own prestage (the fetching itself
    is the data and metrics code's, tested there); a bad space is a one-line error, exit 2."""
    from raydiff import cli
    from raydiff.tune import sweep

    seen = []
    monkeypatch.setattr(sweep, "prestage", lambda space: seen.append(space.sweep.name))
    monkeypatch.setenv("RAYDIFF_CACHE", str(tmp_path / "cache"))
    assert cli.main(["prestage", "smoke", "default"]) == 0
    assert seen == ["smoke", "default"]
    assert f"prestaged smoke into {tmp_path / 'cache'}" in capsys.readouterr().out
    assert cli.main(["prestage", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith("raydiff: error: ")


@pytest.mark.ray
def test_gpu_sweep_on_a_gpu_less_machine_fails_in_seconds(tmp_path):
    """The everyday mistake: a GPU search space on a laptop. Ray starts, the check refuses, exit 2,
    before any trial starts or any file is written."""
    import os

    raw = yaml.safe_load((ROOT / "raydiff" / "search_spaces" / "smoke.yaml").read_text())
    raw["sweep"]["resources"] = {"cpu": 1, "gpu": 1}
    raw["eval"]["fid_every"] = 0
    space = tmp_path / "gpu.yaml"
    space.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAYDIFF_AUTOSCALING"))}
    env.update(RAY_ADDRESS="local", RAYDIFF_AUTOSCALING_CONFIG=str(tmp_path / "absent.yaml"))  # a new local Ray
    proc = subprocess.run(
        [sys.executable, "-m", "raydiff.cli", "sweep", str(space), "--storage", str(tmp_path / "r")],
        env=env, capture_output=True, text=True, timeout=900,  # a guard against a hang, far above any honest run
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("raydiff: error: sweep.resources: no node can host a trial asking for 1 CPU and 1 GPU"), last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "smoke").exists()
