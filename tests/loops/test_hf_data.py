"""`data.dataset: hf` on datasets the tests write (no network): the hub's code path on a local
copy laid out as a hub repository, load_from_disk, the order that makes "the first N", the
preprocessing against images whose answer is known, the preflight's checks, and Bonnaire's
space: its dry run warns where the data is not here, a sweep here refuses."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import yaml
from hf_local import write_hub_copy

from raydiff import data
from raydiff.cli import main
from raydiff.config import ConfigError, experiment_from_dict, packaged_search_space, search_space_from_dict
from raydiff.errors import DataUnavailable
from raydiff.preflight import check_dataset, preflight

pytestmark = pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="needs the datasets package (pip install -e \".[hf]\")")


def flat(value: int, h: int = 6, w: int = 4) -> np.ndarray:
    """An RGB image of one gray value: any resize, crop or grayscale keeps it."""
    return np.full((h, w, 3), value, dtype=np.uint8)


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory):
    """CelebA's layout in miniature: splits train (10), valid (3), test (4) of one subset; image i
    (across the splits, in order) is flat at gray 10·i."""
    root = tmp_path_factory.mktemp("hub-copy")
    images = [flat(10 * i) for i in range(17)]
    return write_hub_copy(root, {"train": images[:10], "valid": images[10:13], "test": images[13:]})


def hf_cfg(root, **data_keys):
    keys = {"dataset": "hf", "hf_name": str(root), "hf_config": "faces", "split": "train+valid+test",
            "n_train": 5, "n_test": 4, "image_size": 4, "channels": 1, **data_keys}  # fmt: skip
    return experiment_from_dict({"data": keys}).validate().data


def grays(x: torch.Tensor) -> list[int]:
    """Each image's one gray value (uint8 [n, 1, H, W], each flat)."""
    assert all(int(im.min()) == int(im.max()) for im in x), "an image is not flat"
    return [int(im[0, 0, 0]) for im in x]


@pytest.mark.parametrize(
    "keys, train, held_out",
    [
        pytest.param({}, [0, 10, 20, 30, 40], [130, 140, 150, 160], id="rows-first-n-last-n_test"),
        pytest.param({"split": "valid+test", "n_train": 2, "n_test": 2}, [100, 110], [150, 160], id="splits-concatenated"),
        pytest.param({"test_split": "test", "split": "train", "n_test": 2}, [0, 10, 20, 30, 40], [130, 140], id="test-split"),
        pytest.param({"order": "sorted", "order_column": "label", "n_train": 6, "n_test": 2},
                     [0, 30, 60, 90, 120, 150], [110, 140], id="sorted-by-column-stable"),
    ],
)  # fmt: skip
def test_the_first_n_in_the_configured_order(hub_copy, keys, train, held_out):
    d = data.load(hf_cfg(hub_copy, **keys))
    assert d.x_train.shape == (len(train), 1, 4, 4) and d.x_train.dtype == torch.uint8
    assert grays(d.x_train) == train and grays(d.x_test) == held_out


def test_shuffled_order_follows_the_seed(hub_copy):
    a, b, c = (data.load(hf_cfg(hub_copy, order="shuffled", seed=s, n_train=8, n_test=2)) for s in (0, 0, 1))
    assert grays(a.x_train) == grays(b.x_train) != grays(c.x_train)
    assert sorted(grays(a.x_train) + grays(a.x_test)) != grays(a.x_train) + grays(a.x_test)  # not the stored order
    assert len(set(grays(a.x_train) + grays(a.x_test))) == 10  # ten different rows


def test_labels_and_class_conditioning(hub_copy):
    d = data.load(hf_cfg(hub_copy, label_column="label", label_classes=3, class_conditional=True))
    assert d.y_train.tolist() == [0, 1, 2, 0, 1] and d.num_classes == 3  # label = index mod 3
    assert d.y_test.tolist() == [13 % 3, 14 % 3, 15 % 3, 16 % 3]
    with pytest.raises(ConfigError, match="data.label_classes: .*outside 0..1"):
        data.load(hf_cfg(hub_copy, label_column="label", label_classes=2, class_conditional=True))


def test_save_to_disk_loads_the_same_rows(hub_copy, tmp_path):
    import datasets

    dd = datasets.DatasetDict({s: datasets.load_dataset(str(hub_copy), "faces", split=s) for s in ("train", "valid", "test")})
    dd.save_to_disk(str(tmp_path / "saved"))
    from_hub_path = data.load(hf_cfg(hub_copy))
    from_disk = data.load(hf_cfg(tmp_path / "saved", hf_config=None))
    assert torch.equal(from_hub_path.x_train, from_disk.x_train) and torch.equal(from_hub_path.x_test, from_disk.x_test)
    with pytest.raises(ConfigError, match="data.split: .* has no split 'val'"):
        data.load(hf_cfg(tmp_path / "saved", hf_config=None, split="train+val"))


def portrait() -> np.ndarray:
    """60 × 20 RGB: a red band (rows 0-14), colour (100, 150, 200) (rows 15-44), a blue band."""
    im = np.zeros((60, 20, 3), dtype=np.uint8)
    im[:15] = (255, 0, 0)
    im[15:45] = (100, 150, 200)
    im[45:] = (0, 0, 255)
    return im


@pytest.mark.parametrize("channels, centre", [(1, [141]), (3, [100, 150, 200])])  # 0.299·100 + 0.587·150 + 0.114·200 = 140.75
def test_centre_crop_keeps_the_middle_square(channels, centre):
    from PIL import Image

    im = Image.fromarray(portrait())
    # Bonnaire's loader: shorter side 20 → 10 (the image 30 × 10), the centre 10 × 10 = rows 20-39, inside the colour band
    out = data.to_square(im, 10, channels, "center")
    assert out.shape == (10, 10, channels) and out.dtype == np.uint8
    assert (out.reshape(-1, channels) == np.array(centre, dtype=np.uint8)).all()
    squeezed = data.to_square(im, 10, channels, "none")  # the whole 60 × 20 squeezed to 10 × 10: the bands stay
    assert squeezed.shape == (10, 10, channels) and not (squeezed.reshape(-1, channels) == centre).all(axis=1)[[0, -1]].any()


def test_folder_gains_the_centre_crop(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(portrait()).save(tmp_path / f"{i:02d}.png")
    raw = {"dataset": "folder", "root": str(tmp_path), "n_train": 2, "n_test": 1, "image_size": 10, "channels": 1}
    cropped = data.load(experiment_from_dict({"data": {**raw, "crop": "center"}}).validate().data)
    assert grays(cropped.x_train) == [141, 141]
    squeezed = data.load(experiment_from_dict({"data": raw}).validate().data)  # crop: none, as before
    assert int(squeezed.x_train[0, 0, 0, 0]) == 76  # 0.299 · 255: the red band stays at the top


@pytest.mark.parametrize(
    "keys, match",
    [
        pytest.param({"n_train": 14}, "data.n_train: .* has 17 rows: n_train \\+ n_test must be ≤ 17", id="too-few-rows"),
        pytest.param({"split": "train+validation"}, "data.split: .* has no split 'validation'", id="no-split"),
        pytest.param({"image_column": "img"}, "data.image_column: .* has no column 'img'", id="no-image-column"),
        pytest.param({"order": "sorted", "order_column": "name"}, "data.order_column: .* has no column 'name'", id="no-order-column"),
        pytest.param({"test_split": "test", "n_test": 5}, "data.n_test: split 'test' .* has 4 rows", id="small-test-split"),
    ],
)  # fmt: skip
def test_preflight_checks_the_dataset(hub_copy, keys, match):
    with pytest.raises(ConfigError, match=match):
        check_dataset(hf_cfg(hub_copy, **keys))


@pytest.mark.parametrize(
    "keys, match",
    [
        pytest.param({"dataset": "hf"}, "data.hf_name: the hf dataset needs a name", id="no-name"),
        pytest.param({"dataset": "hf", "hf_name": "a/b", "hf_revision": "main"}, "data.hf_revision: must be a commit", id="branch-not-commit"),
        pytest.param({"dataset": "hf", "hf_name": "a/b", "order": "sorted"}, "data.order_column: order: sorted needs", id="sorted-no-column"),
        pytest.param({"dataset": "hf", "hf_name": "a/b", "crop": "middle"}, "data.crop: must be one of none, center", id="crop-choice"),
        pytest.param({"dataset": "hf", "hf_name": "a/b", "class_conditional": True}, "data.class_conditional: .* needs label_column", id="labels-needed"),
        pytest.param({"dataset": "digits", "hf_name": "a/b"}, "data.hf_name: belongs to dataset: hf", id="hf-key-elsewhere"),
        pytest.param({"dataset": "cifar10", "crop": "center"}, "data.crop: crops folder and hf images", id="crop-elsewhere"),
    ],
)  # fmt: skip
def test_config_values(keys, match):
    with pytest.raises(ConfigError, match=match):
        experiment_from_dict({"data": keys}).validate()


def test_the_dataset_is_recorded_in_the_config():
    cfg = search_space_from_dict(yaml.safe_load(packaged_search_space("bonnaire2025").read_text())).base
    recorded = cfg.to_dict()["data"]  # what trials.parquet's config column holds
    assert recorded["hf_name"] == "flwrlabs/celeba" and recorded["hf_revision"] == "2d738f56e0e7f925ea36ae7c808ea925264aacec"
    assert (recorded["split"], recorded["order"], recorded["crop"], recorded["channels"]) == ("train+valid+test", "rows", "center", 1)


def test_a_hub_dataset_not_here_is_unavailable():
    cfg = hf_cfg("nobody-here/no-such-dataset", hf_config=None)  # offline, nothing cached
    with pytest.raises(DataUnavailable, match="data.hf_name: cannot open nobody-here/no-such-dataset"):
        check_dataset(cfg)
    with pytest.raises(DataUnavailable, match="data.hf_name: cannot open"):
        data.load(cfg)


def test_bonnaire_dry_run_warns_and_prints_its_plan(capsys, tmp_path):
    """No CelebA on this machine (and no network): the plan still prints, with a warning naming
    what the nodes need; with --cluster the warning drops the 'would refuse here'."""
    assert main(["sweep", "bonnaire2025", "--dry-run", "--storage", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "45 trials (grid mode)" in out and len([ln for ln in out.splitlines() if " hf " in ln]) == 45
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydiff: warning: data.hf_name: cannot open flwrlabs/celeba")
    assert "the nodes that run the trials need flwrlabs/celeba [img_align+identity+attr]@2d738f5" in lines[0]
    assert "34816+ images" in lines[0] and "would refuse" in lines[0]  # 32,768 + 2,048
    assert main(["sweep", "bonnaire2025", "--dry-run", "--cluster", "cluster/aws.yaml", "--storage", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "trials at once" in out and err.count("\n") == 1 and "would refuse" not in err
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_bonnaire_sweep_here_refuses_at_once(capsys, tmp_path):
    assert main(["sweep", "bonnaire2025", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raydiff: error: ") and "cannot open flwrlabs/celeba" in err
    assert not any(tmp_path.iterdir())


def test_folder_dry_run_for_a_cluster_warns(capsys, tmp_path):
    raw = yaml.safe_load(packaged_search_space("smoke").read_text())
    raw["data"] = {"dataset": "folder", "root": "/nodes-only/images", "n_train": 8, "n_test": 8, "image_size": 8}
    raw.pop("grid", None)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(path), "--dry-run", "--storage", "s3://bucket/sweeps"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == ("raydiff: warning: data.root: no such folder: /nodes-only/images; the nodes that run the trials need"
                   " the folder /nodes-only/images at that path (16+ images)")  # fmt: skip
    with pytest.raises(DataUnavailable):
        preflight(search_space_from_dict(raw))


def test_bonnaire_space_runs_on_a_local_copy(hub_copy, tmp_path):
    """The space as shipped, its dataset pointed at the local copy: preflight passes and a trial's
    data are 32×32 gray, centred on the training mean."""
    raw = yaml.safe_load(packaged_search_space("bonnaire2025").read_text())
    raw["data"].update(hf_name=str(hub_copy), hf_config="faces", n_test=4)
    raw["grid"] = {"data.n_train": [8, 12], "model.preset": ["bonnaire-w8"]}
    space = search_space_from_dict(raw)
    preflight(space)
    d = data.load(space.experiments()[1].data)
    assert d.x_train.shape == (12, 1, 32, 32) and grays(d.x_test) == [130, 140, 150, 160]


def test_prestage_fills_the_datasets_cache(tmp_path, capsys):
    """`raydiff prestage` on a space with an hf dataset: its rows land in the `datasets` cache
    (HF_HOME, the test's own), so trials on this node read them from there."""
    import os
    from pathlib import Path

    import uuid

    # a name no earlier run used: the cache is keyed by it, and HF_HOME may outlive a run
    copy = write_hub_copy(tmp_path / f"copy-{uuid.uuid4().hex[:8]}", {"train": [flat(v) for v in range(0, 200, 10)]})
    raw = yaml.safe_load(packaged_search_space("smoke").read_text())
    raw["data"] = {"dataset": "hf", "hf_name": str(copy), "hf_config": "faces", "n_test": 4, "image_size": 8,
                   "channels": 1, "crop": "center"}  # fmt: skip
    raw["eval"]["fid_every"] = 0
    path = tmp_path / "hf_space.yaml"
    path.write_text(yaml.safe_dump(raw))
    cache = Path(os.environ["HF_HOME"]) / "datasets"
    before = set(cache.rglob("*.arrow")) if cache.exists() else set()
    assert main(["prestage", str(path)]) == 0
    assert "raydiff: prestaged hf_space" in capsys.readouterr().out
    assert set(cache.rglob("*.arrow")) - before, "prestage put nothing into the datasets cache"
