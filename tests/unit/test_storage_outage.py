"""Storage that stops answering mid-sweep (issue 25): the driver's results writer against a real
S3-compatible server (moto's server mode on 127.0.0.1) that is stopped and started again between
results. Rows written before stay intact; rows reported while it is down are kept and written once
it answers; a store still down at the end leaves a writer that says so (the sweep then stops with
one line, tune/sweep.py), and a resumed writer reads back the same rows as an undisturbed run.

The writer is driven as Tune drives it (setup, on_trial_result, on_trial_complete,
on_experiment_end) with Tune's trial objects reduced to what it reads: id, config, last result.
"""

from __future__ import annotations

import io
import types

import pyarrow.parquet as pq
import pytest

from raydiff import results
from raydiff.config import load_search_space, packaged_search_space
from raydiff.tune.callback import ResultsCallback, eval_keys

pytest.importorskip("moto.server")

from s3server import BUCKET, s3_server  # noqa: E402


@pytest.fixture(scope="module")
def s3():
    with s3_server(BUCKET) as server:
        yield server


SPACE = load_search_space(packaged_search_space("smoke"))
POINT = SPACE.points()[0]


def trial(tid: str, last: dict | None = None):
    return types.SimpleNamespace(trial_id=tid, config={"point": POINT}, last_result=last or {}, error_file=None, error_msg=None)


def result(step: int) -> dict:
    r = {k: None for k in eval_keys()}
    r.update(step=step, train_loss=1.0 / step, test_loss=1.2 / step, loss=1.0 / step, mem_frac=min(1.0, step / 1000), wall_s=step / 100)
    return r


def writer(uri: str) -> ResultsCallback:
    cb = ResultsCallback(SPACE, uri, results.provenance(SPACE.to_json()))
    cb.setup()
    return cb


def rows_of(uri: str) -> tuple[list[dict], list[dict]]:
    fs, root = results.filesystem(uri)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_s",)} for r in rs]  # noqa: E731
    return strip(results.read_trials(fs, root).to_pylist()), strip(results.read_metrics(fs, root).to_pylist())


def play(cb: ResultsCallback, steps: list[int], outage: tuple[int, int] | None = None, s3=None) -> None:
    """Report `steps` for trial t0, stopping the store before step outage[0] and starting it
    again before outage[1] (never: it is down at the end), then complete the trial."""
    for step in steps:
        if outage and step == outage[0]:
            s3.stop()
        if outage and step == outage[1]:
            s3.restart()
        cb.on_trial_result(0, [], trial("t0"), result(step))
    cb.on_trial_complete(0, [], trial("t0", result(steps[-1])))
    cb.on_experiment_end([])


def test_an_outage_mid_sweep_loses_no_row(s3):
    steps = [100, 200, 300, 400, 500]
    play(writer(f"s3://{BUCKET}/outage/calm"), steps)
    calm = rows_of(f"s3://{BUCKET}/outage/calm")

    uri = f"s3://{BUCKET}/outage/stormy"
    cb = writer(uri)
    cb.on_trial_result(0, [], trial("t0"), result(100))
    part = "outage/stormy/metrics/t0.000000000100.part.parquet"  # a running trial's row: a part file of its own
    before = pq.read_table(io.BytesIO(s3.client.get_object(Bucket=BUCKET, Key=part)["Body"].read())).to_pylist()
    s3.stop()
    for step in (200, 300):  # the store is down: no exception, the rows wait
        cb.on_trial_result(0, [], trial("t0"), result(step))
    assert set(cb.unwritten) == {"t0"}
    s3.restart()
    for step in (400, 500):
        cb.on_trial_result(0, [], trial("t0"), result(step))
    assert cb.unwritten == {}
    cb.on_trial_complete(0, [], trial("t0", result(500)))
    cb.on_experiment_end([])
    trials, metrics = rows_of(uri)
    assert [r["step"] for r in metrics] == steps
    key = lambda r: (r["trial_id"], r["step"], r["mem_frac"], r["train_loss"])  # noqa: E731
    assert [key(r) for r in metrics[: len(before)]] == [key(r) for r in before]  # rows written before: intact
    assert _same_rows((trials, metrics), calm)  # as if the store had never stopped


def _same_rows(a, b) -> bool:
    """The same rows, but for what names the run (its pid, its wall time): trial id, steps, values."""
    drop = ("pid", "wall_s", "error")
    clean = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert clean(a[0]) == clean(b[0]) and clean(a[1]) == clean(b[1])
    return True


def test_a_store_down_at_the_end_is_said_and_resume_gives_the_same_rows(s3):
    steps = [100, 200, 300]
    play(writer(f"s3://{BUCKET}/end/calm"), steps)
    calm = rows_of(f"s3://{BUCKET}/end/calm")

    uri = f"s3://{BUCKET}/end/stormy"
    cb = writer(uri)
    play(cb, steps, outage=(300, None), s3=s3)  # down from step 300 to the end
    assert set(cb.unwritten) == {"t0", results.TRIALS_FILE}  # what run_sweep turns into its one line
    s3.restart()
    cb.flush()  # the store is back: everything kept is written
    assert cb.unwritten == {}
    assert _same_rows(rows_of(uri), calm)
    # a resumed driver reads back the same rows, and a finished trial reported again changes nothing
    again = writer(uri)
    assert again.final == {"t0"}
    again.on_trial_result(0, [], trial("t0"), result(300))
    assert _same_rows(rows_of(uri), calm)
