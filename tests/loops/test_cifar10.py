"""The real `cifar10` loader on a CIFAR-10 archive the test writes in torchvision's format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cifar_archive import trust, write_cifar10

from raydiff.config import DataConfig
from raydiff.data import load
from raydiff.errors import UserError


@pytest.fixture
def archive(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, per_batch=40, n_test=100)
    trust(monkeypatch, written["md5"])
    return tmp_path, written


def test_first_n_and_the_fixed_test_subset(archive):
    root, written = archive
    # 64 crosses the boundary between data_batch_1 (40 images) and data_batch_2
    data = load(DataConfig(dataset="cifar10", root=str(root), download=False, n_train=64, n_test=30, class_conditional=True))
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (64, 3, 32, 32)
    assert np.array_equal(data.x_train.numpy(), written["train"][:64])
    assert np.array_equal(data.y_train.numpy(), written["train_labels"][:64])
    assert data.x_test.shape == (30, 3, 32, 32)
    assert np.array_equal(data.x_test.numpy(), written["test"][:30])
    assert np.array_equal(data.y_test.numpy(), written["test_labels"][:30])
    assert data.num_classes == 10


def test_growing_n_extends_the_same_prefix(archive):
    root, _ = archive
    small = load(DataConfig(dataset="cifar10", root=str(root), download=False, n_train=50, n_test=20))
    large = load(DataConfig(dataset="cifar10", root=str(root), download=False, n_train=200, n_test=20))
    assert torch.equal(large.x_train[:50], small.x_train)
    assert torch.equal(large.x_test, small.x_test)  # the held-out set does not move with N
    assert small.num_classes == 0  # class_conditional off: labels are not used


def test_corrupted_archive_is_a_user_error(archive):
    root, _ = archive
    with open(root / "cifar-10-batches-py" / "data_batch_3", "ab") as f:
        f.write(b"x")  # md5 no longer matches
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        load(DataConfig(dataset="cifar10", root=str(root), download=False, n_train=8, n_test=8))


def test_missing_archive_without_download_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        load(DataConfig(dataset="cifar10", root=str(tmp_path), download=False, n_train=8, n_test=8))
