"""Ready for the GPU, checked on the CPU: q/k/v contiguous for SDPA's fused kernels off the CPU,
the CUDA backend switches set once (a no-op elsewhere), the Fréchet distance's moments and matrix
square root in torch (float64, against scipy), the cosine search where the embeddings are, the
legacy_pytorch resize batched on the device (equal to clean-fid's per-image resize), and the
feature networks under bf16 autocast within the stated tolerance of fp32 (tiny random models of
the real classes, loaded through the real loaders). No test needs a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydiff.config import experiment_from_dict
from raydiff.errors import ConfigError
from raydiff.metrics import fid as fidlib
from raydiff.metrics.memorization import nearest_cosine
from raydiff.models.unet import UNet
from raydiff.training.state import configure_backends

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit:FutureWarning")

# bf16 autocast against fp32 (eval.feature_precision): each feature vector's cosine to its fp32
# counterpart ≥ COSINE_TOL, and FID within FID_RTOL of the fp32 value
COSINE_TOL, FID_RTOL = 0.999, 0.02


# ------------------------------------------------------------------------ attention layout


@pytest.mark.parametrize("style", ["raydiff", "bonnaire2025"])
def test_sdpa_gets_contiguous_qkv_off_the_cpu(monkeypatch, style):
    """On an accelerator (the meta device stands in: same code path, shapes only) each of q, k, v
    reaches scaled_dot_product_attention contiguous, last dim stride 1; on the CPU the strided
    views as before (the CPU kernel takes them, and its results stay bit-identical)."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append((q.device.type, [(t.is_contiguous(), t.stride(-1)) for t in (q, k, v)]))
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    kw = dict(base_channels=16, channel_mults=(1, 2), attn_resolutions=(8, 4), head_dim=8, style=style)
    for device in ("meta", "cpu"):
        torch.manual_seed(0)
        net = UNet(3, 8, **kw).to(device)
        with torch.no_grad():
            out = net(torch.randn(2, 3, 8, 8, device=device), torch.tensor([1.0, 5.0], device=device))
        assert out.shape == (2, 3, 8, 8)
    meta = [s for d, s in seen if d == "meta"]
    assert len(meta) == 7  # 2 down blocks, the middle, 4 up blocks (attn_resolutions 8 and 4)
    assert all(s == [(True, 1)] * 3 for s in meta)
    cpu = [s for d, s in seen if d == "cpu"]
    assert len(cpu) == 7 and all(not c for s in cpu for c, _ in s)  # the CPU path: views, unchanged


def test_contiguous_layout_computes_the_same_attention():
    """The permuted, contiguous q/k/v are the same numbers as the strided views."""
    qkv = torch.randn(2, 3, 4, 8, 16)  # [B, 3, heads, c/heads, HW]
    q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))
    q2, k2, v2 = qkv.permute(1, 0, 2, 4, 3).contiguous().unbind(0)
    assert torch.equal(q, q2) and torch.equal(k, k2) and torch.equal(v, v2)
    torch.testing.assert_close(F.scaled_dot_product_attention(q2, k2, v2), F.scaled_dot_product_attention(q, k, v))


# ------------------------------------------------------------------------ backend switches


def test_configure_backends_is_a_noop_on_cpu_and_idempotent_on_cuda():
    names = ("cudnn_benchmark", "matmul_tf32", "cudnn_tf32", "float32_matmul_precision")
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())  # fmt: skip
    try:
        assert tuple(configure_backends(torch.device("cpu")).values()) == before  # nothing touched
        assert tuple(configure_backends(torch.device("cpu")).values()) == before
        # the flags themselves need no GPU to be set: the CUDA path, twice
        first = configure_backends(torch.device("cuda"))
        assert first == dict(zip(names, (True, True, True, "high")))
        assert configure_backends(torch.device("cuda")) == first
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:3]
        torch.set_float32_matmul_precision(before[3])


# ----------------------------------------------------------------------- Fréchet distance


@pytest.mark.parametrize("n, d, seed", [(400, 16, 0), (60, 32, 1), (20, 32, 2)])  # the last rank-deficient
def test_frechet_in_torch_matches_scipy(n, d, seed):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n, d)) @ mix
    b = rng.normal(0.3, 1.2, size=(n, d)) @ mix + 0.1 * rng.normal(size=(n, d))
    sa, sb = fidlib.Stats.of(a), fidlib.Stats.of(b)
    ta = fidlib.Stats.of(torch.from_numpy(a))  # the moments in torch, float64
    np.testing.assert_allclose(ta.mu, sa.mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ta.sigma, sa.sigma, rtol=1e-10, atol=1e-12)
    want = fidlib.frechet(sa, sb)  # clean-fid's, scipy's sqrtm: the CPU's path
    assert fidlib.frechet(sa, sb, "cpu") == want  # a CPU device keeps it
    got = fidlib.frechet_torch(ta, fidlib.Stats.of(torch.from_numpy(b)), "cpu")
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert fidlib.frechet_torch(sa, sa) == pytest.approx(0.0, abs=1e-6 * np.trace(sa.sigma))


def test_cosine_search_stays_on_the_embeddings_device():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 8, generator=g, dtype=torch.float64)
    samples = torch.cat([train[[3, 17]] * 2.0, torch.randn(3, 8, generator=g, dtype=torch.float64)])
    best, index = nearest_cosine(samples, train, chunk=2)
    assert best.device == samples.device and index[:2].tolist() == [3, 17]
    torch.testing.assert_close(best[:2], torch.ones(2), rtol=0, atol=1e-6)
    want = F.normalize(samples.float(), dim=1) @ F.normalize(train.float(), dim=1).T
    torch.testing.assert_close(best, want.max(1).values)


# ------------------------------------------------------------------------ resizing


def test_legacy_pytorch_resize_batched_equals_clean_fids_per_image_resize():
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    resize = fidlib.inception_resizer("legacy_pytorch")
    want = np.stack([resize(im.permute(1, 2, 0).numpy()) for im in images]).transpose(0, 3, 1, 2)
    ext = object.__new__(fidlib.InceptionFeatures)  # the resize alone: no weights needed
    ext.mode, ext.device, ext.resize = "legacy_pytorch", torch.device("cpu"), resize
    got = ext.resized(images)
    assert got.shape == (3, 3, 299, 299) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)
    assert ext.resized(images[:, :1]).shape == (3, 3, 299, 299)  # gray: three channels


# -------------------------------------------------------------------- half precision


class TinyInception(torch.nn.Module):
    """clean-fid's TorchScript interface (`.layers` → [B, 2048, 1, 1]) around a few random convs."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=4), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 2048), torch.nn.Unflatten(1, (2048, 1, 1)),
        )  # fmt: skip

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


def stage_inception(tmp_path, monkeypatch):
    torch.manual_seed(0)
    (tmp_path / "weights").mkdir(exist_ok=True)
    torch.jit.script(TinyInception()).save(str(tmp_path / "weights" / "inception-2015-12-05.pt"))
    monkeypatch.setenv("RAYDIFF_CACHE", str(tmp_path))


def cosines(a, b):
    return F.cosine_similarity(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), dim=1)


def test_inception_features_and_fid_in_bf16_agree_with_fp32(tmp_path, monkeypatch):
    stage_inception(tmp_path, monkeypatch)
    g = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 40).round().to(torch.uint8)  # a distribution shifted from real's
    feats = {}
    for precision in ("fp32", "bf16"):
        ext = fidlib.build_extractor("inception", "cifar10", "cpu", "clean", precision)  # clean-fid's TorchScript
        assert ext.resize_name == "clean:PIL-bicubic@cpu"
        feats[precision] = [fidlib.batched_features(ext, x, batch=16) for x in (real, fake)]
    for a, b in zip(feats["fp32"], feats["bf16"]):
        assert not np.array_equal(a, b)  # bf16 ran
        assert float(cosines(a, b).min()) >= COSINE_TOL
    # FID on the first 16 of the 2048 features: a 2048² sqrtm is minutes on this CPU, and the
    # question is the features' precision, not the distance's
    fid = {p: fidlib.frechet(fidlib.Stats.of(f[0][:, :16]), fidlib.Stats.of(f[1][:, :16])) for p, f in feats.items()}
    assert fid["fp32"] > 0 and fid["bf16"] == pytest.approx(fid["fp32"], rel=FID_RTOL)


def test_sscd_and_feature_networks_in_bf16_agree_with_fp32(tmp_path):
    from raydiff.metrics import features

    class TinySSCD(torch.nn.Module):  # a ResNet-like descriptor: conv stem, residual block, pooled, projected
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 16, 7, stride=8)
            self.block = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1))
            self.fc = torch.nn.Linear(16, 64)

        def forward(self, x):
            h = torch.relu(self.stem(x))
            h = torch.relu(h + self.block(h))
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(0)
    path = tmp_path / "sscd.torchscript.pt"
    torch.jit.script(TinySSCD()).save(str(path))
    images = torch.randint(0, 256, (10, 3, 32, 32), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = experiment_from_dict({"eval": {"memorization_space": "features", "embedding": str(path), "feature_precision": precision}}).validate()
        embed = features.load("embedding", cfg, "cpu")
        assert embed.precision == precision
        out[precision] = embed(images)
    assert out["fp32"].dtype == out["bf16"].dtype == torch.float32 and out["fp32"].shape == (10, 64)
    assert not torch.equal(out["fp32"], out["bf16"])
    assert float(cosines(out["fp32"], out["bf16"]).min()) >= COSINE_TOL
    # the cosine test's verdicts agree: each image's nearest neighbour is itself in both
    for emb in out.values():
        best, index = nearest_cosine(emb, out["fp32"])
        assert index.tolist() == list(range(10))


def test_feature_precision_is_validated():
    assert experiment_from_dict({}).validate().eval.feature_precision == "fp32"
    with pytest.raises(ConfigError, match="feature_precision"):
        experiment_from_dict({"eval": {"feature_precision": "fp16x"}}).validate()
    with pytest.raises(ValueError, match="precision"):
        fidlib.feature_autocast("cpu", "half")


def test_smoke_cifar_space_packs_four_cifar_size_trials_on_one_gpu():
    from raydiff.config import load_search_space, packaged_search_space

    space = load_search_space(packaged_search_space("smoke_cifar"))
    points = space.points()
    assert len(points) == 4 and space.sweep.resources.gpu == 0.25
    assert space.base.data.shape == (32, 3) and space.base.model.attn_resolutions
