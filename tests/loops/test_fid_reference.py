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
        "test=cleanfid:cifar10_clean_test_32.npz;train=cleanfid:cifar10_clean_train_32.npz;swd=images:test[8];swd_train=images:train[8]"
    )
    assert out["sliced_wasserstein"] > 0 and out["swd_samples"] == 8
    assert out["sliced_wasserstein_train"] > 0 and out["swd_train_samples"] == 8
    assert (out["fid_extractor"], out["fid_split"], out["fid_samples"]) == ("inception_v3/clean", "test", 12)
    skipped = ev(net(), step=2)  # fid_every 2: no FID, SWD or train FID here
    assert skipped["fid"] is None and skipped["fid_train"] is None and skipped["sliced_wasserstein"] is None


def test_other_data_or_extractor_use_the_images(monkeypatch):
    ev = evaluator(monkeypatch, StandInOther())  # cifar10, but not clean-fid's Inception
    assert ev.fid_reference == "test=images:test[30];train=images:train[20];swd=images:test[8];swd_train=images:train[8]"
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


class Recorder(StandInOther):
    """Counts the images it embeds."""

    def __init__(self):
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return super().__call__(images)


class DictCache:
    def __init__(self):
        self.kept = {}

    def get(self, key):
        return self.kept.get(key)

    def put(self, key, ref):
        self.kept[key] = ref


def splits_evaluator(monkeypatch, extractor, cache=None, n_train=20, n_test=30):
    """eval.fid_reference: splits (Marion & Wu) on data whose images are known."""
    monkeypatch.setattr(fidlib, "build_extractor", lambda kind, ds, device, *options: extractor)
    space = search_space_from_dict({
        "data": {"dataset": "cifar10", "n_train": n_train, "n_test": n_test},
        "model": {"base_channels": 8, "channel_mults": [1], "emb_dim": 16},
        "diffusion": {"objective": "flow", "sample_steps": 2},
        "eval": {"num_samples": 4, "fid_every": 1, "fid_samples": 12, "fid_reference": "splits", "swd_samples": 8,
                 "swd_projections": 50, "probe_images": 4, "probe_noise_levels": 2, "save_samples": 0},
    })  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    dark, bright = x(n_train) // 2, x(n_test) // 2 + 128  # two splits whose features differ
    data = ImageData(dark, torch.zeros(n_train, dtype=torch.long), bright, torch.zeros(n_test, dtype=torch.long), 0)
    ev = Evaluator(space.base, data, build_process(space.base.diffusion), torch.device("cpu"), cache=cache)
    return space.base, data, ev


def test_splits_compare_each_split_with_its_own_images_at_its_own_count(monkeypatch):
    stage("train", 0.2)
    stage("test", 0.7)  # pre-staged clean-fid statistics exist: splits ignores them
    cfg, data, ev = splits_evaluator(monkeypatch, StandInInception())
    assert cfg.fid_counts == {"test": 30, "train": 20} and cfg.figure_samples == 30
    assert ev.fid_refs["test"].count == 30 and ev.fid_refs["train"].count == 20
    assert ev.fid_reference.startswith("test=images:test[30];train=images:train[20]")
    # samples that are the test images: FID to test is 0 (the first 30); samples whose first 20 are
    # the training images: FID to train is 0 (the first 20, whatever follows them)
    from raydiff.evaluation import MeasureContext

    as_test = MeasureContext(ev, net(), data.x_test).frechet()
    assert as_test["fid"] == pytest.approx(0.0, abs=1e-6) and as_test["fid_samples"] == 30
    as_train = MeasureContext(ev, net(), torch.cat([data.x_train, data.x_test[:10]])).frechet()
    assert as_train["fid_train"] == pytest.approx(0.0, abs=1e-6) and as_train["fid_train_samples"] == 20
    assert as_train["fid"] > 0.01 and as_test["fid_train"] > 0.01
    swd = MeasureContext(ev, net(), data.x_train).sliced_wasserstein()
    assert swd["sliced_wasserstein_train"] == pytest.approx(0.0, abs=1e-9) and swd["sliced_wasserstein"] > 0
    assert (swd["swd_samples"], swd["swd_train_samples"]) == (8, 8)
    out = ev(net(), step=1)  # an evaluation draws the largest count once
    assert (out["fid_samples"], out["fid_train_samples"]) == (30, 20)


def test_splits_keep_a_rank_deficient_training_reference_and_say_so(monkeypatch):
    _, _, ev = splits_evaluator(monkeypatch, StandInOther(), n_train=10)  # 10 images, 12 feature dims
    assert ev.fid_refs["train"].count == 10
    assert "train=images:train[10] (rank ≤ 9 < 12 feature dims)" in ev.fid_reference
    out = ev(net(), step=1)
    assert out["fid_train"] is not None and np.isfinite(out["fid_train"])


def test_reference_features_are_extracted_once_per_trial(monkeypatch):
    cache, first = DictCache(), Recorder()
    StandInOther.dim = 12
    try:
        _, _, ev1 = splits_evaluator(monkeypatch, first, cache)
        assert first.seen == 30 + 20  # each split's images once (SWD's points are their first 8)
        again = Recorder()
        _, _, ev2 = splits_evaluator(monkeypatch, again, cache)  # another measure task of the trial
        assert again.seen == 0 and ev2.fid_reference == ev1.fid_reference
        for split in ("test", "train"):
            assert np.array_equal(ev1.fid_refs[split].sigma, ev2.fid_refs[split].sigma)
            assert np.array_equal(ev1.swd_refs[split], ev2.swd_refs[split])
    finally:
        del StandInOther.dim


def test_the_snapshot_folder_keeps_the_references(tmp_path):
    from raydiff.metrics.fid import Reference, Stats
    from raydiff.snapshots import ReferenceCache, SnapshotStore

    cache = ReferenceCache(SnapshotStore(str(tmp_path / "sweep"), "t0"))
    assert cache.get("k") is None
    feats = np.random.default_rng(0).normal(size=(9, 4))
    cache.put("k", Reference(Stats.of(feats), feats[:3]))
    cache.put("p", Reference(None, feats[:2]))
    got = ReferenceCache(SnapshotStore(str(tmp_path / "sweep"), "t0")).get("k")
    assert got.stats.count == 9 and np.allclose(got.stats.sigma, np.cov(feats, rowvar=False)) and np.array_equal(got.points, feats[:3])
    assert cache.get("p").stats is None and SnapshotStore(str(tmp_path / "sweep"), "t0").steps() == []
    # a file that is not a whole reference is a miss (extracted and written again), never a traceback
    folder = tmp_path / "sweep" / "snapshots" / "t0" / "references"
    (folder / "bad.npz").write_bytes(b"not a zip")
    np.savez(folder / "partial.npz", mu=np.zeros(3))  # no points
    assert cache.get("bad") is None and cache.get("partial") is None


def test_a_reference_extracted_by_other_weights_is_not_reused():
    from raydiff.metrics.fid import reference_key

    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    a, b = StandInOther(), StandInOther()
    b.fingerprint = "0123456789ab"  # another node's own copy of a trained feature network
    assert reference_key(a, "fp32", "test", images, True, 4) != reference_key(b, "fp32", "test", images, True, 4)
    assert reference_key(a, "fp32", "test", images, True, 4) != reference_key(a, "bf16", "test", images, True, 4)
    assert reference_key(a, "fp32", "test", images, True, 4) != reference_key(a, "fp32", "test", images, False, 4)
    assert reference_key(a, "fp32", "test", images, True, 4) != reference_key(a, "fp32", "test", images + 1, True, 4)


def test_rank_deficient_covariances_on_the_cpu_fall_back_to_the_eigen_form(monkeypatch):
    """clean-fid refuses (ValueError) where sqrtm of a singular product keeps an imaginary part;
    the distance then comes from the symmetric eigen-decomposition, the same trace."""
    import cleanfid.fid

    rng = np.random.default_rng(0)
    a, b = fidlib.Stats.of(rng.normal(size=(5, 12))), fidlib.Stats.of(rng.normal(size=(6, 12)) + 0.5)
    expected = fidlib.frechet(a, b)  # clean-fid's own value where it gives one

    def refuse(*args, **kw):
        raise ValueError("Imaginary component 0.01")

    monkeypatch.setattr(cleanfid.fid, "frechet_distance", refuse)
    assert fidlib.frechet(a, b) == pytest.approx(expected, rel=1e-6)
