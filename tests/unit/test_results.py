"""The Parquet results contract: column names and types, round trip, metadata, atomic writes."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydiff import results

# docs/results.md: other tools read these names and types, so they are spelled out
# here rather than taken from the code under test
TRIALS_CONTRACT = {
    "trial_id": pa.string(),
    "status": pa.string(),
    "stop_reason": pa.string(),
    "dataset": pa.string(),
    "n_train": pa.int64(),
    "model": pa.string(),
    "params": pa.int64(),
    "batch_size": pa.int64(),
    "lr": pa.float64(),
    "objective": pa.string(),
    "seed": pa.int64(),
    "steps_done": pa.int64(),
    "tau_mem_step": pa.int64(),
    "tau_mem_images": pa.int64(),
    "tau_mem_normalized": pa.float64(),
    "tau_mem_seconds": pa.float64(),
    "best_fid": pa.float64(),
    "best_fid_step": pa.int64(),
    "node_id": pa.string(),
}
METRICS_CONTRACT = {
    "trial_id": pa.string(),
    "step": pa.int64(),
    "images_seen": pa.int64(),
    "wall_s": pa.float64(),
    "train_loss": pa.float64(),
    "test_loss": pa.float64(),
    "mem_frac": pa.float64(),
    "mem_frac_lo": pa.float64(),
    "mem_frac_hi": pa.float64(),
    "fid": pa.float64(),
}


@pytest.mark.parametrize(
    "schema, contract",
    [pytest.param(results.TRIALS_SCHEMA, TRIALS_CONTRACT, id="trials"), pytest.param(results.METRICS_SCHEMA, METRICS_CONTRACT, id="metrics")],
)
def test_schema_holds_the_contract(schema, contract):
    for name, typ in contract.items():
        assert name in schema.names, name
        assert schema.field(name).type == typ, name
    assert schema.names[: len(contract)] == list(contract)  # contract columns first, in order
    assert len(set(schema.names)) == len(schema.names)


def trial_rows():
    base = dict(
        status="memorized", stop_reason="mem_frac ≥ 0.1", dataset="digits", model="digits-tiny", params=159_697,
        batch_size=64, lr=2e-3, objective="ddpm", seed=0, node_id="node-a",
    )  # fmt: skip
    return [
        dict(base, trial_id="t0", n_train=16, steps_done=1000, tau_mem_step=750, tau_mem_images=48_000,
             tau_mem_normalized=750.0, tau_mem_seconds=31.5, best_fid=12.5, best_fid_step=500),
        dict(base, trial_id="t1", n_train=32, status="budget", stop_reason="budget", steps_done=3000,
             tau_mem_step=None, tau_mem_images=None, tau_mem_normalized=None, tau_mem_seconds=None,
             best_fid=None, best_fid_step=None),
    ]  # fmt: skip


def metric_rows(trial_id, steps):
    return [
        dict(trial_id=trial_id, step=s, images_seen=64 * s, wall_s=0.1 * s, train_loss=0.1, test_loss=0.2,
             mem_frac=s / 1000, mem_frac_lo=0.0, mem_frac_hi=1.0, fid=None if i % 2 else 30.0 - i, loss=0.3)
        for i, s in enumerate(steps)
    ]  # fmt: skip


def test_trials_round_trip(tmp_path):
    fs, root = results.filesystem(str(tmp_path / "sweep"))
    meta = results.provenance(json.dumps({"grid": {"data.n_train": [16, 32]}}))
    rows = trial_rows()
    results.write_atomic(results.table(rows, results.TRIALS_SCHEMA, meta), fs, results.join(root, results.TRIALS_FILE))
    back = results.read_trials(fs, root)
    assert back.schema.remove_metadata() == results.TRIALS_SCHEMA.remove_metadata()
    got = back.to_pylist()
    for want, row in zip(rows, got):
        assert {k: row[k] for k in want} == want
    assert got[1]["tau_mem_step"] is None and got[1]["best_fid"] is None  # nulls stay nulls
    # provenance in the schema metadata
    md = back.schema.metadata
    versions = json.loads(md[b"raydiff.versions"])
    assert {"raydiff", "ray", "torch", "pyarrow"} <= set(versions)
    assert md[b"raydiff.git_commit"].decode()
    assert json.loads(md[b"raydiff.search_space"]) == {"grid": {"data.n_train": [16, 32]}}
    # a plain pyarrow reader (another tool) sees the same columns
    assert pq.read_table(tmp_path / "sweep" / "trials.parquet").column_names == results.TRIALS_SCHEMA.names


def test_metrics_dataset_round_trip(tmp_path):
    fs, root = results.filesystem(str(tmp_path))
    meta = results.provenance()
    for tid, steps in (("t1", [50, 100, 150]), ("t0", [50, 100])):
        path = results.join(root, results.METRICS_DIR, f"{tid}.parquet")
        results.write_atomic(results.table(metric_rows(tid, steps), results.METRICS_SCHEMA, meta), fs, path)
    back = results.read_metrics(fs, root)
    assert [(r["trial_id"], r["step"]) for r in back.to_pylist()] == [
        ("t0", 50), ("t0", 100), ("t1", 50), ("t1", 100), ("t1", 150)
    ]  # fmt: skip
    by_key = {(r["trial_id"], r["step"]): r for r in back.to_pylist()}
    for tid, steps in (("t1", [50, 100, 150]), ("t0", [50, 100])):
        for want in metric_rows(tid, steps):
            assert {k: by_key[(tid, want["step"])][k] for k in want} == want
    for name, typ in METRICS_CONTRACT.items():
        assert back.schema.field(name).type == typ
    # the folder is a Parquet dataset another tool can open as one table
    ds = pq.read_table(tmp_path / "metrics")
    assert ds.num_rows == 5 and set(METRICS_CONTRACT) <= set(ds.column_names)
    assert b"raydiff.git_commit" in pq.read_schema(tmp_path / "metrics" / "t0.parquet").metadata


def test_empty_results_folder_reads_as_empty_tables(tmp_path):
    fs, root = results.filesystem(str(tmp_path))
    assert results.read_trials(fs, root).num_rows == 0
    assert results.read_metrics(fs, root).num_rows == 0
    assert not results.is_results_dir(fs, root)


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    fs, root = results.filesystem(str(tmp_path))
    path = results.join(root, results.TRIALS_FILE)
    meta = results.provenance()
    first = results.table(trial_rows()[:1], results.TRIALS_SCHEMA, meta)
    results.write_atomic(first, fs, path)
    before = (tmp_path / "trials.parquet").read_bytes()

    def broken_write(table, where, **kw):  # writes part of a file, then fails (disk full, kill, ...)
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(results.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        results.write_atomic(results.table(trial_rows(), results.TRIALS_SCHEMA, meta), fs, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.parquet"]  # no temporary left
    assert (tmp_path / "trials.parquet").read_bytes() == before
    assert results.read_trials(fs, root).to_pylist()[0]["trial_id"] == "t0"


def test_interrupted_write_leaves_no_temp(tmp_path, monkeypatch):
    # KeyboardInterrupt is not an Exception: the temporary must still go
    fs, root = results.filesystem(str(tmp_path))
    target = results.join(root, "metrics", "t.parquet")

    def interrupted(table, where, **kw):
        where.write(b"PAR1")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # while serializing: nothing is written anywhere
        m.setattr(results.pq, "write_table", interrupted)
        with pytest.raises(KeyboardInterrupt):
            results.write_atomic(results.table([], results.METRICS_SCHEMA, {}), fs, target)
    assert list(tmp_path.iterdir()) == []

    class Interrupting:  # the local filesystem, whose streams are cut off at the first write
        def __getattr__(self, name):
            return getattr(fs, name)

        def open_output_stream(self, path):
            stream = fs.open_output_stream(path)
            stream.write(b"PAR1")

            class Cut:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    stream.close()

                def write(self, data):
                    raise KeyboardInterrupt

            return Cut()

    with pytest.raises(KeyboardInterrupt):  # while writing the file: its temporary goes
        results.write_atomic(results.table([], results.METRICS_SCHEMA, {}), Interrupting(), target)
    assert list((tmp_path / "metrics").iterdir()) == []


def test_corrupt_file_is_a_user_error(tmp_path):
    from raydiff.errors import UserError

    (tmp_path / "trials.parquet").write_bytes(b"not parquet")
    fs, root = results.filesystem(str(tmp_path))
    with pytest.raises(UserError, match="trials.parquet"):
        results.read_trials(fs, root)


def test_a_trial_finished_in_an_earlier_run_is_final(tmp_path):
    """After a resume Tune may run a trial again that had already ended (its driver died before
    Tune saved that): the callback keeps both of its files as the first run wrote them."""
    from types import SimpleNamespace

    from raydiff.config import load_search_space
    from raydiff.tune.callback import ResultsCallback

    from paths import ROOT

    space = load_search_space(ROOT / "raydiff" / "search_spaces" / "smoke.yaml")
    fs, root = results.filesystem(str(tmp_path))
    done = {"trial_id": "t0", "status": "memorized", "n_train": 8, "steps_done": 250, "tau_mem_step": 200, "wall_s": 5.5}
    results.write_atomic(results.table([done], results.TRIALS_SCHEMA, {}), fs, results.join(root, results.TRIALS_FILE))
    rows = [{"trial_id": "t0", "step": 250, "mem_frac": 0.4, "pid": 1}]
    results.write_atomic(results.table(rows, results.METRICS_SCHEMA, {}), fs, results.join(root, results.METRICS_DIR, "t0.parquet"))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}

    cb = ResultsCallback(space, str(tmp_path), {})
    cb.setup()
    trial = SimpleNamespace(trial_id="t0", config={"point": {"data.n_train": 8}}, last_result={})
    again = {"step": 200, "mem_frac": 0.2, "pid": 2, "stop_status": "memorized", "stop_reason": "onset", "wall_s": 5.7}
    cb.on_trial_result(0, [trial], trial, again)  # re-reported from its checkpoint, in a new process
    cb.on_trial_complete(0, [trial], trial)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before


def _callback(tmp_path, **kw):
    from raydiff.config import load_search_space
    from raydiff.tune.callback import ResultsCallback

    from paths import ROOT

    cb = ResultsCallback(load_search_space(ROOT / "raydiff" / "search_spaces" / "smoke.yaml"), str(tmp_path), {}, **kw)
    cb.setup()
    return cb


def _report(step, frac=0.0, **extra):
    return {"step": step, "images_seen": step * 32, "wall_s": step / 10, "train_loss": 0.5, "test_loss": 0.6,
            "mem_frac": frac, "pid": 1, "stop_status": None, **extra}  # fmt: skip


def _metric_names(tmp_path):
    return sorted(p.name for p in (tmp_path / results.METRICS_DIR).iterdir())


def test_each_report_writes_one_small_part_and_the_end_compacts(tmp_path):
    """O(1) per report: a part file of one row each, whatever the trial's length; when the trial
    ends its rows are in metrics/<trial>.parquet and the parts are gone."""
    from types import SimpleNamespace

    cb = _callback(tmp_path)
    trial = SimpleNamespace(trial_id="t0", config={"point": {"data.n_train": 8}}, last_result={})
    sizes = []
    for i, step in enumerate(range(50, 1001, 50)):
        cb.on_trial_result(0, [trial], trial, _report(step, frac=i / 100))
        part = tmp_path / results.METRICS_DIR / f"t0.{step:012d}.part.parquet"
        assert pq.read_table(part).num_rows == 1
        sizes.append(part.stat().st_size)
        # a reader sees every row so far while the trial runs
        assert results.read_metrics(*results.filesystem(str(tmp_path))).column("step").to_pylist() == list(range(50, step + 1, 50))
    assert max(sizes) - min(sizes) < 64  # the twentieth report writes what the first did
    assert not (tmp_path / results.METRICS_DIR / "t0.parquet").exists()
    cb.on_trial_complete(0, [trial], trial)
    assert _metric_names(tmp_path) == ["t0.parquet"]
    assert pq.read_table(tmp_path / results.METRICS_DIR / "t0.parquet").column("step").to_pylist() == list(range(50, 1001, 50))
    assert pq.read_table(tmp_path / results.TRIALS_FILE).column("trial_id").to_pylist() == ["t0"]


def test_a_restarted_trial_rewrites_its_file_and_drops_later_parts(tmp_path):
    from types import SimpleNamespace

    cb = _callback(tmp_path)
    trial = SimpleNamespace(trial_id="t1", config={"point": {"data.n_train": 8}}, last_result={})
    for step in (50, 100, 150):
        cb.on_trial_result(0, [trial], trial, _report(step, frac=0.01))
    cb.on_trial_result(0, [trial], trial, _report(100, frac=0.02, pid=2))  # restarted from its step-50 checkpoint
    assert _metric_names(tmp_path) == ["t1.parquet"]  # the whole file, no part left
    back = results.read_metrics(*results.filesystem(str(tmp_path))).to_pylist()
    assert [(r["step"], r["mem_frac"]) for r in back] == [(50, 0.01), (100, 0.02)]  # step 150 is gone
    cb.on_trial_result(0, [trial], trial, _report(150, frac=0.03, pid=2))  # then parts again
    assert _metric_names(tmp_path) == ["t1.000000000150.part.parquet", "t1.parquet"]
    # a driver started again (resume) finds the part and compacts it when the trial ends
    cb2 = _callback(tmp_path)
    cb2.on_trial_complete(0, [trial], trial)
    assert _metric_names(tmp_path) == ["t1.parquet"]
    back = pq.read_table(tmp_path / results.METRICS_DIR / "t1.parquet").to_pylist()
    assert [(r["step"], r["mem_frac"], r["pid"]) for r in back] == [(50, 0.01, 1), (100, 0.02, 2), (150, 0.03, 2)]


def test_readers_prefer_the_compacted_file_to_a_part(tmp_path):
    """Between the compaction and the deletion of the parts a reader sees both: one row per key."""
    fs, root = results.filesystem(str(tmp_path))
    whole = [{"trial_id": "t0", "step": s, "mem_frac": 0.5} for s in (50, 100)]
    results.write_atomic(results.table(whole, results.METRICS_SCHEMA, {}), fs, results.metrics_path(root, "t0"))
    for s, frac in ((100, 0.1), (150, 0.2)):  # a stale part of a compacted step, and one of a step beyond it
        row = [{"trial_id": "t0", "step": s, "mem_frac": frac}]
        results.write_atomic(results.table(row, results.METRICS_SCHEMA, {}), fs, results.metrics_part_path(root, "t0", s))
    back = results.read_metrics(fs, root).to_pylist()
    assert [(r["step"], r["mem_frac"]) for r in back] == [(50, 0.5), (100, 0.5), (150, 0.2)]
    assert results.part_step(results.metrics_part_path(root, "t0", 150)) == 150 and results.part_step(results.metrics_path(root, "t0")) is None
    from raydiff.results_folder import load_sweep

    assert [r["step"] for r in load_sweep(str(tmp_path)).evals["t0"]] == [50, 100, 150]


def test_trials_file_is_written_at_most_every_interval_and_at_the_end(tmp_path):
    from types import SimpleNamespace

    cb = _callback(tmp_path, trials_every_s=3600)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"point": {"data.n_train": 8}}, last_result={}, status="TERMINATED") for i in range(3)]
    for t in trials:
        cb.on_trial_result(0, trials, t, _report(50, stop_status="budget", stop_reason="spent"))
        cb.on_trial_complete(0, trials, t)
    assert pq.read_table(tmp_path / results.TRIALS_FILE).column("trial_id").to_pylist() == ["t0"]  # the first at once
    # a trial Tune restored as ended, whose row an earlier driver did not write, gets it at the end
    late = SimpleNamespace(trial_id="t9", config={"point": {"data.n_train": 8}}, status="TERMINATED",
                           last_result=_report(100, stop_status="memorized", stop_reason="onset", tau_mem_step=100))  # fmt: skip
    stopped = SimpleNamespace(trial_id="t8", config={"point": {"data.n_train": 8}}, status="TERMINATED", last_result=_report(50))
    cb.on_experiment_end([*trials, late, stopped])
    rows = pq.read_table(tmp_path / results.TRIALS_FILE).to_pylist()
    assert [r["trial_id"] for r in rows] == ["t0", "t1", "t2", "t9"]  # t8 was stopped by an interrupt: no row
    assert rows[-1]["status"] == "memorized" and rows[-1]["tau_mem_step"] == 100
