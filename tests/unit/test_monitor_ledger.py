"""MemorizationMonitor's ledger: planted exact and near copies among held-out digits name exactly
the copied training images, their first steps and counts, by the pixel test and by a registered
cosine test run through the registry; misuse is a ValueError."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from raydiff.config import DataConfig
from raydiff.data import load, to_model_range
from raydiff.monitor import MemorizationMonitor


def pixels(x: torch.Tensor) -> torch.Tensor:  # a "feature network": the pixels themselves
    return x.reshape(len(x), -1)


def test_monitor_ledger_names_the_planted_copies():
    d = load(DataConfig(dataset="digits", n_train=64, n_test=256))
    train, test = to_model_range(d.x_train), to_model_range(d.x_test)
    m = MemorizationMonitor(train, tests=("dinov2",), networks={"dinov2": pixels}, thresholds={"dinov2": 0.999})
    g = torch.Generator().manual_seed(0)
    near = lambda i: train[i] + 0.01 * torch.randn(train[i].shape, generator=g)  # noqa: E731
    plan = {10: [], 20: [train[3], train[7], near(7)], 30: [train[3], train[11], near(20)]}
    for step, copies in plan.items():
        fresh = test[step : step + 16 - len(copies)]
        m.evaluate(torch.stack([*copies, *fresh]), step)
    want = pd.DataFrame({"image": [3, 7, 11, 20], "first_step": [20, 20, 30, 30], "copies": [2, 2, 1, 1]})
    for t in ("pixel", "dinov2"):
        pd.testing.assert_frame_equal(m.ledger(t), want, check_dtype=False)
    assert list(m.ledger().dtypes) == ["int64"] * 3


def test_monitor_ledger_misuse():
    train = torch.zeros(4, 1, 2, 2)
    train[1:] += torch.arange(1, 4).view(3, 1, 1, 1)
    with pytest.raises(ValueError, match="unknown memorization test"):
        MemorizationMonitor(train, tests=("sift",))
    with pytest.raises(ValueError, match="needs a feature network 'clip'"):
        MemorizationMonitor(train, tests=("clip",))
    with pytest.raises(ValueError, match="no test 'clip'"):
        MemorizationMonitor(train).ledger("clip")
    assert MemorizationMonitor(train).ledger().empty
