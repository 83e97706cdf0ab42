"""A word when trials wait for resources (raydiff/tune/waiting.py): the message by table, and the
callback's timing, file and silence, with Tune's trials and the autoscaler stood in for."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from raydiff.tune.waiting import WAITING_FILE, Launch, WaitingCallback, waiting_message


@pytest.mark.parametrize(
    "launches, needles",
    [
        pytest.param(None, ["2 trial(s) waiting up to 90 s", "1 CPU, 0.5 GPU", "no node of this cluster can host them now"], id="fixed-size"),
        pytest.param([Launch("gpu-a10g", 2, False)], ["the autoscaler is starting 2× gpu-a10g"], id="launching"),
        pytest.param([Launch("gpu-h100x8", 1, True, "InsufficientInstanceCapacity in us-east-1a")],
                     ["launches failed: gpu-h100x8: InsufficientInstanceCapacity"], id="capacity"),  # fmt: skip
        pytest.param([Launch("gpu-a10g", 1, True, "VcpuLimitExceeded")], ["VcpuLimitExceeded"], id="quota"),
        pytest.param([], ["starts nothing for them"], id="nothing-started"),
    ],
)
def test_waiting_message(launches, needles):
    text = waiting_message({"t1": 90.0, "t2": 61.0}, {"t1": "1 CPU, 0.5 GPU", "t2": "1 CPU, 0.5 GPU"}, launches)
    assert "\n" not in text
    for n in needles:
        assert n in text, (n, text)


def trial(tid, status):
    return SimpleNamespace(trial_id=tid, status=status, placement_group_factory=SimpleNamespace(required_resources={"CPU": 1, "GPU": 1}))


def test_callback_speaks_after_a_minute_and_clears(tmp_path):
    t, out = [0.0], io.StringIO()
    cb = WaitingCallback(str(tmp_path), out=out, clock=lambda: t[0], launches=lambda: [Launch("gpu-a10g", 1, False)])
    trials = [trial("a", "RUNNING"), trial("b", "PENDING")]
    for now in (0, 30, 59):  # under a minute: nothing said, nothing written
        t[0] = now
        cb.on_step(0, trials)
    assert out.getvalue() == "" and not (tmp_path / WAITING_FILE).exists()
    t[0] = 61
    cb.on_step(0, trials)
    assert "raydiff: 1 trial(s) waiting up to 61 s for resources (1 CPU, 1 GPU): the autoscaler is starting 1× gpu-a10g" in out.getvalue()
    assert json.loads((tmp_path / WAITING_FILE).read_text())["trials"] == ["b"]
    t[0] = 90
    cb.on_step(0, trials)
    assert out.getvalue().count("\n") == 1  # at most once a minute
    t[0] = 100
    cb.on_step(0, [trial("a", "RUNNING"), trial("b", "RUNNING")])  # it started: the hint goes
    assert not (tmp_path / WAITING_FILE).exists()


def test_callback_pickles_without_its_stream():
    import pickle

    cb = WaitingCallback("/tmp/x", out=io.StringIO())
    again = pickle.loads(pickle.dumps(cb))
    assert again.uri == "/tmp/x" and again.since == {}


def test_a_busy_fixed_size_cluster_queues_quietly(tmp_path):
    t, out = [100.0], io.StringIO()
    cb = WaitingCallback(str(tmp_path), out=out, clock=lambda: t[0], launches=lambda: None)
    cb.on_step(0, [trial("a", "RUNNING"), trial("b", "PENDING")])
    t[0] = 500
    cb.on_step(0, [trial("a", "RUNNING"), trial("b", "PENDING")])
    assert out.getvalue() == ""  # b waits its turn behind a
    cb.on_step(0, [trial("a", "TERMINATED"), trial("b", "PENDING")])
    assert "no node of this cluster can host them now" in out.getvalue()


def test_the_word_goes_when_the_sweep_ends(tmp_path):
    t, out = [0.0], io.StringIO()
    cb = WaitingCallback(str(tmp_path), out=out, clock=lambda: t[0], launches=lambda: [])
    cb.on_step(0, [trial("a", "PENDING")])
    t[0] = 70
    cb.on_step(0, [trial("a", "PENDING")])
    assert (tmp_path / WAITING_FILE).exists() and [p.name for p in tmp_path.iterdir()] == [WAITING_FILE]  # no temporary
    cb.on_experiment_end([trial("a", "TERMINATED")])  # stopped (Ctrl-C, a time limit) while it waited
    assert not (tmp_path / WAITING_FILE).exists()
