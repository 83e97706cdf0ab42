"""Bonnaire et al.'s space through real Ray at CPU size: the file's own settings (centred data,
B = min(n, 512), shuffled epochs, DDIM, the pixel ratio test as its onset definition), with only
sizes shrunk (8×8 digits written as an image folder, a small U-Net, Adam to reach onset in CI
time), every trial to onset with each τ column the space defines filled, then `raydiff analyze`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from raydiff import cli
from raydiff.config import packaged_search_space

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def bonnaire_cpu(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_digits

    tmp = tmp_path_factory.mktemp("bonnaire")
    images = tmp / "images"
    images.mkdir()
    for i, im in enumerate(load_digits().images[:200]):  # a few hundred images, written by the test
        Image.fromarray(np.rint(im * 255 / 16).astype(np.uint8), mode="L").save(images / f"{i:04d}.png")
    raw = yaml.safe_load(packaged_search_space("bonnaire2025").read_text())
    raw["sweep"].update(name="bonnaire_cpu", max_failures=0, resources={"cpu": 1, "gpu": 0})
    raw["sweep"].pop("resources_by")  # the GPU packing rules: this copy runs on CPUs
    for key in ("hf_name", "hf_config", "hf_revision", "split", "order", "image_column"):  # CelebA from a folder here
        raw["data"].pop(key)
    raw["data"].update(dataset="folder", root=str(images), image_size=8, n_test=64)
    raw["grid"] = {"data.n_train": [8, 12]}
    raw["model"] = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "emb_dim": 32, "dropout": 0.0}
    raw["train"].update(max_steps=3000, optimizer="adam", lr=5e-3)
    raw["diffusion"]["sample_steps"] = 10
    # the space's loop measures its ratio test alone; the loss probes too here, so analyze has two
    # recorded definitions to fit
    raw["eval"].update(num_samples=64, mem_sample_steps=10, every_steps=50, fid_every=0, fid_every_steps=None,
                       swd_samples=0, probe_images=16, measures=["pixel", "loss"])  # fmt: skip
    path = tmp / "bonnaire_cpu.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert cli.main(["sweep", str(path), "--storage", str(tmp / "store")]) == 0
    return raw, tmp / "store" / "bonnaire_cpu"


def test_every_trial_reaches_onset_with_its_definitions_filled(bonnaire_cpu):
    raw, root = bonnaire_cpu
    rows = sorted(pq.read_table(root / "trials.parquet").to_pylist(), key=lambda r: r["n_train"])
    assert [r["n_train"] for r in rows] == [8, 12]
    for r in rows:
        assert r["status"] == "memorized", r
        assert r["tau_mem_step"] is not None and r["tau_mem_step"] == r["tau_mem_pixel_step"]  # stop.on: [pixel]
        assert r["tau_mem_loss_step"] is not None  # the loss divergence is recorded beside it
        assert r["tau_mem_features_step"] is None and r["tau_mem_pixel_raw_step"] is None  # not measured (no EMA)
        assert r["batch_size"] == r["n_train"]  # B = min(n, 512)
        cfg = json.loads(r["config"])
        assert (cfg["data"]["normalization"], cfg["train"]["sampling"], cfg["diffusion"]["sampler"]) == ("centered", "epochs", "ddim")
        assert cfg["stop"]["on"] == ["pixel"] and cfg["eval"]["mem_ratio"] == pytest.approx(1 / 3)


def test_analyze_fits_each_recorded_definition(bonnaire_cpu, tmp_path, capsys):
    _, root = bonnaire_cpu
    assert cli.main(["analyze", str(root), "--out", str(tmp_path / "an"), "--boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "onset definitions recorded in trials.parquet" in out and "pixel ratio test" in out
    assert (tmp_path / "an" / "report.html").exists()
