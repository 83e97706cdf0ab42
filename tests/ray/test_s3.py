"""Storage on S3 (issue 14), against a real S3-compatible server on 127.0.0.1: moto's server mode.

The server runs in this process (a thread); every command runs as a subprocess that knows the store
only as a user would tell it: an s3:// URL and the AWS_* environment (AWS_ENDPOINT_URL, dummy
credentials, the region). The smoke sweep goes to s3://…/sweeps; `raydiff status` and `analyze`
read it back from other processes. Every file raydiff writes there is one PUT, no temporary. (A
driver killed and resumed from the bucket, with a worker lost on the way: tests/ray/test_multinode.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from processes import Command
from s3server import BUCKET, S3, s3_server
from raydiff import results
from raydiff.results_folder import load_sweep

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="tracks processes through /proc"),
]

pytest.importorskip("moto.server")

STORAGE = f"s3://{BUCKET}/sweeps"
RAYDIFF = [sys.executable, "-m", "raydiff.cli"]


# ------------------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def s3():
    with s3_server(BUCKET) as server:
        yield server


# --------------------------------------------------------------------------- storage units


def test_pyarrow_reaches_the_store_from_the_environment_or_the_uri(s3, monkeypatch):
    """AWS_ENDPOINT_URL is all pyarrow's URI parser needs (pyarrow ≥ 15), the variable the AWS
    tools read too; without it the endpoint can go into the URI's query instead."""
    fs, root = results.filesystem(f"s3://{BUCKET}/probe/env")
    assert isinstance(fs, pafs.S3FileSystem) and root == f"{BUCKET}/probe/env"
    with fs.open_output_stream(results.join(root, "a.txt")) as f:
        f.write(b"from the environment")
    assert s3.client.get_object(Bucket=BUCKET, Key="probe/env/a.txt")["Body"].read() == b"from the environment"

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    fs, root = results.filesystem(f"s3://{BUCKET}/probe/query?endpoint_override=127.0.0.1:{s3.port}&scheme=http")
    assert root == f"{BUCKET}/probe/query"
    with fs.open_output_stream(results.join(root, "b.txt")) as f:
        f.write(b"from the query")
    assert s3.client.get_object(Bucket=BUCKET, Key="probe/query/b.txt")["Body"].read() == b"from the query"
    # folders on S3 are key prefixes: no modification time
    assert fs.get_file_info(root).type == pafs.FileType.Directory and fs.get_file_info(root).mtime is None


def test_a_results_file_is_one_put_and_no_temporary(s3, monkeypatch):
    uri = f"s3://{BUCKET}/probe/atomic"
    fs, root = results.filesystem(uri)
    mark = len(s3.requests)
    assert results.filesystem(uri)[0] is fs and s3.served_since(mark, "/") == []  # opened once per process
    path = results.join(root, "metrics", "t0.parquet")
    rows = [{"trial_id": "t0", "step": s, "mem_frac": s / 1000} for s in (50, 100)]
    for n in (1, 2):  # written, then replaced
        mark = len(s3.requests)
        results.write_atomic(results.table(rows[:n], results.METRICS_SCHEMA, {"k": "v"}), fs, path)
        assert s3.served_since(mark) == [("PUT", f"/{BUCKET}/probe/atomic/metrics/t0.parquet")]  # no copy, delete, marker
        back = results.read_metrics(fs, root)
        assert back.column("step").to_pylist() == [50, 100][:n] and back.schema.metadata[b"k"] == b"v"
    assert s3.keys("probe/atomic/") == ["probe/atomic/metrics/t0.parquet"]

    def broken(table, where, **kw):  # the table fails to serialize: nothing goes to the store
        where.write(b"PAR1 half a file")
        raise OSError("no space")

    monkeypatch.setattr(results.pq, "write_table", broken)
    mark = len(s3.requests)
    with pytest.raises(OSError, match="no space"):
        results.write_atomic(results.table(rows, results.METRICS_SCHEMA, {}), fs, path)
    monkeypatch.undo()
    assert s3.served_since(mark) == []
    assert results.read_metrics(fs, root).column("step").to_pylist() == [50, 100]  # the previous file, whole


def test_local_writes_still_go_through_a_renamed_temporary(tmp_path):
    class Recording:  # the local filesystem, with its renames noted
        def __init__(self, fs):
            self.fs, self.moved = fs, []

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, src, dest):
            self.moved.append((src, dest))
            self.fs.move(src, dest)

    fs, root = results.filesystem(str(tmp_path))
    recording = Recording(fs)
    results.write_atomic(results.table([], results.TRIALS_SCHEMA, {}), recording, results.join(root, results.TRIALS_FILE))
    [(src, dest)] = recording.moved
    assert Path(src).name.endswith(".tmp") and dest.endswith(results.TRIALS_FILE)
    assert [p.name for p in tmp_path.iterdir()] == [results.TRIALS_FILE]


# ------------------------------------------------------------------------------ sweeps on S3


def _rows(uri: str) -> tuple[list[dict], dict[str, list[dict]]]:
    s = load_sweep(uri)  # the one reader of a results folder, here on S3
    return s.trials, s.evals


def _cli(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A short command (status, analyze) in a process of its own, in a folder of its own."""
    cwd = tmp / f"cwd-{args[0]}-{time.monotonic_ns()}"
    cwd.mkdir()
    return subprocess.run([*RAYDIFF, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=180)


def _assert_files_whole(s3: S3, prefix: str) -> None:
    keys = s3.keys(prefix)
    ours = [k for k in keys if not k.endswith("/.validate_storage_marker")]  # Ray Tune's probe of the store
    assert not [k for k in ours if k.endswith(".tmp") or "/." in k], keys  # no temporary, no hidden object
    assert f"{prefix}trials.parquet" in keys and f"{prefix}search_space.json" in keys


@pytest.fixture(scope="module")
def smoke(s3, tmp_path_factory):
    """`raydiff sweep smoke --storage s3://…/sweeps`: 3 tiny trials, to the bucket."""
    tmp = tmp_path_factory.mktemp("smoke-s3")
    t0 = time.monotonic()
    cmd = Command(tmp, "sweep", "smoke", "--storage", STORAGE, log="smoke")
    assert cmd.wait(timeout=400) == 0, cmd.log()
    seconds = time.monotonic() - t0
    cmd.assert_no_survivors()
    assert f"results → {STORAGE}/smoke" in cmd.out.read_text(), cmd.log()
    return {"uri": f"{STORAGE}/smoke", "seconds": seconds, "rows": _rows(f"{STORAGE}/smoke")}


def test_smoke_sweep_lands_in_the_bucket(smoke, s3):
    trials, evals = smoke["rows"]
    assert sorted(t["n_train"] for t in trials) == [8, 12, 16] and {t["status"] for t in trials} == {"memorized"}, trials
    assert sorted(evals) == sorted(t["trial_id"] for t in trials)
    for t in trials:
        steps = [r["step"] for r in evals[t["trial_id"]]]
        assert steps == list(range(50, t["steps_done"] + 1, 50)), steps  # every evaluation once
    _assert_files_whole(s3, "sweeps/smoke/")
    # the files read back without raydiff, as docs/results.md says
    fs, root = pafs.FileSystem.from_uri(f"{smoke['uri']}/trials.parquet")
    assert pq.read_table(root, filesystem=fs).num_rows == 3
    assert any(k.startswith("sweeps/smoke/") and "checkpoint_" in k for k in s3.keys("sweeps/smoke/"))  # Tune's, there too


def test_status_and_analyze_from_other_processes(smoke, tmp_path):
    """A separate process that knows the URL and the endpoint only; S3 folders have no mtimes."""
    proc = _cli(tmp_path, "status", smoke["uri"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"raydiff: sweep at {smoke['uri']}"
    assert sum(" memorized " in f" {ln} " for ln in lines) == 3, proc.stdout
    assert "3 finished, 0 running, 0 not started (of 3 trials); last evaluation written" in proc.stdout

    newest = _cli(tmp_path, "status", env={"RAYDIFF_STORAGE": STORAGE})  # no argument: the newest sweep there
    assert newest.returncode == 0, newest.stderr
    assert newest.stdout.splitlines()[0].startswith(f"raydiff: sweep at {STORAGE}/"), newest.stdout

    out = tmp_path / "analysis"
    proc = _cli(tmp_path, "analyze", smoke["uri"], "--out", str(out), "--boot", "200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"α.*=\s*[+-]?\d+\.\d+\s+\[", proc.stdout), proc.stdout
    assert (out / "fits.json").is_file() and (out / "report.html").is_file()
    assert any(p.name.startswith("tau_vs_n") and p.suffix == ".png" for p in out.iterdir())
