"""`train(config, report)`: cadence, reported metrics, early stop, restore from a checkpoint."""

from __future__ import annotations

import io

import pytest
from tiny_trial import tiny
import torch

from raydiff.config import StopConfig
from raydiff.diffusion.ddpm import DDPM
from raydiff.training.schedule import eval_schedule
from raydiff.trial import train
from raydiff.metrics.stop import decide

CONTRACT_KEYS = {"step", "images_seen", "wall_s", "train_loss", "test_loss", "mem_frac", "mem_frac_lo", "mem_frac_hi", "fid"}
TRIAL_KEYS = {
    "params", "n_train", "batch_size", "lr", "budget_steps", "loss", "diverged", "tau_mem_step", "tau_mem_images",
    "tau_mem_seconds", "tau_mem_loss_step", "tau_prev_step", "stop_status", "stop_reason",
}  # fmt: skip


def snapshot(state_fn):
    """What the Ray trainable does: serialize the state now (training goes on mutating the tensors)."""
    buf = io.BytesIO()
    torch.save(state_fn(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


class Recorder:
    def __init__(self, stop_after: int | None = None):
        self.reports, self.states, self.stop_after = [], {}, stop_after

    def __call__(self, metrics, state_fn):
        self.reports.append(metrics)
        if state_fn is not None:
            self.states[metrics["step"]] = snapshot(state_fn)
        return self.stop_after is not None and len(self.reports) >= self.stop_after


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # as in a sweep: a trial runs on one CPU


@pytest.fixture(scope="module")
def full_run():
    cfg = tiny()
    rec = Recorder()
    last = train(cfg, rec)
    return cfg, rec, last


def test_reports_on_the_eval_schedule(full_run):
    cfg, rec, last = full_run
    assert [r["step"] for r in rec.reports] == [20, 40, 60] == eval_schedule(cfg, cfg.budget_steps)
    assert last is rec.reports[-1]
    assert [r["images_seen"] for r in rec.reports] == [320, 640, 960]
    walls = [r["wall_s"] for r in rec.reports]
    assert walls == sorted(walls) and walls[0] > 0


def test_reported_metrics(full_run):
    cfg, rec, _ = full_run
    for i, r in enumerate(rec.reports):
        missing = (CONTRACT_KEYS | TRIAL_KEYS) - set(r)
        assert not missing, missing
        # O(1) in the trial's length: no evaluation history in a report (the metrics rows hold it)
        assert not [k for k in r if k.startswith("history_")]
        assert r["tau_prev_step"] is None if r["tau_mem_step"] is None else r["tau_prev_step"] < r["tau_mem_step"]
        assert 0.0 <= r["mem_frac_lo"] <= r["mem_frac"] <= r["mem_frac_hi"] <= 1.0
        assert r["train_loss"] > 0 and r["test_loss"] > 0 and r["loss"] > 0
        assert r["fid"] is None  # fid_every: 0
        assert r["diverged"] is False
        assert r["budget_steps"] == 60 and r["n_train"] == 8 and r["batch_size"] == 16 and r["params"] > 0
    # training lowers the training loss on the fixed probe
    assert rec.reports[-1]["train_loss"] < rec.reports[0]["train_loss"]


def test_resume_from_state(full_run):
    cfg, rec, _ = full_run
    state = rec.states[20]
    assert state["step"] == 20 and [h["step"] for h in state["history"]] == [20]
    resumed = Recorder()
    train(cfg, resumed, state=state)
    assert [r["step"] for r in resumed.reports] == [40, 60]  # continues from step 20, not from 0
    assert [h["step"] for h in state["history"]] == [20]  # the history comes along in the state
    assert state["history"][0]["mem_frac"] == rec.reports[0]["mem_frac"]
    assert [r["tau_mem_step"] for r in resumed.reports] == [r["tau_mem_step"] for r in rec.reports[1:]]
    assert resumed.reports[0]["wall_s"] >= state["wall_s"]
    # model, optimizer, EMA and every RNG stream restored: the same run, evaluation for evaluation
    for a, b in zip(rec.reports[1:], resumed.reports):
        for k in ("train_loss", "test_loss", "mem_frac", "loss"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k


def test_returns_when_report_says_stop():
    rec = Recorder(stop_after=1)
    last = train(tiny(), rec)
    assert len(rec.reports) == 1 and last["step"] == 20


def test_onset_recorded_and_stopper_agrees(full_run):
    # with a threshold of "any memorized sample" and patience 1 the record and the stopper agree
    cfg, rec, _ = full_run
    for r in rec.reports:
        d = decide(r, cfg.stop)
        assert (r["tau_mem_step"] is not None) == (d is not None and d.status == "memorized")
        assert r["stop_status"] == (d.status if d else None)  # train() reports the very decision
        if r["tau_mem_step"] is not None:
            assert r["tau_mem_images"] == r["tau_mem_step"] * 16


def test_divergence_is_reported(monkeypatch):
    real = DDPM.loss
    calls = {"n": 0}

    def poisoned(self, net, x0, labels=None, **kw):  # the training loss turns NaN after 25 steps
        out = real(self, net, x0, labels, **kw)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > 25:
                return out * float("nan")
        return out

    monkeypatch.setattr(DDPM, "loss", poisoned)
    rec = Recorder()
    last = train(tiny(), rec)
    assert [r["step"] for r in rec.reports] == [20, 40]  # the NaN is caught at the next check (step 40)
    assert last["diverged"] is True and last["diverged_step"] == 40
    assert decide(last, StopConfig()).status == "diverged" == last["stop_status"]


@pytest.mark.parametrize(
    "eval_cfg, batch, budget, expected",
    [
        pytest.param({"every_steps": 20}, 16, 60, [20, 40, 60], id="uniform"),
        pytest.param({"every_steps": 20}, 16, 70, [20, 40, 60, 70], id="uniform-budget-off-grid"),
        pytest.param({"every_steps": 100}, 16, 60, [60], id="uniform-every-beyond-budget"),
        pytest.param({"every_steps": 20, "every_images": 64}, 16, 12, [4, 8, 12], id="every-images"),
        pytest.param({"every_steps": 10, "cadence": "geometric", "geometric_ratio": 2.0}, 16, 200,
                     [10, 20, 40, 80, 160, 200], id="geometric-doubling"),  # fmt: skip
        pytest.param({"every_steps": 10, "cadence": "geometric", "geometric_ratio": 1.05}, 16, 50,
                     [10, 20, 30, 40, 50], id="geometric-floor-at-every"),  # fmt: skip
    ],
)
def test_eval_schedule(eval_cfg, batch, budget, expected):
    cfg = tiny(eval=eval_cfg, train={"batch_size": batch})
    assert eval_schedule(cfg, budget) == expected


@pytest.mark.parametrize("knobs", [
    pytest.param({"train": {"batch_size": 5, "sampling": "epochs"}}, id="epochs-mid-epoch"),  # 100 images: 12.5 epochs
    pytest.param({"data": {"normalization": "centered"}, "train": {"batch_size": 32, "batch_rule": "min_n"}},
                 id="centered-min_n"),  # fmt: skip
])
def test_resume_with_the_papers_knobs(knobs):
    """Shuffled epochs restore mid-epoch to the same batches, centered data and B = min(N, cap)
    to the same run: a restored trial continues evaluation for evaluation."""
    cfg = tiny(**knobs)
    full = Recorder()
    train(cfg, full)
    resumed = Recorder()
    train(cfg, resumed, state=full.states[20])
    assert [r["step"] for r in resumed.reports] == [40, 60]
    for a, b in zip(full.reports[1:], resumed.reports):
        for k in ("train_loss", "test_loss", "mem_frac", "loss"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k
    if cfg.train.sampling == "epochs":
        assert 0 < full.states[20]["epoch_pos"] < 8  # the checkpoint was taken mid-epoch
    else:
        assert cfg.batch == 8 and full.reports[-1]["train_loss"] < full.reports[0]["train_loss"]


def test_default_knobs_draw_as_before(full_run):
    """The defaults (symmetric, fixed B, batches with replacement) keep today's run: the same RNG
    draws, so the same losses as the knobless loop would give."""
    cfg, _, _ = full_run
    assert (cfg.data.normalization, cfg.train.batch_rule, cfg.train.sampling) == ("symmetric", "fixed", "replacement")
    assert cfg.batch == cfg.train.batch_size == 16


GEOMETRIC = {"every_steps": 10, "cadence": "geometric", "geometric_ratio": 2.0}  # 10, 20, 40, 80, 160, 200


@pytest.mark.parametrize(
    "history, approach, expected",
    [
        pytest.param([(10, 0.0), (20, 0.0)], None, [40, 80, 160, 200], id="nothing-seen"),
        pytest.param([(10, 0.0), (20, 0.0), (40, 0.3)], None, [50, 80, 160, 200], id="crossed: confirm after the smallest gap"),
        pytest.param([(10, 0.0), (40, 0.3), (50, 0.4)], None, [80, 160, 200], id="confirmed: the schedule"),
        pytest.param([(10, 0.0), (40, 0.3), (50, 0.02)], None, [80, 160, 200], id="run broken: the schedule"),
        pytest.param([(10, 0.0), (20, 0.0), (40, 0.06)], 0.5, [50, 80, 160, 200], id="in sight"),
        pytest.param([(10, 0.0), (20, 0.0), (40, 0.06)], None, [80, 160, 200], id="in sight, approach off"),
        pytest.param([(10, 0.0), (20, 0.0), (40, 0.04)], 0.5, [80, 160, 200], id="not yet in sight"),
    ],
)
def test_upcoming_evaluations(history, approach, expected):
    from raydiff.training.schedule import upcoming_evaluations

    cfg = tiny(eval={**GEOMETRIC, "approach_fraction": approach}, train={"max_steps": 200}, stop={"mem_frac_threshold": 0.1, "patience": 2})
    rows = [{"step": s, "mem_frac": m} for s, m in history]
    assert upcoming_evaluations(cfg, history[-1][0], rows) == expected
    # a trial restored at that step (train() calls it with no schedule) and one that goes on
    # (with the rest of its schedule) evaluate at the same steps
    rest = [s for s in eval_schedule(cfg, cfg.budget_steps) if s > history[-1][0]]
    assert upcoming_evaluations(cfg, history[-1][0], rows, rest) == expected
