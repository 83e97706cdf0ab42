"""Feature-space memorization (Marion & Wu): a TorchScript embedding loaded from a path or URL,
SSCD's preprocessing, and mem_frac = 1.0 on copies of training images. The stand-in embedding
is a tiny scripted net the test writes itself (no SSCD weights, no network)."""

from __future__ import annotations

import functools
import http.server
import threading
import warnings

import pytest
import torch
from torch import nn

from raydiff.config import ConfigError, ExperimentConfig, search_space_from_dict
from raydiff.data import ImageData, cache_dir
from raydiff.diffusion import build_process
from raydiff.errors import UserError
from raydiff.evaluation import Evaluator
from raydiff.metrics.embedding import IMAGENET_MEAN, IMAGENET_STD, SSCD_IMAGE_SIZE, load_embedding
from raydiff.metrics.memorization import memorized_cosine
from raydiff.models.unet import UNet
from raydiff.preflight import preflight


class CenteredPool(nn.Module):
    """[B, 3, S, S] → [B, 192]: 8×8 average-pooled pixels, centred per image, so unrelated random
    images have cosine similarity near 0 and identical ones exactly 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return z - z.mean(dim=1, keepdim=True)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "standin.torchscript.pt"
    with warnings.catch_warnings():  # torch ≥ 2.10 marks jit deprecated; SSCD is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(CenteredPool()).save(str(path))
    return path


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_preprocessing_is_sscd_s(model_path):
    emb = load_embedding(str(model_path), "cpu")
    white = torch.full((2, 1, 32, 32), 255, dtype=torch.uint8)  # gray: repeated to RGB
    x = emb.preprocess(white)
    assert x.shape == (2, 3, SSCD_IMAGE_SIZE, SSCD_IMAGE_SIZE)
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert x[0, :, 100, 100].tolist() == pytest.approx(expected, rel=1e-5)


def test_embedding_memorization_is_one_on_copies_and_low_on_held_out(model_path):
    emb = load_embedding(str(model_path), "cpu")
    train, held_out = images(40, 0), images(40, 1)
    train_emb = emb(train)
    assert train_emb.shape == (40, 192) and train_emb.dtype == torch.float32
    copies, _ = memorized_cosine(emb(train[torch.randperm(40)[:16]]), train_emb, 0.6)
    assert copies.float().mean() == 1.0
    fresh, best = memorized_cosine(emb(held_out), train_emb, 0.6)
    assert fresh.float().mean() == 0.0 and best.max() < 0.6


def test_evaluator_reports_feature_mem_frac(model_path):
    space = search_space_from_dict({
        "data": {"dataset": "gmm", "image_size": 32, "channels": 3, "n_train": 24, "n_test": 8},
        "model": {"base_channels": 8, "channel_mults": [1], "emb_dim": 16},
        "diffusion": {"objective": "flow", "sample_steps": 2},
        "eval": {"num_samples": 16, "fid_every": 0, "probe_images": 4, "probe_noise_levels": 2,
                 "memorization_space": "both", "embedding": str(model_path), "save_samples": 0},
    })  # fmt: skip
    cfg: ExperimentConfig = space.base
    data = ImageData(images(24, 2), torch.zeros(24, dtype=torch.long), images(8, 3), torch.zeros(8, dtype=torch.long), 0)
    ev = Evaluator(cfg, data, build_process(cfg.diffusion), torch.device("cpu"))
    ev.sample = lambda net, n, steps=None, start=0, floats=False: data.x_train[start : start + n]  # a model that has memorized perfectly
    out = ev(UNet(3, 32, base_channels=8, channel_mults=(1,), emb_dim=16), step=1)
    assert out["mem_frac"] == 1.0  # pixel space
    assert out["mem_frac_features"] == 1.0
    assert out["mem_frac_features_lo"] == pytest.approx(0.025 ** (1 / 16))  # Clopper–Pearson at 16/16, not a bootstrap's 1.0
    assert out["mem_embedding"] == model_path.name


def test_url_is_fetched_once_into_the_cache(model_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(model_path.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{model_path.name}"
        emb = load_embedding(url, "cpu")
        cached = cache_dir("weights") / model_path.name
        assert cached.is_file() and cached.read_bytes() == model_path.read_bytes()
        assert emb(images(2, 4)).shape == (2, 192)
    finally:
        server.shutdown()
        server.server_close()
    load_embedding(url, "cpu")  # server gone: the cached copy serves
    with pytest.raises(UserError, match="could not fetch"):
        load_embedding(url.replace(model_path.name, "other.pt"), "cpu")


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such embedding model file"):
        load_embedding(str(tmp_path / "missing.pt"), "cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a TorchScript model"):
        load_embedding(str(junk), "cpu")
    with pytest.raises(ConfigError, match="eval.embedding: no such TorchScript file"):  # a world check: preflight's
        preflight(search_space_from_dict({"eval": {"memorization_space": "features", "embedding": str(tmp_path / "missing.pt")}}))
