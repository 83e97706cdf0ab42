"""`raydiff.monitor.MemorizationMonitor`, the memorization test for anyone's training loop: copies
read 1, held-out images 0, the onset rule's patience, NaN samples, and the same answers as the
sweep's own evaluator on the same samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raydiff.config import DataConfig
from raydiff.data import load, to_model_range
from raydiff.monitor import MemorizationMonitor


@pytest.fixture(scope="module")
def digits():
    d = load(DataConfig(dataset="digits", n_train=64, n_test=256))
    return to_model_range(d.x_train), to_model_range(d.x_test)  # [64, 1, 8, 8] and [256, 1, 8, 8], disjoint


def test_copies_read_one_and_held_out_images_zero(digits):
    train, test = digits
    m = MemorizationMonitor(train)
    copies = m.evaluate(train[torch.arange(128) % 64], step=100)
    assert copies.f_mem == 1.0 and copies.interval[0] > 0.97 and copies.hi == 1.0
    assert np.array_equal(copies.nearest, np.arange(128) % 64) and (copies.ratio == 0).all()
    held_out = m.evaluate(test[:128], step=200)
    assert held_out.f_mem == 0.0 and held_out.lo == 0.0 and 0 < held_out.hi < 0.03  # 0/128: [0, 0.0284]


@pytest.mark.parametrize(
    "fracs, patience, onset, stops",
    [
        pytest.param([0.0, 0.0, 0.0], 2, None, [False, False, False], id="generalizing"),
        pytest.param([0.0, 0.5, 0.5], 2, 2, [False, False, True], id="confirmed at the second"),
        pytest.param([0.5, 0.0, 0.5], 2, None, [False, False, False], id="one noisy evaluation"),
        pytest.param([0.0, 0.5], 1, 2, [False, True], id="patience 1"),
        pytest.param([0.5, math.nan, 0.5, 0.5], 2, 3, [False, False, False, True], id="NaN samples break a run"),
    ],
)
def test_onset_rule_with_patience(digits, fracs, patience, onset, stops):
    train, test = digits
    m = MemorizationMonitor(train, patience=patience)
    seen = []
    for i, f in enumerate(fracs, start=1):
        k = 0 if math.isnan(f) else round(64 * f)
        samples = torch.cat([train[:k], test[: 64 - k]])
        if math.isnan(f):
            samples = samples.clone()
            samples[0, 0, 0, 0] = math.nan  # a diverged model's samples
        r = m.evaluate(samples, step=i)
        assert math.isnan(r.f_mem) if math.isnan(f) else r.f_mem == k / 64
        seen.append(r.stop)
    assert seen == stops and m.onset_step == onset


@pytest.mark.parametrize(
    "kwargs, call, message",
    [
        pytest.param({"threshold": 0.0}, None, "threshold", id="threshold"),
        pytest.param({"patience": 0}, None, "patience", id="patience"),
        pytest.param({}, lambda m, test: m.evaluate(test[:4, :, :4], 1), "shaped like train_images", id="shape"),
        pytest.param({}, lambda m, test: (m.evaluate(test[:4], 5), m.evaluate(test[:4], 5)), "steps must increase", id="steps"),
    ],
)
def test_misuse_is_one_clear_error(digits, kwargs, call, message):
    train, test = digits
    with pytest.raises(ValueError, match=message):
        m = MemorizationMonitor(train, **kwargs)
        call(m, test)


def test_feature_space_test_alongside(digits):
    train, test = digits
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731 - a stand-in embedding: the pixels
    m = MemorizationMonitor(train, embedding=flat, cosine=0.999)
    r = m.evaluate(torch.cat([train[:16], test[:48]]), step=1)
    assert r.f_mem == 0.25 and r.f_mem_features == 0.25 and r.features_interval[0] < 0.25 < r.features_interval[1]


def test_same_answers_as_the_sweeps_evaluator():
    """On the very samples a trial's evaluation generated, the monitor reads the trial's mem_frac,
    interval and nearest training images."""
    from tiny_trial import tiny

    from raydiff.data import load as load_data, to_model, train_mean
    from raydiff.diffusion import build_process
    from raydiff.evaluation import Evaluator
    from raydiff.models import build_network

    cfg = tiny(eval={"num_samples": 64, "save_samples": 64})
    data = load_data(cfg.data)
    torch.manual_seed(0)
    net = build_network(cfg.model, data.shape[0], data.shape[1])
    ev = Evaluator(cfg, data, build_process(cfg.diffusion), torch.device("cpu"))
    samples = torch.cat([data.x_train[:4], ev.sample(net, 60)])  # uint8: four copies among generated ones
    ev.sample = lambda net, n, steps=None, start=0, **kw: samples[start : start + n]
    ours = ev(net, 20, memorization_only=True)
    norm = (cfg.data.normalization, train_mean(cfg.data.normalization, data.x_train))
    r = MemorizationMonitor(to_model(data.x_train, *norm)).evaluate(to_model(samples, *norm), step=20)
    assert (r.f_mem, r.lo, r.hi) == (ours["mem_frac"], ours["mem_frac_lo"], ours["mem_frac_hi"]) and r.f_mem >= 4 / 64
    assert r.nearest.tolist() == ours["samples_nn_index"]
    assert np.allclose(r.ratio, ours["samples_nn_ratio"])


def test_reports_to_ray_tune_when_asked(digits, monkeypatch):
    from ray import tune

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, **kw: sent.append(metrics))
    train, test = digits
    m = MemorizationMonitor(train, report_to_tune=True)
    m.evaluate(train[:64], step=10)
    m.evaluate(train[:64], step=20)
    assert [(s["step"], s["mem_frac"], s["tau_mem_step"], s["memorized"]) for s in sent] == [(10, 1.0, None, False), (20, 1.0, 10, True)]
    MemorizationMonitor(train).evaluate(test[:8], step=1)
    assert len(sent) == 2  # not asked: nothing sent
