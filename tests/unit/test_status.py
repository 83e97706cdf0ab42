"""Following a sweep: the live table (no flood when stdout is a file) and `raydiff status`."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

from raydiff import ledger, results
from raydiff.cli import main
from raydiff.config import search_space_from_dict
from raydiff.status import duration, onset_in_s, sweep_left_s
from raydiff.tune.progress import ProgressCallback

HEADER = re.compile(r"^\s*trial\s+N\s+B\s+lr\s+step", re.M)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def trial(tid, n, **last):
    return SimpleNamespace(trial_id=tid, config={"point": {"data.n_train": n}}, last_result=last)


def result(step, frac=0.0, fid=None, **extra):
    return {"step": step, "n_train": 8, "batch_size": 32, "lr": 5e-3, "budget_steps": 3000, "mem_frac": frac, "fid": fid,
            "history_steps": [step], "history_mem_frac": [frac], **extra}  # fmt: skip


def test_non_tty_prints_at_most_one_table_a_minute():
    out, clock = io.StringIO(), Clock()
    cb = ProgressCallback(out=out, clock=clock)
    trials = [trial(f"t{i}", 8 * (i + 1)) for i in range(4)]
    for k in range(100):  # 100 results in quick succession
        clock.t += 0.1
        cb.on_trial_result(0, trials, trials[k % 4], result(50 * (k + 1)))
    assert len(HEADER.findall(out.getvalue())) == 1
    last = trials[0]
    last.last_result = result(5000, frac=0.5, tau_mem_step=4950, history_steps=[4950, 5000], history_mem_frac=[0.5, 0.5],
                              stop_status="memorized", stop_reason="onset")  # as train() reports it, decision included
    cb.on_trial_complete(0, trials, last)
    cb.on_experiment_end(trials)
    text = out.getvalue()
    assert len(HEADER.findall(text)) == 2  # the first, and the final one
    assert "trial t0 (N=8, B=32, lr=0.005) finished: memorized at step 4950" in text
    assert "\x1b[" not in text  # no cursor codes in a log file
    clock.t += 61  # a minute later the next result brings a table again
    cb.on_trial_result(0, trials, trials[1], result(9000))
    assert len(HEADER.findall(out.getvalue())) == 3


def test_table_shows_latest_values_and_keeps_the_last_fid():
    out, clock = io.StringIO(), Clock()
    cb = ProgressCallback(out=out, clock=clock, interval_s=0)
    t = trial("abc", 8)
    cb.on_trial_result(0, [t], t, result(100, frac=0.02, fid=41.5))
    cb.on_trial_result(0, [t], t, result(200, frac=0.05, fid=None))  # an evaluation without FID
    last_table = out.getvalue().strip().split("\n")[-2:]
    assert last_table[1].split() == ["abc", "8", "32", "5e-03", "200", "3000", "0.050", "41.50", "running", "-", "-", "-"]


def test_tty_redraws_in_place_and_keeps_the_table_under_new_lines():
    out, clock = Tty(), Clock()
    cb = ProgressCallback(out=out, clock=clock)
    t = trial("abc", 8)
    cb.on_trial_result(0, [t], t, result(100))
    clock.t += 3
    cb.on_trial_result(0, [t], t, result(200))
    assert "\x1b[2F\x1b[J" in out.getvalue()  # moved up over the 2-line table and cleared it
    t.last_result = result(300, frac=0.9, tau_mem_step=250, history_steps=[250, 300], history_mem_frac=[0.9, 0.9])
    cb.on_trial_complete(0, [t], t)
    tail = out.getvalue().rsplit("finished", 1)[1]
    assert HEADER.search(tail), "after the line, the table is drawn again at once"


@pytest.mark.parametrize("seconds, text", [(-5, "due"), (0, "due"), (0.4, "0s"), (45, "45s"), (750, "12m30s"), (11_100, "3h05m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def running(step, wall_s, budget=3000, tau=None, status="running"):
    return {"status": status, "step": step, "wall_s": wall_s, "budget_steps": budget, "tau_predicted": tau}


@pytest.mark.parametrize(
    "row, expected",
    [
        pytest.param(running(100, 10, tau=500), 40.0, id="10-steps-a-second-400-to-go"),
        pytest.param(running(600, 60, tau=500), -10.0, id="past-tau-due"),
        pytest.param(running(100, 10), None, id="no-fit-no-estimate"),
        pytest.param(running(0, 0, tau=500), None, id="no-speed-yet"),
        pytest.param(running(100, 10, tau=500, status="memorized"), None, id="finished"),
    ],
)
def test_onset_in_s(row, expected):
    assert onset_in_s(row) == expected


@pytest.mark.parametrize(
    "rows, width, not_started, expected",
    [
        # one trial, 10 steps/s: to τ̂ = 500 from 100 → 40 s
        pytest.param([running(100, 10, tau=500)], 1, 0, 40.0, id="one-to-tau"),
        # τ̂ beyond the budget: to the budget, 2900 steps → 290 s
        pytest.param([running(100, 10, tau=9000)], 1, 0, 290.0, id="tau-past-budget"),
        # no fit: to the budget
        pytest.param([running(100, 10)], 1, 0, 290.0, id="no-fit"),
        # two at once, 40 s and 290 s left: the longer one ends the sweep
        pytest.param([running(100, 10, tau=500), running(100, 10)], 2, 0, 290.0, id="longest-running"),
        # one at a time, 2 not started, each as long as the mean whole trial (50 s; 300 s) → 40 + 290 + 2·175 s
        pytest.param([running(100, 10, tau=500), running(100, 10)], 1, 2, 680.0, id="queue-at-width-1"),
        # a finished trial's wall time counts in the mean: (50 + 300 + 100) / 3 = 150 s each for 3 pending, width 2
        pytest.param([running(100, 10, tau=500), running(100, 10), {"status": "memorized", "wall_s": 100},
                      {"status": "pending"}], 2, 2, (40 + 290 + 3 * 150) / 2, id="finished-and-pending"),  # fmt: skip
        pytest.param([{"status": "pending"}], 1, 3, None, id="nothing-running"),
    ],
)
def test_sweep_left_s(rows, width, not_started, expected):
    got = sweep_left_s(rows, width, not_started)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_live_table_estimates_onsets_from_the_finished_trials():
    """Three trials memorize at τ = 10·N; a running N = 64 trial at step 140 after 14 s (10 steps/s)
    gets τ̂ ≈ 640 from the planner's fit, so its onset ≈ 50 s away; the sweep ends when it does."""
    out, clock = io.StringIO(), Clock()
    cb = ProgressCallback(out=out, clock=clock, interval_s=0, width=2, planned=4)
    done = [trial(f"t{i}", n) for i, n in enumerate((8, 16, 32))]
    for t, n in zip(done, (8, 16, 32)):
        t.last_result = result(10 * n, frac=0.5, tau_mem_step=10 * n, n_train=n, params=1000, wall_s=n,
                               stop_status="memorized", stop_reason="onset")  # fmt: skip
        cb.on_trial_complete(0, done, t)
    live = trial("t3", 64)
    cb.on_trial_result(0, [*done, live], live, result(140, n_train=64, params=1000, wall_s=14.0))
    lines = out.getvalue().strip().splitlines()
    row = next(ln for ln in lines if ln.split()[0] == "t3").split()
    tau_hat = 10 * 64 - 0.5  # the law is fitted to the middle of the last gap (planner.observe)
    assert row[-1] == duration((tau_hat - 140) / 10) == "50s"
    assert lines[-1] == "expected end in 50s (running trials to their expected onset or budget at their speed so far)"
    assert [ln.split()[-1] for ln in lines if ln.split()[0] in ("t0", "t1", "t2")][-3:] == ["-", "-", "-"]  # finished: none


def test_live_table_prefers_the_trials_own_plan():
    out, clock = io.StringIO(), Clock()
    cb = ProgressCallback(out=out, clock=clock, interval_s=0)
    t = SimpleNamespace(trial_id="p", config={"point": {"data.n_train": 8}, "planner": {"tau_mem_predicted": 1200.0}}, last_result={})
    cb.on_trial_result(0, [t], t, result(200, wall_s=20.0))  # 10 steps/s, 1000 steps to τ̂
    assert out.getvalue().splitlines()[1].split()[-1] == "1m40s"


def test_callback_pickles_without_its_stream():
    import pickle

    cb = ProgressCallback(out=Tty(), clock=Clock())
    clone = pickle.loads(pickle.dumps(cb))
    assert clone.rows == {} and clone.out is not None and clone.clock() > 0


# ------------------------------------------------------------------ raydiff status


def half_finished(root):
    """A sweep of 3 grid points: one finished, one running (metrics only), one not started."""
    space = search_space_from_dict({"sweep": {"name": "half"}, "grid": {"data.n_train": [8, 16, 32]}})
    fs, path = results.filesystem(str(root))
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(results.join(path, results.SPACE_FILE)) as f:
        f.write(space.to_json().encode())
    meta = {"raydiff.git_commit": "test"}
    done = {"trial_id": "aaa_00000", "status": "memorized", "stop_reason": "onset", "dataset": "digits", "n_train": 8,
            "model": "m", "params": 100, "batch_size": 64, "lr": 1e-3, "objective": "ddpm", "seed": 0, "steps_done": 500,
            "tau_mem_step": 450, "budget_steps": 20000}  # fmt: skip
    results.write_atomic(results.table([done], results.TRIALS_SCHEMA, meta), fs, results.join(path, results.TRIALS_FILE))
    evals = {
        "aaa_00000": [(250, 0.0, 80.0, None), (450, 0.2, None, 450), (500, 0.4, None, 450)],
        "bbb_00001": [(250, 0.0, 90.5, None), (500, 0.01, None, None), (750, 0.03, None, None)],
    }
    for tid, rows in evals.items():
        n = 8 if tid.startswith("aaa") else 16
        table = [{"trial_id": tid, "step": s, "mem_frac": m, "fid": f, "tau_mem_step": tau, "n_train": n, "batch_size": 64,
                  "lr": 1e-3, "budget_steps": 20000} for s, m, f, tau in rows]  # fmt: skip
        results.write_atomic(
            results.table(table, results.METRICS_SCHEMA, meta), fs, results.join(path, results.METRICS_DIR, f"{tid}.parquet")
        )
    # the running trial's ledger: the pixel test copies images 3 and 5, then 5 and 9 (3 distinct)
    writer = ledger.SamplesWriter(path, meta)
    for step, nearest, copied in ((500, [3, 5, 1, 2], [True, True, False, False]), (750, [5, 9, 4, 9], [True, True, False, False])):
        led = {"step": step, "sample": [0, 1, 2, 3], "nearest_pixel": nearest, "score_pixel": [0.1] * 4, "copied_pixel": copied}
        writer.add("bbb_00001", {"ledger": led})
    return path


def test_status_on_a_half_finished_folder(tmp_path, capsys):
    path = half_finished(tmp_path / "half")
    assert main(["status", path]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip().startswith(("aaa", "bbb"))}
    assert rows["aaa_00000"] == ["aaa_00000", "8", "64", "1e-03", "500", "20000", "0.400", "80.00", "memorized", "450", "-"]
    # the running trial: its latest step and mem_frac, the last FID it measured, no onset yet, the
    # distinct images its ledger shows copied
    assert rows["bbb_00001"] == ["bbb_00001", "16", "64", "1e-03", "750", "20000", "0.030", "90.50", "running", "-", "3"]
    assert "1 finished, 1 running, 1 not started (of 3 trials)" in text


def test_status_defaults_to_the_newest_sweep_under_the_storage(tmp_path, capsys, monkeypatch):
    half_finished(tmp_path / "store" / "half")
    monkeypatch.setenv("RAYDIFF_STORAGE", str(tmp_path / "store"))
    assert main(["status"]) == 0
    assert "bbb_00001" in capsys.readouterr().out


WORD = "2 trial(s) waiting up to 75 s for resources (3 CPU, 1 GPU): launches failed: gpu-a10g: VcpuLimitExceeded"


@pytest.mark.parametrize(
    "content, shown",
    [
        pytest.param(None, False, id="no-file"),
        pytest.param({"message": WORD, "trials": ["ccc_00002"], "at": 0.0}, True, id="waiting"),
        pytest.param("{half a fi", False, id="half-written"),  # a hint only: unreadable counts as none
        pytest.param({"trials": []}, False, id="no-message"),
    ],
)
def test_status_says_why_trials_wait(tmp_path, capsys, content, shown):
    import json
    import time

    path = half_finished(tmp_path / "half")
    if content is not None:
        text = content if isinstance(content, str) else json.dumps({**content, "at": time.time() - 90})
        (tmp_path / "half" / results.WAITING_FILE).write_text(text)
    assert main(["status", path]) == 0
    out = capsys.readouterr().out
    assert (f"\nwaiting (90 s ago): {WORD}\n" in out) is shown, out


def test_status_of_a_finished_sweep_ignores_an_old_waiting_word(tmp_path, capsys):
    import json

    space = search_space_from_dict({"sweep": {"name": "done"}, "grid": {"data.n_train": [8]}})
    fs, path = results.filesystem(str(tmp_path / "done"))
    fs.create_dir(path, recursive=True)
    results.replace_file(fs, results.join(path, results.SPACE_FILE), space.to_json().encode())
    done = {"trial_id": "aaa_00000", "status": "memorized", "n_train": 8, "steps_done": 500, "tau_mem_step": 450}
    results.write_atomic(results.table([done], results.TRIALS_SCHEMA, {}), fs, results.join(path, results.TRIALS_FILE))
    (tmp_path / "done" / results.WAITING_FILE).write_text(json.dumps({"message": WORD}))  # a driver killed while trials waited
    assert main(["status", path]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 0 running, 0 not started (of 1 trials)" in out and "waiting" not in out


@pytest.mark.parametrize("make", ["missing", "not-results"])
def test_status_errors_are_one_line(tmp_path, capsys, make):
    target = tmp_path / "x"
    if make == "not-results":
        target.mkdir()
    assert main(["status", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raydiff: error:") and err.count("\n") == 1


def test_ray_gauges_get_the_trials_numbers(monkeypatch):
    from raydiff.tune import ray_metrics

    class Gauge:
        def __init__(self):
            self.sets = []

        def set(self, value, tags=None):
            self.sets.append((value, tags))

    gauges = {k: Gauge() for k in ray_metrics.GAUGES}
    monkeypatch.setattr(ray_metrics, "_gauges", gauges)
    monkeypatch.setenv("RAYDIFF_RAY_METRICS", "1")
    ray_metrics.record({"mem_frac": 0.25, "fid": None, "step": 300}, "t1", "sw")
    ray_metrics.record({"mem_frac": float("nan"), "fid": 41.0, "step": 350}, "t1", "sw")
    tags = {"sweep": "sw", "trial_id": "t1"}
    assert gauges["mem_frac"].sets == [(0.25, tags)]  # NaN is not a measurement
    assert gauges["fid"].sets == [(41.0, tags)] and [v for v, _ in gauges["step"].sets] == [300.0, 350.0]
    monkeypatch.setenv("RAYDIFF_RAY_METRICS", "0")
    ray_metrics.record({"mem_frac": 0.5}, "t1", "sw")
    assert len(gauges["mem_frac"].sets) == 1
