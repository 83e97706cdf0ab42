"""cluster/slurm.sbatch on a real SLURM: a single-node controller and node started here (munge,
slurmctld, slurmd on 127.0.0.1, ports of their own), the smoke sweep submitted with `sbatch`
through the script, its results checked, the daemons stopped. Skipped, with the reason, where
SLURM is not installed or its controller cannot start (.ci/run installs Debian's packages)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from paths import ROOT

pytestmark = pytest.mark.ray

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed here (no {', '.join(missing)}): apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("a single-node SLURM for a test runs its daemons as root")
    root = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool", "log", "run"):
        (root / d).mkdir()
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=raydifftest", "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "SlurmUser=root", "AuthType=auth/munge",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "ReturnToService=2", "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 2} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
    ]))  # fmt: skip
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started_munge = None
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            pytest.skip("munge has no key (/etc/munge/munge.key): the package's postinst makes one")
        subprocess.run(["runuser", "-u", "munge", "--", _which("munged")], check=True)
        started_munge = True
    subprocess.run([_which("slurmctld")], env=env, check=True)
    subprocess.run([_which("slurmd"), "-N", "localhost"], env=env, check=True)
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run([_which("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        state = out.stdout.strip()
        if state == "idle":
            break
        time.sleep(1)
    try:
        if state != "idle":
            pytest.skip(f"the single-node SLURM did not come up (sinfo: {state or out.stderr.strip()})")
        yield env, root
    finally:
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            path = root / "run" / pidfile
            if path.exists():
                try:
                    os.kill(int(path.read_text().strip()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        if started_munge:
            subprocess.run(["pkill", "-x", "munged"], check=False)


def test_smoke_sweep_through_sbatch(slurm, tmp_path):
    env, _ = slurm
    env = {**env, "SPACE": "smoke", "RAYDIFF_STORAGE": str(tmp_path / "results")}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [_which("sbatch"), "--parsable", f"--chdir={tmp_path}", str(ROOT / "cluster" / "slurm.sbatch")],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    job = out.stdout.strip().split(";")[0]
    deadline, state = time.monotonic() + 420, ""
    while time.monotonic() < deadline:
        info = subprocess.run([_which("scontrol"), "show", "job", job], env=env, capture_output=True, text=True).stdout
        state = next((w.split("=", 1)[1] for w in info.split() if w.startswith("JobState=")), "")
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(2)
    log = next(tmp_path.glob("raydiff-*.log"), None)
    text = log.read_text() if log else "(no job log)"
    if state not in ("COMPLETED", "FAILED"):
        subprocess.run([_which("scancel") or "scancel", job], env=env, check=False)
    assert state == "COMPLETED", text[-3000:]
    assert "raydiff: sweep 'smoke' finished" in text
    rows = pq.read_table(tmp_path / "results" / "smoke" / "trials.parquet").to_pylist()
    assert sorted(r["n_train"] for r in rows) == [8, 12, 16] and {r["status"] for r in rows} == {"memorized"}
