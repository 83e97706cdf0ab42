"""FID through clean-fid's Fréchet distance with the digits-classifier features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydiff.config import DataConfig
from raydiff.data import load
from raydiff.metrics.fid import DigitsClassifierFeatures, Stats, batched_features, build_extractor, digits_classifier_path, frechet


@pytest.fixture(scope="module")
def features():
    # trained once into the session's cache (on one thread, as in a trial), then loaded
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return DigitsClassifierFeatures("cpu")
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    d = load(DataConfig(dataset="digits", n_train=768, n_test=768))
    return d.x_train, d.x_test  # uint8 [768, 1, 8, 8], disjoint


def test_train_vs_test_far_below_data_vs_noise(features, digits):
    train, test = digits
    noise = torch.randint(0, 256, train.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    s_train = Stats.of(batched_features(features, train, batch=200))
    s_test = Stats.of(batched_features(features, test, batch=200))
    s_noise = Stats.of(batched_features(features, noise, batch=200))
    fid_tt, fid_tn = frechet(s_train, s_test), frechet(s_train, s_noise)
    assert 0 <= fid_tt < fid_tn / 10, (fid_tt, fid_tn)
    assert frechet(s_test, s_noise) > 10 * fid_tt


def test_frechet_of_identical_stats_is_zero(features, digits):
    train, _ = digits
    s = Stats.of(batched_features(features, train))
    assert s.mu.shape == (128,) and s.sigma.shape == (128, 128) and s.count == len(train)
    assert frechet(s, s) == pytest.approx(0.0, abs=1e-6)


def test_frechet_of_gaussians_matches_closed_form():
    # same covariance: FID = ‖μ₁ − μ₂‖²; isotropic σ₁²I vs σ₂²I in d dims: d·(σ₁ − σ₂)²
    rng = np.random.default_rng(0)
    d = 4
    a = Stats(np.zeros(d), np.eye(d), 100)
    b = Stats(np.full(d, 0.5), np.eye(d), 100)
    c = Stats(np.zeros(d), 4.0 * np.eye(d), 100)
    assert frechet(a, b) == pytest.approx(d * 0.25, rel=1e-6)
    assert frechet(a, c) == pytest.approx(d * (1.0 - 2.0) ** 2, rel=1e-6)
    x = rng.normal(size=(5000, d))
    assert frechet(Stats.of(x), Stats.of(x + 1.0)) == pytest.approx(d, rel=1e-6)


def test_classifier_is_cached_and_accurate(features, digits):
    assert digits_classifier_path().exists()
    again = build_extractor("auto", "digits", "cpu")  # loads the cached weights
    _, test = digits
    assert np.array_equal(again(test[:32]), features(test[:32]))
    # the embedding separates the classes: its head classifies held-out digits well
    d = load(DataConfig(dataset="digits", n_train=8, n_test=512))
    with torch.no_grad():
        logits = features.net(d.x_test.float().div(127.5).sub(1.0))
    assert float((logits.argmax(1) == d.y_test).float().mean()) > 0.9
