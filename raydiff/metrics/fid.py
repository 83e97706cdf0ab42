"""Fréchet distance with a pluggable feature extractor.

The distance itself is clean-fid's (`cleanfid.fid.frechet_distance`). What is embedded depends on
the data: Inception-v3 as clean-fid builds it ("clean" mode: PIL-bicubic resize to 299) for
natural 32×32 RGB images, and for the 8×8 digits a small classifier trained once on the digits
labels and cached (as LeNet features serve for MNIST FID), because Inception features of 8×8
gray digits say little. Every value is recorded with its extractor, mode, split and sample count, and which resize fed
the Inception network (`resize_name`, in `fid_reference`).

On a GPU: the features are computed in batches on the trial's device (bf16 autocast with
eval.feature_precision: bf16), legacy_pytorch's bilinear resize runs batched on the device (the
same F.interpolate clean-fid runs per image on the CPU), and the covariance and the matrix square
root are computed on the device in float64 (`frechet_torch`). clean mode keeps clean-fid's PIL
bicubic resize on the CPU by design: PIL's antialiased bicubic is the point of clean-fid, and no
torch resize reproduces it. On the CPU every value is computed as before (clean-fid's scipy sqrtm).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raydiff.data import cache_dir


class FeatureExtractor(Protocol):
    name: str  # recorded beside every FID value
    mode: str

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """uint8 images [B, C, H, W] → features [B, D] (float64)."""


@dataclass(frozen=True)
class Stats:
    mu: np.ndarray  # [D]
    sigma: np.ndarray  # [D, D]
    count: int

    @classmethod
    def of(cls, feats: np.ndarray | torch.Tensor) -> "Stats":
        """Mean and covariance (unbiased, as np.cov) of features [S, D]: a tensor's on its own
        device in float64 (a GPU's), an array's with numpy."""
        if isinstance(feats, torch.Tensor):
            x = feats.to(torch.float64)
            mu = x.mean(0)
            xc = x - mu
            sigma = xc.T @ xc / max(1, x.shape[0] - 1)
            return cls(mu.cpu().numpy(), sigma.cpu().numpy(), x.shape[0])
        feats = np.asarray(feats, dtype=np.float64)
        return cls(feats.mean(0), np.cov(feats, rowvar=False), feats.shape[0])


@dataclass(frozen=True)
class Reference:
    """A reference split's features as FID and SWD use them: its moments (None where only points
    are needed) and the features [k, D] of its first k images (SWD's points)."""

    stats: Stats | None
    points: np.ndarray


class ReferenceCache(Protocol):
    """Where a trial keeps its references between evaluators (snapshots.ReferenceCache)."""

    def get(self, key: str) -> Reference | None: ...

    def put(self, key: str, ref: Reference) -> None: ...


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A short digest of a network's weights."""
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def reference_key(extractor: FeatureExtractor, precision: str, split: str, images: torch.Tensor, moments: bool, points: int) -> str:
    """A reference's name in a cache: the feature network (its weights' digest where they are not a
    published file: `fingerprint`), its arithmetic, the split, what is kept and a digest of the
    images themselves (uint8 [M, C, H, W]), so a changed dataset or network never hits."""
    digest = hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()[:16]
    kept = f"m{len(images)}" if moments else "p"
    weights = getattr(extractor, "fingerprint", "")
    return f"{split}-{extractor.name}-{extractor.mode}{'-' + weights if weights else ''}-{precision}-{kept}-p{points}-{digest}"


def frechet_torch(a: Stats, b: Stats, device: str | torch.device = "cpu") -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½ in float64 on `device`.

    tr (Σ₁Σ₂)^½ = Σᵢ √λᵢ(Σ₁^½ Σ₂ Σ₁^½): the product Σ₁Σ₂ is similar to the symmetric PSD matrix
    Σ₁^½ Σ₂ Σ₁^½, so two symmetric eigen-decompositions (eigh) replace scipy's general sqrtm
    (Schur form, CPU only); eigenvalues a rank-deficient covariance leaves slightly negative are
    clipped at 0."""
    t = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float64, device=device)  # noqa: E731
    mu1, mu2, s1, s2 = t(a.mu), t(b.mu), t(a.sigma), t(b.sigma)
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    lam, vec = torch.linalg.eigh(s1)
    root1 = (vec * lam.clamp_min(0).sqrt()) @ vec.T  # Σ₁^½
    m = root1 @ s2 @ root1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean)


def frechet(a: Stats, b: Stats, device: str | torch.device | None = None) -> float:
    """The Fréchet distance of two Gaussians: on a CUDA `device` by `frechet_torch`, elsewhere
    clean-fid's (scipy's sqrtm)."""
    import warnings

    if device is not None and torch.device(device).type == "cuda":
        return frechet_torch(a, b, device)

    from cleanfid.fid import frechet_distance
    from scipy.linalg import LinAlgWarning

    with warnings.catch_warnings():
        # few samples against a wide feature space give a rank-deficient covariance; sqrtm says
        # so, and the distance is still the standard estimate at that sample count
        warnings.simplefilter("ignore", LinAlgWarning)
        try:
            return float(frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
        except ValueError:
            # clean-fid refuses where sqrtm of a singular product leaves an imaginary part (two
            # rank-deficient covariances: eval.fid_reference splits at N ≤ the feature width); the
            # eigen-decomposition of the symmetric form gives the same trace without one
            return frechet_torch(a, b, "cpu")


def batched_features(extractor: FeatureExtractor, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    return np.concatenate([extractor(images[i : i + batch]) for i in range(0, images.shape[0], batch)])


FEATURE_PRECISIONS = ("fp32", "bf16")


def feature_autocast(device: str | torch.device, precision: str = "fp32"):
    """The context a feature network runs in: bf16 autocast with precision bf16 (on any device:
    CPU autocast runs bf16 too), plain float32 otherwise."""
    if precision not in FEATURE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(FEATURE_PRECISIONS)} (got {precision!r})")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


# --------------------------------------------------------------------- digits classifier


class DigitsNet(nn.Module):
    """A small CNN for 8×8 digits; its 128-dim penultimate layer is the FID embedding."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


DIGITS_CLASSIFIER_VERSION = 3  # v3: trained without the last DIGITS_HELD_OUT digits
# The classifier never sees the last 512 digits, so a FID reference set of up to 512 held-out
# digits (data.n_test, the last n_test images) is disjoint from what the features were fit on.
DIGITS_HELD_OUT = 512


def digits_classifier_path() -> Path:
    return cache_dir("weights") / f"digits_classifier_v{DIGITS_CLASSIFIER_VERSION}.pt"


def train_digits_classifier(steps: int = 400, seed: int = 0) -> tuple[DigitsNet, float]:
    """Train on the first 1,797 − DIGITS_HELD_OUT digits (with ±1 pixel shifts); returns the net
    and its accuracy on the held-out last DIGITS_HELD_OUT digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x_all = torch.from_numpy(d.images / 16.0 * 2 - 1).float().unsqueeze(1)  # [-1, 1], like the samples
    y_all = torch.from_numpy(d.target).long()
    x, y = x_all[:-DIGITS_HELD_OUT], y_all[:-DIGITS_HELD_OUT]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        shift = torch.randint(-1, 2, (2,), generator=g).tolist()
        xb = torch.roll(x[idx], shifts=shift, dims=(2, 3))
        loss = nn.functional.cross_entropy(net(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((net(x_all[-DIGITS_HELD_OUT:]).argmax(1) == y_all[-DIGITS_HELD_OUT:]).float().mean())
    return net.eval(), acc


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


class DigitsClassifierFeatures:
    name = "digits_classifier"
    mode = f"v{DIGITS_CLASSIFIER_VERSION}"
    dim = 128  # the penultimate layer

    resize_name = None  # no resize: the digits classifier reads the 8×8 pixels

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32"):
        self.precision = precision
        path = digits_classifier_path()
        net = DigitsNet()
        if path.exists():
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:  # trained once (seconds on a CPU), then cached for every later trial
            import sys

            print(f"raydiff: training the digits FID feature classifier once; cached at {path}", file=sys.stderr, flush=True)
            net, _ = train_digits_classifier()
            _atomic_torch_save(net.state_dict(), path)
        self.net = net.eval().to(device)
        self.device = device
        # each node trains its own copy where it has none cached: a reference extracted by one
        # copy must not serve another's (metrics.fid.reference_key)
        self.fingerprint = weights_digest(net.state_dict())

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = images.to(self.device).float().div(127.5).sub(1.0)
        with feature_autocast(self.device, self.precision):
            return self.net.features(x).double().cpu().numpy()


# ---------------------------------------------------------------------------- Inception


INCEPTION_MODES = ("clean", "legacy_pytorch")


def inception_resizer(mode: str):
    """clean-fid's resize of one float image [H, W, 3] in 0..255 to 299×299: clean: PIL bicubic
    (clean-fid's own); legacy_pytorch: F.interpolate bilinear, align_corners=False, as
    pytorch-fid resizes inside its network (the FID of Bonnaire et al.'s compute_FID.py)."""
    from cleanfid.resize import build_resizer

    if mode not in INCEPTION_MODES:
        raise ValueError(f"mode must be one of {', '.join(INCEPTION_MODES)} (got {mode!r})")
    return build_resizer(mode)


class InceptionFeatures:
    """clean-fid's Inception-v3 (TorchScript weights, fetched once into the raydiff cache)."""

    name = "inception_v3"
    dim = 2048

    def __init__(self, device: str | torch.device = "cpu", mode: str = "clean", precision: str = "fp32"):
        self.mode, self.precision = mode, precision
        self.resize = inception_resizer(mode)
        # clean: PIL's bicubic on the CPU, image by image (clean-fid's by design); legacy_pytorch:
        # the same bilinear F.interpolate clean-fid runs per image, batched on the device
        self.resize_name = "clean:PIL-bicubic@cpu" if mode == "clean" else "legacy_pytorch:bilinear@device"
        folder = cache_dir("weights")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            if mode == "legacy_pytorch":  # pytorch-fid's port of the TF FID Inception, as clean-fid's legacy mode uses it
                from cleanfid.inception_pytorch import InceptionV3

                old = torch.hub.get_dir()
                torch.hub.set_dir(str(folder))  # its weights into the raydiff cache, not ~/.cache
                try:
                    net = InceptionV3(output_blocks=[3], resize_input=False).to(device).eval()
                finally:
                    torch.hub.set_dir(old)
                self.model = lambda x: net(x / 255.0)[0].squeeze(-1).squeeze(-1)  # [B, 2048]
            else:
                from cleanfid.inception_torchscript import InceptionV3W

                self.model = InceptionV3W(str(folder), download=True, resize_inside=False).to(device).eval()
        except OSError as e:  # urllib errors are OSErrors
            from raydiff.errors import UserError

            raise UserError(f"could not fetch the Inception weights into {folder}: {e}") from None
        self.device = device

    def resized(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] → float32 [B, 3, 299, 299] in 0..255 on the device."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.mode == "legacy_pytorch":  # clean-fid's resizer: bilinear, align_corners=False, clipped to 0..255
            x = images.to(self.device).float()
            return F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False).clamp_(0, 255)
        # clean: PIL bicubic, each image as float32 on the CPU
        batch = np.stack([self.resize(im.permute(1, 2, 0).numpy()) for im in images.cpu()]).transpose(0, 3, 1, 2)
        return torch.from_numpy(batch).float().to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = self.resized(images)
        with feature_autocast(self.device, self.precision):
            feats = self.model(x)
        return feats.double().cpu().numpy()


# ------------------------------------------------------------- reference statistics

# clean-fid's precomputed Inception statistics of whole dataset splits (the same files
# `cleanfid.features.get_reference_statistics` fetches), cached under fid_stats/ instead of
# clean-fid's package folder, which a cluster image may not let us write.
CLEANFID_STATS_URL = "https://www.cs.cmu.edu/~clean-fid/stats"
PRECOMPUTED = {("cifar10", 32): {"train": 50_000, "test": 10_000}}  # (dataset, res) → images per split


def has_precomputed(extractor: FeatureExtractor, dataset: str, resolution: int) -> bool:
    return extractor.name == "inception_v3" and extractor.mode == "clean" and (dataset, resolution) in PRECOMPUTED


def cleanfid_stats_name(dataset: str, resolution: int, mode: str, split: str) -> str:
    return f"{dataset}_{mode}_{split}_{resolution}.npz".lower()


def cleanfid_reference(dataset: str, resolution: int, split: str, mode: str = "clean") -> Stats:
    """clean-fid's statistics of a whole split (e.g. all 50,000 CIFAR-10 training images)."""
    from raydiff.download import fetch

    name = cleanfid_stats_name(dataset, resolution, mode, split)
    path = fetch(f"{CLEANFID_STATS_URL}/{name}", cache_dir("fid_stats") / name)
    with np.load(path) as z:
        mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
    return Stats(mu, sigma, PRECOMPUTED[(dataset, resolution)][split])


def build_extractor(
    kind: str, dataset: str, device: str | torch.device = "cpu", mode: str = "clean", precision: str = "fp32"
) -> FeatureExtractor:
    """`auto` picks the digits classifier for digits and Inception for everything else; `mode`
    is Inception's resize (clean | legacy_pytorch); `precision` eval.feature_precision."""
    if kind == "auto":
        kind = "digits_classifier" if dataset == "digits" else "inception"
    if kind == "digits_classifier":
        return DigitsClassifierFeatures(device, precision)
    return InceptionFeatures(device, mode, precision)
