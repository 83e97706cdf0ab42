"""A Ray cluster the way `ray up` builds one, on this machine: a head that runs no trial and two
worker nodes with (fake) GPUs, token authentication on, the dashboard on 127.0.0.1 only, and an
S3-compatible store on 127.0.0.1 (tests/s3server.py) that every node reaches through AWS_*.

A sweep submitted with `ray job submit` joins it through RAY_ADDRESS, spreads its trials over both
workers and writes each trial's rows once into a folder every node shares. Eight trials of two
model sizes, requested by `sweep.resources_by`, pack several small ones per fake GPU and run a large
one alone; they write to the bucket, lose a worker mid-trial (a replacement joins, as the
autoscaler would start one), lose their driver, and `--resume` finishes them with one row per
trial and the τ_mem of an undisturbed run. A sweep started here with --address fails in seconds
when it asks for more GPUs than any node has, or when it lacks the cluster's token. The cluster
lives in a private temp dir with its own ports (other Ray instances on this machine are left alone)
and every process it started is ended by pid at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from paths import ROOT
from processes import Command, wait_for
from s3server import BUCKET, s3_server

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SMOKE = ROOT / "raydiff" / "search_spaces" / "smoke.yaml"
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
RAYDIFF = [sys.executable, "-m", "raydiff.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after "(comm)": state ppid pgrp session ...; [] once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _pids_of(sessions: set[int], marker: str) -> list[int]:
    """Processes in one of our `ray start` sessions, or naming our temp dir on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        stat = _stat(int(entry.name))
        if stat and stat[0] != "Z" and (int(stat[3]) in sessions or marker in cmdline):  # zombies are dead
            found.append(int(entry.name))
    return found


@dataclass
class LocalCluster:
    root: Path
    token: str
    env: dict[str, str]
    gcs_port: int
    dashboard_port: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # node name → its `ray start --block`
    lost: set[str] = field(default_factory=set)  # nodes killed on purpose
    node_ids: dict[str, str] = field(default_factory=dict)  # worker name → Ray node id

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")
        self.procs[name] = (
            subprocess.Popen(
                [*RAY, "start", "--block", f"--temp-dir={self.root / 'ray'}", "--disable-usage-stats",
                 f"--dashboard-agent-listen-port={_free_port()}", "--object-store-memory=100000000", *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        )

    def add_worker(self, name: str) -> str:
        """A worker node with 1 CPU and 1 (fake) GPU; returns its node id once it is alive."""
        def workers() -> set[str]:
            return {n["node_id"] for n in self.nodes() if not n["is_head_node"]}

        before = workers()
        self.start(name, [f"--address=127.0.0.1:{self.gcs_port}", "--num-cpus=1", "--num-gpus=1"])
        self.wait(name, lambda: workers() - before)
        [self.node_ids[name]] = workers() - before
        return self.node_ids[name]

    def nodes(self) -> list[dict]:
        status, body = _get(f"{self.dashboard}/api/v0/nodes", self.token)
        if status != 200:
            return []
        return [n for n in json.loads(body)["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def wait(self, what: str, ready, timeout_s: float = 120) -> None:
        t0 = time.monotonic()
        while True:
            try:
                if ready():
                    return
            except OSError:
                pass  # not listening yet
            for name, p in self.procs.items():
                log = self.root / f"{name}.log"
                assert name in self.lost or p.poll() is None, f"{what}: a `ray start` exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() - t0 < timeout_s, f"{what} not ready after {timeout_s} s"
            time.sleep(0.5)

    def kill_node(self, name: str) -> None:
        """SIGKILL one node's `ray start` and every process of its session: a lost machine."""
        proc = self.procs[name]
        self.lost.add(name)
        for pid in _pids_of({proc.pid}, "\0no-marker\0"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)

    def placement(self) -> list[tuple[str, tuple[float, float]]]:
        """(node_id, (CPU, GPU)) of every bundle of every placement group in use now."""
        status, body = _get(f"{self.dashboard}/api/v0/placement_groups?detail=1&limit=1000", self.token)
        if status != 200:
            return []
        out = []
        for pg in json.loads(body)["data"]["result"]["result"]:
            if pg["state"] != "CREATED":
                continue
            for b in pg["bundles"]:
                res = b.get("unit_resources", {})
                out.append((b.get("node_id") or "", (res.get("CPU", 0.0), res.get("GPU", 0.0))))
        return out

    def stop(self) -> list[int]:
        """SIGTERM each `ray start --block` (it stops its node's processes), workers first; then
        SIGKILL whatever of ours is left. Returns the pids still alive after that (should be none)."""
        procs = list(self.procs.values())
        sessions = {p.pid for p in procs}
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for pid in _pids_of(sessions, str(self.root)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while (left := _pids_of(sessions, str(self.root))) and time.monotonic() < deadline:
            time.sleep(0.5)  # SIGKILL is delivered, but exit takes a moment under load
        return left


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(s3):
    root = Path(tempfile.mkdtemp(prefix="rd-mn-"))  # short: Ray's socket paths live under it
    token = secrets.token_hex(16)
    (root / "token").write_text(token)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAYDIFF_AUTOSCALING"))}
    env.pop("RAYDIFF_STORAGE", None)
    env.update(
        RAY_AUTH_MODE="token",  # as cluster/aws.yaml sets on every node
        RAY_AUTH_TOKEN_PATH=str(root / "token"),  # not ~/.ray/auth_token: that one is the user's
        RAYDIFF_AUTOSCALING_CONFIG=str(root / "no-autoscaler.yaml"),  # a fixed-size cluster
        RAYDIFF_SHARED_STORAGE="1",  # every node is this machine: its folders are shared, like NFS
    )
    c = LocalCluster(root, token, env, _free_port(), _free_port())
    try:
        c.start("0-head", ["--head", f"--port={c.gcs_port}", "--num-cpus=0", "--dashboard-host=127.0.0.1",
                           f"--dashboard-port={c.dashboard_port}", f"--ray-client-server-port={_free_port()}"])  # fmt: skip
        c.wait("head", lambda: _get(f"{c.dashboard}/api/version", token)[0] == 200)
        for i in (1, 2):  # one at a time: nodes started together on one machine race for ports
            c.add_worker(f"{i}-worker")
        yield c
    finally:
        left = c.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the test cluster still running: {left}"


def _space(tmp_path: Path, name: str, gpu: float) -> Path:
    """The smoke space, smaller: two trials, no FID (nothing to fetch), 100 steps, a GPU share each."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["sweep"].update(name=name, resources={"cpu": 1, "gpu": gpu})
    raw["grid"] = {"data.n_train": [8, 16]}  # two trials for two workers
    raw["train"]["max_steps"] = 100
    raw["eval"].update(every_steps=50, fid_every=0)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_dashboard_on_loopback_only_and_token_required(cluster):
    status, body = _get(f"{cluster.dashboard}/api/version", cluster.token)
    assert status == 200 and json.loads(body)["ray_version"] == __import__("ray").__version__
    assert _get(f"{cluster.dashboard}/api/version")[0] == 401  # no token
    assert _get(f"{cluster.dashboard}/api/version", "not-the-token")[0] == 403
    from ray.util import get_node_ip_address

    other = get_node_ip_address()
    if other.startswith("127."):
        pytest.skip("this machine has no interface but loopback")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((other, cluster.dashboard_port), timeout=5).close()


def test_job_submitted_sweep_spreads_over_both_workers(cluster, tmp_path):
    space = _space(tmp_path, "multinode", gpu=0.5)
    storage = cluster.root / "shared"  # one folder every node of this machine sees, like NFS
    proc = subprocess.run(
        [*RAY, "job", "submit", "--address", cluster.dashboard, "--",
         *RAYDIFF, "sweep", str(space), "--storage", str(storage)],
        env=cluster.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert out.count("raydiff: Ray dashboard at http://127.0.0.1:") == 1, out
    assert f"results → {storage / 'multinode'}" in out

    workers = {n["node_id"] for n in cluster.nodes() if not n["is_head_node"]}
    assert len(workers) == 2
    trials = pq.read_table(storage / "multinode" / "trials.parquet").to_pylist()
    assert sorted(t["trial_id"] for t in trials) == sorted({t["trial_id"] for t in trials}) and len(trials) == 2
    assert all(t["status"] in ("memorized", "budget") for t in trials), trials
    assert {t["node_id"] for t in trials} == workers, "each trial on its own worker, none on the head"
    for t in trials:
        steps = pq.read_table(storage / "multinode" / "metrics" / f"{t['trial_id']}.parquet").column("step").to_pylist()
        assert steps == sorted(set(steps)) and steps[-1] == t["steps_done"], steps  # every row once


def _refused(tmp_path: Path, name: str, gpu: float, address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A sweep started here against the cluster that must end with one line and exit 2."""
    proc = subprocess.run(
        [*RAYDIFF, "sweep", str(_space(tmp_path, name, gpu=gpu)), "--storage", str(tmp_path / "r"), "--address", address],
        env=env, capture_output=True, text=True, timeout=900,  # a guard against a hang, far above any honest run
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not (tmp_path / "r" / name).exists()
    return proc


def test_gpu_request_no_node_can_host_fails_in_seconds(cluster, tmp_path):
    proc = _refused(tmp_path, "toobig", 2, f"127.0.0.1:{cluster.gcs_port}", cluster.env)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "raydiff: error: sweep.resources: no node can host a trial asking for 1 CPU and 2 GPU "
        "(largest node: 1 CPU, 1 GPU, no autoscaling node types); lower sweep.resources or add such a node"
    )


def test_local_storage_on_a_multinode_cluster_is_refused(cluster, tmp_path):
    """Without a shared folder declared, a local --storage on three nodes is refused before any
    trial is scheduled (Ray Tune would fail each trial at its first checkpoint)."""
    env = {k: v for k, v in cluster.env.items() if k != "RAYDIFF_SHARED_STORAGE"}
    proc = _refused(tmp_path, "local", 0, f"127.0.0.1:{cluster.gcs_port}", env)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("raydiff: error: --storage: storage ") and "is a local folder" in last and "RAYDIFF_SHARED_STORAGE=1" in last


def test_client_without_the_token_is_refused(cluster, tmp_path):
    from ray.util import get_node_ip_address

    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    proc = _refused(tmp_path, "notoken", 0, f"{get_node_ip_address()}:{cluster.gcs_port}", env)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("raydiff: error: the Ray cluster at ") and "InvalidAuthToken" in last, last
    assert "RAY_AUTH_MODE=token" in last


# ------------------------------------------------------------- packed, on S3, a worker and the driver lost


def _packed_space(tmp_path: Path, name: str) -> tuple[Path, int]:
    """Eight smoke trials of two U-Net widths (N ∈ {8, 12} × width ∈ {8, 12} × seed ∈ {0, 1}); the
    narrow ones ask for a quarter of a node (4 per fake GPU), the wide ones for a whole node."""
    from raydiff.config import experiment_from_dict
    from raydiff.models import param_count

    raw = yaml.safe_load(SMOKE.read_text())
    sizes = {}
    for width in (8, 12):
        cfg = experiment_from_dict({k: v for k, v in raw.items() if k not in ("sweep", "grid")} | {"model": {**raw["model"], "base_channels": width}})
        sizes[width] = param_count(cfg.model, cfg.data)
    bound = (sizes[8] + sizes[12]) // 2
    raw["sweep"].update(
        name=name, max_failures=3, checkpoint_every=2, resources={"cpu": 1, "gpu": 1},
        resources_by=[{"max_params": bound, "cpu": 0.25, "gpu": 0.25}],
    )  # fmt: skip
    raw["grid"] = {"data.n_train": [8, 12], "model.base_channels": [8, 12], "train.seed": [0, 1]}
    raw["eval"].update(fid_every=0)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, bound


def _bucket_rows(uri: str) -> tuple[list[dict], dict[str, list[dict]]]:
    from raydiff.results_folder import load_sweep

    s = load_sweep(uri)  # the one reader of a results folder, here on S3
    return s.trials, s.evals


class Placements:
    """Polls the cluster's placement groups (what Ray granted each trial, and where) in a thread."""

    def __init__(self, cluster: LocalCluster):
        self.cluster, self.seen, self.stopped = cluster, [], threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                if now := self.cluster.placement():
                    self.seen.append(now)
            except OSError:
                pass

    def stop(self) -> list[list[tuple[str, tuple[float, float]]]]:
        self.stopped.set()
        self.thread.join()
        return self.seen


def test_packed_trials_on_s3_survive_a_lost_worker_and_a_killed_driver(cluster, s3, tmp_path):
    import torch

    from raydiff.config import experiment_from_dict
    from raydiff.trial import train

    name = "packed"
    uri = f"s3://{BUCKET}/sweeps/{name}"
    space, bound = _packed_space(tmp_path, name)
    address = ["--storage", f"s3://{BUCKET}/sweeps", "--address", f"127.0.0.1:{cluster.gcs_port}"]
    placements = Placements(cluster)
    first = Command(tmp_path, "sweep", str(space), *address, env=cluster.env, log="first")

    def rows_or_none():
        try:
            return _bucket_rows(uri)
        except Exception:  # noqa: BLE001 - nothing in the bucket yet
            return None

    def worker_2_busy_and_evaluating():
        time.sleep(0.5)
        on_2 = [n for n, _ in cluster.placement() if n == cluster.node_ids["2-worker"]]
        got = rows_or_none()
        return bool(on_2) and got is not None and sum(len(r) >= 2 for r in got[1].values()) >= 2

    wait_for(worker_2_busy_and_evaluating, 300, "trials running on worker 2, two of them evaluated twice", first)
    cluster.kill_node("2-worker")  # a lost machine (a reclaimed spot node)
    cluster.add_worker("3-worker")  # its replacement, as the autoscaler would start one

    def some_finished_others_running():
        time.sleep(1.0)
        got = rows_or_none()
        return got is not None and len(got[0]) >= 3 and any(n == cluster.node_ids["3-worker"] for n, _ in cluster.placement())

    wait_for(some_finished_others_running, 300, "three trials finished, one running on the new worker", first)
    first.kill()  # the driver, SIGKILLed: its trials end with it
    first.wait()
    first.end_survivors()
    before, _ = _bucket_rows(uri)
    assert len(before) < 8, "the sweep ended before its driver was killed"
    # the interrupted sweep, read by another process that knows only the URL and the endpoint
    status = subprocess.run([*RAYDIFF, "status", uri], cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"{len(before)} finished" in status.stdout and "(of 8 trials)" in status.stdout, status.stdout
    assert "--resume NAME" in status.stdout, status.stdout
    wait_for(lambda: time.sleep(0.5) or not cluster.placement(), 120, "the killed sweep's trials released")

    resumed = Command(tmp_path, "sweep", "--resume", name, *address, env=cluster.env, log="resume")
    assert resumed.wait(timeout=400) == 0, resumed.log()
    resumed.assert_no_survivors(started_ray=False)  # the trials ran on the cluster's nodes
    seen = placements.stop()

    # what Ray granted: several narrow trials per fake GPU at once, a wide one alone, none on the head
    workers = set(cluster.node_ids.values())
    assert {node for snap in seen for node, _ in snap} <= workers, ({node for snap in seen for node, _ in snap}, cluster.node_ids, seen[:3])
    by_node = [{n: [r for m, r in snap if m == n] for n, _ in snap} for snap in seen]
    assert max(sum(r == (0.25, 0.25) for r in rs) for snap in by_node for rs in snap.values()) >= 2
    assert any((1.0, 1.0) in rs for snap in by_node for rs in snap.values())
    assert all(len(rs) == 1 for snap in by_node for rs in snap.values() if (1.0, 1.0) in rs)

    trials, evals = _bucket_rows(uri)
    assert len(trials) == 8 and len({t["trial_id"] for t in trials}) == 8, trials  # one row per trial
    assert {t["status"] for t in trials} == {"memorized"}, trials
    assert {t["params"] <= bound for t in trials} == {True, False}
    for t in trials:
        assert t["node_id"] in workers
        steps = [r["step"] for r in evals[t["trial_id"]]]
        assert steps == list(range(50, t["steps_done"] + 1, 50)), steps  # every evaluation once
    restarted = [t for t in trials if any(r["resumed_from_step"] for r in evals[t["trial_id"]])]
    assert restarted, "no trial was restarted from a checkpoint"
    # a restarted trial reaches the τ_mem of the same trial run undisturbed, in this process
    torch.set_num_threads(1)
    for t in restarted:
        cfg = experiment_from_dict(json.loads(t["config"])).validate()
        last = {}
        train(cfg, lambda m, _ckpt: last.update(m) or bool(m.get("stop_status")))
        assert (last["tau_mem_step"], last["step"]) == (t["tau_mem_step"], t["steps_done"]), t["trial_id"]
