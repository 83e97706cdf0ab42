"""A CIFAR-10 archive in torchvision's on-disk format, written by the tests (no network).

torchvision reads `cifar-10-batches-py/` with pickle (encoding latin1, so str keys "data",
"labels"): five training batches, one test batch and batches.meta. It checks every file's md5
against the real archive's; `trust` points those checksums at the files written here, so the
real integrity check still runs (a file changed after writing would fail it).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write(path: Path, obj) -> str:
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(root: Path, per_batch: int = 40, n_test: int = 100, seed: int = 0) -> dict:
    """Random uint8 images; returns {"train": [5·per_batch, 3, 32, 32], "train_labels", "test", ...}
    and the md5 of each file under "md5"."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    train, train_labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # rows: R(1024) G(1024) B(1024)
        labels = rng.integers(0, 10, per_batch).tolist()
        md5[f"data_batch_{i}"] = _write(folder / f"data_batch_{i}", {"data": data, "labels": labels, "batch_label": f"training batch {i} of 5"})
        train.append(data)
        train_labels += labels
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_labels = rng.integers(0, 10, n_test).tolist()
    md5["test_batch"] = _write(folder / "test_batch", {"data": test, "labels": test_labels, "batch_label": "testing batch 1 of 1"})
    md5["batches.meta"] = _write(folder / "batches.meta", {"label_names": LABELS, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return {
        "train": np.concatenate(train).reshape(-1, 3, 32, 32),
        "train_labels": np.array(train_labels),
        "test": test.reshape(-1, 3, 32, 32),
        "test_labels": np.array(test_labels),
        "md5": md5,
    }


def trust(monkeypatch, md5: dict) -> None:
    """Make torchvision's CIFAR10 expect the checksums of the archive written here."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
