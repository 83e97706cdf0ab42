"""FID against the train and the test split, SWD beside it, and where the references come from:
clean-fid's precomputed CIFAR-10 statistics (pre-staged here, no network) or the data's images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydiff.config import search_space_from_dict
from raydiff.data import ImageData, cache_dir
from raydiff.diffusion import build_process
from raydiff.errors import UserError
from raydiff.evaluation import Evaluator
from raydiff.metrics import fid as fidlib
from raydiff.models.unet import UNet

D = 12  # feature width of the stand-in extractor


class StandInInception:
    """Named like clean-fid's Inception so the precomputed path is taken; 12 pooled pixel values."""

    name, mode = "inception_v3", "clean"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255.0, 2)  # [B, 3, 2, 2]
        return x.flatten(1).double().numpy()


class StandInOther(StandInInception):
    name = "some_classifier"


def stage(split: str, mu: float) -> None:
    path = cache_dir("fid_stats") / fidlib.cleanfid_stats_name("cifar10", 32, "clean", split)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=np.full(D, mu), sigma=np.eye(D) * 0.01)


def evaluator(monkeypatch, extractor, dataset="cifar10", **eval_kw):
    monkeypatch.setattr(fidlib, "build_extractor", lambda kind, ds, device, *options: extractor)
    space = search_space_from_dict({
        "data": {"dataset": dataset, "n_train": 20, "n_test": 30, **({} if dataset == "cifar10" else {"image_size": 32, "channels": 3})},
        "model": {"base_channels": 8, "channel_mults": [1], "emb_dim": 16},
        "diffusion": {"objective": "flow", "sample_steps": 2},
        "eval": {"num_samples": 4, "fid_every": 2, "fid_samples": 12, "swd_samples": 8, "swd_projections": 50,
                 "probe_images": 4, "probe_noise_levels": 2, "save_samples": 0, **eval_kw},
    })  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    data = ImageData(x(20), torch.zeros(20, dtype=torch.long), x(30), torch.zeros(30, dtype=torch.long), 0)
    return Evaluator(space.base, data, build_process(space.base.diffusion), torch.device("cpu"))


def net():
    return UNet(3, 32, base_channels=8, channel_mults=(1,), emb_dim=16)


def test_cifar10_uses_cleanfid_statistics_for_both_splits(monkeypatch):
    stage("train", 0.2)
    stage("test", 0.7)
    ev = evaluator(monkeypatch, StandInInception())
    assert ev.fid_refs["train"].count == 50_000 and ev.fid_refs["test"].count == 10_000
    assert np.allclose(ev.fid_refs["train"].mu, 0.2) and np.allclose(ev.fid_refs["test"].mu, 0.7)
    out = ev(net(), step=1)  # evaluation 0: an FID evaluation
    assert out["fid"] is not None and out["fid_train"] is not None and out["fid"] != out["fid_train"]
    assert out["fid_reference"] == (
        "test=cleanfid:cifar10_clean_test_32.npz;train=cleanfid:cifar10_clean_train_32.npz;swd=images:test[8]"
    )
    assert out["sliced_wasserstein"] > 0 and out["swd_samples"] == 8
    assert (out["fid_extractor"], out["fid_split"], out["fid_samples"]) == ("inception_v3/clean", "test", 12)
    skipped = ev(net(), step=2)  # fid_every 2: no FID, SWD or train FID here
    assert skipped["fid"] is None and skipped["fid_train"] is None and skipped["sliced_wasserstein"] is None


def test_other_data_or_extractor_use_the_images(monkeypatch):
    ev = evaluator(monkeypatch, StandInOther())  # cifar10, but not clean-fid's Inception
    assert ev.fid_reference == "test=images:test[30];train=images:train[20];swd=images:test[8]"
    ev = evaluator(monkeypatch, StandInInception(), dataset="gmm")
    assert ev.fid_refs["test"].count == 30 and ev.fid_refs["train"].count == 20
    ev = evaluator(monkeypatch, StandInInception(), fid_reference="images")  # forced
    assert ev.fid_refs["test"].count == 30
    out = ev(net(), step=1)
    assert out["fid"] is not None and out["fid_train"] is not None and out["sliced_wasserstein"] is not None


def test_fewer_sampler_steps_for_the_memorization_test(monkeypatch):
    ev = evaluator(monkeypatch, StandInOther(), mem_sample_steps=1)
    calls = []
    real = ev.sample
    ev.sample = lambda n_, n, steps=None, start=0, floats=False: calls.append((n, steps)) or real(n_, n, steps, start, floats)
    ev(net(), step=1)
    assert calls == [(4, 1), (12, None)]  # memorization set with 1 step, the FID set with the full count


def test_swd_off(monkeypatch):
    out = evaluator(monkeypatch, StandInOther(), swd_samples=0)(net(), step=1)
    assert out["sliced_wasserstein"] is None and out["fid"] is not None


def test_missing_statistics_without_network_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYDIFF_CACHE", str(tmp_path))  # an empty cache: nothing pre-staged
    monkeypatch.setattr(fidlib, "CLEANFID_STATS_URL", "http://127.0.0.1:9/stats")  # nothing listens
    with pytest.raises(UserError, match="could not fetch .*cifar10_clean_train_32.npz.*pre-stage"):
        fidlib.cleanfid_reference("cifar10", 32, "train")
