"""Datasets as uint8 tensors.

Every dataset loads to `ImageData`: the first N training images (uint8, [N, C, H, W]) with their
labels, and a fixed held-out set used for the test loss, the FID reference and sanity checks.
Training sets here are small (N ≤ 50k at 32×32), so a trial keeps them as one tensor on its
device and draws batches by index: no DataLoader, no worker processes, no per-step copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raydiff.config import DataConfig
from raydiff.download import file_lock
from raydiff.errors import ConfigError, UserError

DIGITS_SIZE = 1797
CIFAR10_TRAIN = 50_000
CIFAR10_TEST = 10_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageData:
    x_train: torch.Tensor  # uint8 [N, C, H, W]
    y_train: torch.Tensor  # int64 [N]
    x_test: torch.Tensor  # uint8 [M, C, H, W]
    y_test: torch.Tensor  # int64 [M]
    num_classes: int  # 0: unlabeled

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1]."""
    return x.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] → uint8 [0, 255] (clipped, rounded)."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def channel_mean(x: torch.Tensor) -> torch.Tensor:
    """The per-channel mean of uint8 images [N, C, H, W] in [0, 1]: float32 [C], from exact integer
    sums (chunked, so 50k CIFAR-10 images cost no float copy)."""
    total = torch.zeros(x.shape[1], dtype=torch.int64)
    for i in range(0, x.shape[0], 4096):
        total += x[i : i + 4096].sum(dim=(0, 2, 3), dtype=torch.int64)
    count = 255.0 * x.shape[0] * x.shape[2] * x.shape[3]
    return (total.double() / count).float()


def train_mean(normalization: str, x_train: torch.Tensor) -> torch.Tensor | None:
    """What `to_model` subtracts and `from_model` adds back: the per-channel mean of the training
    images under `centered` (the same for train, probe and generated images), None under `symmetric`."""
    return channel_mean(x_train) if normalization == "centered" else None


def to_model(x: torch.Tensor, normalization: str = "symmetric", mean: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [N, C, H, W] → the model's range: symmetric: [-1, 1] (`to_model_range`, bit for bit);
    centered: [0, 1] minus `mean` [C] (Bonnaire et al.'s loader: ToTensor, then Normalize(mean, 1))."""
    if normalization == "symmetric":
        return to_model_range(x)
    if normalization != "centered" or mean is None:
        raise ValueError(f"normalization {normalization!r}: symmetric, or centered with the training mean")
    return x.float().div(255.0).sub(mean.to(x.device, torch.float32).view(1, -1, 1, 1))


def from_model(x: torch.Tensor, normalization: str = "symmetric", mean: torch.Tensor | None = None) -> torch.Tensor:
    """The model's range → uint8 [0, 255] (clipped, rounded): the inverse of `to_model`."""
    if normalization == "symmetric":
        return to_uint8(x)
    if normalization != "centered" or mean is None:
        raise ValueError(f"normalization {normalization!r}: symmetric, or centered with the training mean")
    return x.add(mean.to(x.device, x.dtype).view(1, -1, 1, 1)).mul(255.0).round().clamp(0, 255).to(torch.uint8)


def cache_dir(sub: str = "") -> Path:
    root = Path(os.environ.get("RAYDIFF_CACHE", Path.home() / ".cache" / "raydiff"))
    return root / sub if sub else root


# ----------------------------------------------------------------------------- loading


def load(cfg: DataConfig) -> ImageData:
    loaders = {"digits": _digits, "cifar10": _cifar10, "gmm": _gmm, "folder": _folder}
    data = loaders[cfg.dataset](cfg)
    if not cfg.class_conditional:
        data = ImageData(data.x_train, data.y_train, data.x_test, data.y_test, num_classes=0)
    return data


def _digits(cfg: DataConfig) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # values are 0..16 ink counts; scale to the full uint8 range
    x = torch.from_numpy(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    return ImageData(
        x_train=x[: cfg.n_train].clone(),
        y_train=y[: cfg.n_train].clone(),
        x_test=x[-cfg.n_test :].clone(),
        y_test=y[-cfg.n_test :].clone(),
        num_classes=10,
    )


def _cifar10(cfg: DataConfig) -> ImageData:
    from torchvision.datasets import CIFAR10

    root = Path(cfg.root) if cfg.root else cache_dir("cifar10")
    try:
        with file_lock(root / ".raydiff-download.lock"):  # trials starting together on a node fetch once
            train = CIFAR10(str(root), train=True, download=cfg.download)
            test = CIFAR10(str(root), train=False, download=cfg.download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise UserError(f"CIFAR-10 not found under {root} ({e}); set data.download: true or pre-stage it") from None
    except OSError as e:
        raise UserError(f"could not fetch CIFAR-10 into {root}: {e}") from None

    def take(ds, n):  # .data is uint8 [n, 32, 32, 3] in file order; the first n are "the first n"
        x = torch.from_numpy(np.ascontiguousarray(ds.data[:n])).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets[:n], dtype=torch.int64)

    x_train, y_train = take(train, cfg.n_train)
    x_test, y_test = take(test, cfg.n_test)
    return ImageData(x_train, y_train, x_test, y_test, num_classes=10)


def _gmm(cfg: DataConfig) -> ImageData:
    """Seeded Gaussian mixture in image space: K smooth mean images, isotropic pixel noise."""
    g = torch.Generator().manual_seed(cfg.seed)
    s, c = cfg.shape
    k = cfg.gmm_components
    # smooth means: low-resolution noise upsampled, so components look like blobs, not static
    low = torch.rand(k, c, max(2, s // 4), max(2, s // 4), generator=g) * 2 - 1
    means = torch.nn.functional.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
    n = cfg.n_train + cfg.n_test
    labels = torch.randint(0, k, (n,), generator=g)
    x = means[labels] + cfg.gmm_std * torch.randn(n, c, s, s, generator=g)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return ImageData(x[: cfg.n_train], labels[: cfg.n_train], x[cfg.n_train :], labels[cfg.n_train :], num_classes=k)


def folder_images(root: str | None) -> list[Path]:
    """The image files under a folder, sorted by path: the order that makes "the first N"."""
    path = Path(root or "")
    if not path.is_dir():
        raise ConfigError(f"no such folder: {path}", key="data.root")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}", key="data.root")
    return files


def check_readable(files: list[Path]) -> None:
    """Raise on the first file PIL cannot identify or whose structure is broken (truncated PNG,
    not an image), so a bad file fails the preflight, not a trial hours later. Reads headers and
    chunk checksums, not pixels."""
    from PIL import Image  # PIL only for folder datasets

    for p in files:
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
            raise ConfigError(f"unreadable image {p}: {type(e).__name__}: {e}", key="data.root") from None


def _folder(cfg: DataConfig) -> ImageData:
    """Images from a folder, sorted by path: the first N train, the last n_test held out."""
    from PIL import Image, UnidentifiedImageError

    files = folder_images(cfg.root)
    size, channels = cfg.shape
    mode = "L" if channels == 1 else "RGB"

    def read(p: Path) -> np.ndarray:
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BICUBIC)
                return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"unreadable image {p}: {e}") from None

    chosen = files[: cfg.n_train] + files[-cfg.n_test :]
    x = torch.from_numpy(np.stack([read(p) for p in chosen])).permute(0, 3, 1, 2).contiguous()
    y = torch.zeros(len(chosen), dtype=torch.int64)
    return ImageData(x[: cfg.n_train], y[: cfg.n_train], x[cfg.n_train :], y[cfg.n_train :], num_classes=0)
