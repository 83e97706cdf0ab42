"""The feature networks of the cosine memorization tests, each loaded by its real loader from a
tiny random model of the same class that the test saves itself (no weights can be fetched here):
DINOv2 and CLIP from a local folder (eval.feature_models) and, in a fresh process, from the
Hugging Face hub cache under their default ids, offline; Inception from clean-fid's TorchScript
file in the raydiff cache. Each embeds uint8 images as its model does, and its registered test
calls a planted copy a copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from paths import ROOT
from raydiff import measures
from raydiff.config import experiment_from_dict
from raydiff.errors import UserError
from raydiff.metrics import features

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit:FutureWarning")  # clean-fid's weights are TorchScript


def tiny_dinov2(folder):
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=28, patch_size=14)
    torch.manual_seed(0)
    transformers.Dinov2Model(cfg).save_pretrained(folder)
    return folder


def tiny_clip(folder):
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16, projection_dim=16
    )
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    return folder


def images(n=6, c=3, seed=0):
    return torch.randint(0, 256, (n, c, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


class Context:
    """An evaluation's side of a cosine test: the config and `embed` through the registry's loader."""

    def __init__(self, cfg, train):
        self.cfg, self.train, self.nets = cfg, train, {}

    def embed(self, network, samples):
        if network not in self.nets:
            self.nets[network] = features.load(network, self.cfg, "cpu")
        net = self.nets[network]
        return net(samples), net(self.train)


def copies_found(name, cfg):
    """The registered test `name` on 3 planted copies of training images among 3 fresh samples."""
    train = images(10, seed=1)
    samples = torch.cat([train[[2, 5, 7]], images(3, seed=2)])
    v = measures.get(name)().verdicts(Context(cfg, train), samples)
    return v.copied.tolist(), v.nearest[:3].tolist(), v.score


@pytest.mark.parametrize("name, build, cls, out", [
    ("dinov2", tiny_dinov2, "Dinov2Model", "pooler_output"),
    ("clip", tiny_clip, "CLIPVisionModelWithProjection", "image_embeds"),
])  # fmt: skip
def test_transformers_loader_embeds_as_its_model_does(tmp_path, name, build, cls, out):
    folder = str(build(tmp_path / name))
    cfg = experiment_from_dict({"eval": {"feature_models": {name: folder}}}).validate()
    embed = features.load(name, cfg, "cpu")
    x = images(5)
    got = embed(x)
    model = getattr(transformers, cls).from_pretrained(folder).eval()
    size = model.config.image_size
    ref_in = torch.nn.functional.interpolate(x.float() / 255, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    mean, std = (features.IMAGENET_MEAN, features.IMAGENET_STD) if name == "dinov2" else (features.CLIP_MEAN, features.CLIP_STD)
    ref_in = (ref_in - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = getattr(model(pixel_values=ref_in), out)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # gray images are repeated to three channels
    assert embed(x[:, :1]).shape == got.shape
    copied, nearest, score = copies_found(name, cfg)
    assert copied[:3] == [True] * 3 and nearest == [2, 5, 7]
    torch.testing.assert_close(score[:3], torch.ones(3), rtol=0, atol=1e-5)


def test_inception_loader_reads_clean_fids_weights_from_the_raydiff_cache(tmp_path, monkeypatch):
    class Layers(torch.nn.Module):  # the shape of clean-fid's TorchScript: .layers → [B, 2048, 1, 1]
        def __init__(self):
            super().__init__()
            self.pool = torch.nn.AdaptiveAvgPool2d(4)
            self.fc = torch.nn.Linear(48, 2048)

        def forward(self, x):
            return self.fc(self.pool(x).flatten(1)).view(-1, 2048, 1, 1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x, return_features: bool = False):
            return self.layers(x)

    torch.manual_seed(0)
    (tmp_path / "weights").mkdir()
    torch.jit.script(Net()).save(str(tmp_path / "weights" / "inception-2015-12-05.pt"))
    monkeypatch.setenv("RAYDIFF_CACHE", str(tmp_path))
    cfg = experiment_from_dict({}).validate()
    emb = features.load("inception", cfg, "cpu")(images(3))
    assert emb.dtype == torch.float32 and emb.shape == (3, 2048)
    copied, nearest, _ = copies_found("inception", cfg)
    assert copied[:3] == [True] * 3 and nearest == [2, 5, 7]


def test_threshold_override_and_networks_needed(tmp_path):
    cfg = experiment_from_dict({"eval": {"mem_thresholds": {"clip": 0.5}}}).validate()
    ctx = SimpleNamespace(cfg=cfg)
    assert measures.get("clip")().cosine_threshold(ctx) == 0.5
    assert measures.get("dinov2")().cosine_threshold(ctx) == measures.get("dinov2").threshold
    both = experiment_from_dict({"eval": {"memorization_space": "both", "embedding": "x.pt"}}).validate()
    assert features.networks_needed(both) == ("embedding",)
    assert features.networks_needed(experiment_from_dict({}).validate()) == ()
    for name in ("dinov2", "clip", "inception"):
        m = measures.get(name)
        assert m.network in features.FEATURE_NETWORKS and m.network in m.needs and m.threshold_source
    with pytest.raises(UserError, match="unknown feature network"):
        features.load("sift", cfg)


HUB_SCRIPT = r"""
import json, sys
from raydiff.config import experiment_from_dict
from raydiff.errors import UserError
from raydiff.metrics import features
import torch
cfg = experiment_from_dict({}).validate()
out = {}
for name in ("dinov2", "clip"):
    out[name] = list(features.load(name, cfg, "cpu")(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)).shape)
try:
    features.load("dinov2", experiment_from_dict({"eval": {"feature_models": {"dinov2": "facebook/dinov2-giant"}}}).validate(), "cpu")
except UserError as e:
    out["missing"] = str(e)
print(json.dumps(out))
"""


def test_default_ids_load_from_the_hub_cache_offline(tmp_path):
    """The layout `raydiff prestage` leaves in HF_HUB_CACHE (models--org--name/snapshots/<rev>,
    refs/main), read with HF_HUB_OFFLINE=1: the default ids load; one not cached is a UserError."""
    hub = tmp_path / "hub"
    for name, build in (("dinov2", tiny_dinov2), ("clip", tiny_clip)):
        repo = hub / ("models--" + features.DEFAULT_MODELS[name].replace("/", "--"))
        build(repo / "snapshots" / "0123abc")
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0123abc")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["dinov2"] == [2, 32] and out["clip"] == [2, 16]
    assert "facebook/dinov2-giant" in out["missing"] and "raydiff prestage" in out["missing"]


def test_a_trial_runs_the_new_tests_through_its_evaluation(tmp_path, one_torch_thread):
    """A trial selecting DINOv2 and CLIP beside the pixel test: the evaluation loads both networks
    by their loaders, each test writes its fraction and its per-sample ledger columns."""
    from raydiff.trial import train
    from tiny_trial import tiny

    models = {"dinov2": str(tiny_dinov2(tmp_path / "dinov2")), "clip": str(tiny_clip(tmp_path / "clip"))}
    cfg = tiny(eval={"measures": ["pixel", "dinov2", "clip", "loss"], "feature_models": models}, train={"max_steps": 40})
    reports: list[dict] = []
    train(cfg, lambda m, ckpt: reports.append(m) or False)
    for r in reports:
        for name in ("dinov2", "clip"):
            assert 0.0 <= r[f"mem_frac_{name}"] <= 1.0
            n = len(r["ledger"]["sample"])
            assert len(r["ledger"][f"score_{name}"]) == len(r["ledger"][f"nearest_{name}"]) == n == r["mem_samples"]
