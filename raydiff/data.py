"""Datasets as uint8 tensors.

Every dataset loads to `ImageData`: the first N training images (uint8, [N, C, H, W]) with their
labels, and a fixed held-out set used for the test loss, the FID reference and sanity checks.
Training sets here are small (N ≤ 50k at 32×32), so a trial keeps them as one tensor on its
device and draws batches by index: no DataLoader, no worker processes, no per-step copies.

Image folders and Hugging Face datasets (`dataset: hf`, through the `datasets` library: a hub
id at a pinned commit, or a local dataset) share one preprocessing, `to_square`: the image to
image_size × image_size (resized as is, or Bonnaire et al.'s shorter side to size then the centre
square) and to `channels` (1: grayscale). "The first N" of a folder is its files sorted by path;
of an hf dataset, the rows of `split` in `order`; the held-out images the last n_test of that
order (or the first n_test of `test_split`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raydiff.config import DataConfig
from raydiff.download import file_lock
from raydiff.errors import ConfigError, DataUnavailable, UserError

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
    loaders = {"digits": _digits, "cifar10": _cifar10, "gmm": _gmm, "folder": _folder, "hf": _hf}
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
        raise DataUnavailable(f"no such folder: {path}", key="data.root")
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


def to_square(im, size: int, channels: int, crop: str = "none") -> np.ndarray:
    """A PIL image → uint8 [size, size, channels].

    crop none: converted (L or RGB) and resized to size × size as it is (bicubic; the aspect ratio
    is not kept). crop center: Bonnaire et al.'s loader (Utils/loader.py) step by step: ToTensor
    (RGB in [0, 1]), Resize(size) (shorter side to size, bilinear, antialiased), CenterCrop(size),
    Grayscale (ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B) when channels is 1; then rounded to uint8.
    """
    from PIL import Image

    if crop == "none":
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)
    import torchvision.transforms.functional as TF

    t = TF.pil_to_tensor(im.convert("RGB")).float().div(255.0)  # [3, H, W] in [0, 1]
    t = TF.center_crop(TF.resize(t, [size], antialias=True), [size, size])  # [3, size, size]
    if channels == 1:
        t = TF.rgb_to_grayscale(t)  # [1, size, size]
    return t.mul(255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _folder(cfg: DataConfig) -> ImageData:
    """Images from a folder, sorted by path: the first N train, the last n_test held out."""
    from PIL import Image, UnidentifiedImageError

    files = folder_images(cfg.root)
    size, channels = cfg.shape

    def read(p: Path) -> np.ndarray:
        try:
            with Image.open(p) as im:
                return to_square(im, size, channels, cfg.crop)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"unreadable image {p}: {e}") from None

    chosen = files[: cfg.n_train] + files[-cfg.n_test :]
    x = torch.from_numpy(np.stack([read(p) for p in chosen])).permute(0, 3, 1, 2).contiguous()
    y = torch.zeros(len(chosen), dtype=torch.int64)
    return ImageData(x[: cfg.n_train], y[: cfg.n_train], x[cfg.n_train :], y[cfg.n_train :], num_classes=0)


# ------------------------------------------------------------------- Hugging Face datasets


def hf_text(cfg: DataConfig) -> str:
    """The dataset as a person would name it: name[/subset]@revision (split)."""
    at = f"@{cfg.hf_revision[:7]}" if cfg.hf_revision else ""
    sub = f" [{cfg.hf_config}]" if cfg.hf_config else ""
    return f"{cfg.hf_name}{sub}{at} ({cfg.split})"


def _saved_to_disk(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def hf_split(cfg: DataConfig, split: str):
    """One split expression ("train", "train+valid+test") of the hf dataset as a `datasets.Dataset`,
    in its stored row order: a save_to_disk folder through load_from_disk, anything else (a hub
    id, a local folder of parquet or image files) through load_dataset at the pinned revision.
    The hub's files land in the `datasets` cache (HF_HOME), where `raydiff prestage` puts them."""
    try:
        import datasets
    except ImportError:
        raise UserError('data.dataset hf needs the datasets package: pip install -e ".[hf]"') from None
    name = cfg.hf_name or ""
    local = Path(name).expanduser()
    try:
        if _saved_to_disk(local):
            saved = datasets.load_from_disk(str(local))
            if isinstance(saved, datasets.DatasetDict):
                missing = [s for s in split.split("+") if s not in saved]
                if missing:
                    raise ConfigError(f"{name} has no split {missing[0]!r} (it has {', '.join(saved)})", key="data.split")
                return datasets.concatenate_datasets([saved[s] for s in split.split("+")])
            return saved
        return datasets.load_dataset(name, cfg.hf_config, revision=cfg.hf_revision, split=split)
    except ConfigError:
        raise
    except ValueError as e:  # an unknown split or subset
        key = "data.hf_config" if "config" in str(e).lower() else "data.split"
        raise ConfigError(f"{hf_text(cfg)}: {_first_line(e)}", key=key) from None
    except Exception as e:  # noqa: BLE001 - not found, offline and not cached, refused: datasets raises many types
        raise DataUnavailable(
            f"cannot open {hf_text(cfg)} on this machine: {type(e).__name__}: {_first_line(e)}", key="data.hf_name"
        ) from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def hf_shape(cfg: DataConfig) -> tuple[dict[str, int] | None, list[str] | None]:
    """(rows per split, column names) of the hf dataset without downloading its data: a local one
    is opened (memory-mapped), a hub one read from its card (`load_dataset_builder`); None where the
    card does not say. Raises DataUnavailable where neither opens here."""
    local = Path(cfg.hf_name or "").expanduser()
    if _saved_to_disk(local):
        import datasets

        saved = datasets.load_from_disk(str(local))
        if isinstance(saved, datasets.Dataset):
            return None, list(saved.column_names)
        return {s: len(d) for s, d in saved.items()}, list(next(iter(saved.values())).column_names)
    import datasets

    if not datasets.config.HF_HUB_OFFLINE:
        hub_reachable(cfg)
    try:
        info = datasets.load_dataset_builder(cfg.hf_name, cfg.hf_config, revision=cfg.hf_revision).info
    except ValueError as e:
        raise ConfigError(f"{hf_text(cfg)}: {_first_line(e)}", key="data.hf_config") from None
    except Exception as e:  # noqa: BLE001 - as in hf_split
        raise DataUnavailable(
            f"cannot open {hf_text(cfg)} on this machine: {type(e).__name__}: {_first_line(e)}", key="data.hf_name"
        ) from None
    rows = {name: s.num_examples for name, s in (info.splits or {}).items() if s.num_examples}
    return rows or None, list(info.features) if info.features else None


def hub_reachable(cfg: DataConfig, timeout: float = 5.0) -> None:
    """Raise DataUnavailable at once where the hub's host does not answer (the `datasets` client
    would retry for minutes). A machine without the hub that holds the dataset in its cache says
    so with HF_DATASETS_OFFLINE=1, which skips this."""
    import socket
    import urllib.parse

    from huggingface_hub import constants

    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
    except OSError as e:
        raise DataUnavailable(
            f"cannot open {hf_text(cfg)} on this machine: the hub ({constants.ENDPOINT}) does not answer ({e});"
            " where the dataset is in the cache, set HF_DATASETS_OFFLINE=1", key="data.hf_name",
        ) from None


def hf_ordered(cfg: DataConfig, ds):
    """The rows of `split` in the order that makes "the first N"."""
    if cfg.order == "sorted":
        if cfg.order_column not in ds.column_names:
            raise ConfigError(f"{hf_text(cfg)} has no column {cfg.order_column!r} (it has {', '.join(ds.column_names)})",
                              key="data.order_column")  # fmt: skip
        return ds.sort(cfg.order_column)
    if cfg.order == "shuffled":
        return ds.shuffle(seed=cfg.seed)
    return ds


def hf_selection(cfg: DataConfig):
    """(train rows, held-out rows) as `datasets.Dataset`s, undecoded: the first N of the ordered
    split, and the first n_test of test_split (else the last n_test of the ordered split)."""
    ds = hf_ordered(cfg, hf_split(cfg, cfg.split))
    for col in (cfg.image_column, cfg.label_column):
        if col is not None and col not in ds.column_names:
            key = "data.image_column" if col == cfg.image_column else "data.label_column"
            raise ConfigError(f"{hf_text(cfg)} has no column {col!r} (it has {', '.join(ds.column_names)})", key=key)
    if cfg.test_split is not None:
        held = hf_split(cfg, cfg.test_split)
        need = {"data.n_train": (len(ds), cfg.n_train, cfg.split), "data.n_test": (len(held), cfg.n_test, cfg.test_split)}
        for key, (have, want, split) in need.items():
            if want > have:
                raise ConfigError(f"{hf_text(cfg)}: split {split!r} has {have} rows (got {want})", key=key)
        return ds.select(range(cfg.n_train)), held.select(range(cfg.n_test))
    if cfg.n_train + cfg.n_test > len(ds):
        raise ConfigError(
            f"{hf_text(cfg)} has {len(ds)} rows: n_train + n_test must be ≤ {len(ds)} (got {cfg.n_train} + {cfg.n_test})",
            key="data.n_train",
        )
    return ds.select(range(cfg.n_train)), ds.select(range(len(ds) - cfg.n_test, len(ds)))


def _hf(cfg: DataConfig) -> ImageData:
    train, held = hf_selection(cfg)
    size, channels = cfg.shape

    def images(rows) -> torch.Tensor:  # uint8 [n, C, size, size], decoded 1,000 images at a time
        arrays = [
            to_square(im, size, channels, cfg.crop)
            for i in range(0, len(rows), 1000) for im in rows[i : i + 1000][cfg.image_column]
        ]  # fmt: skip
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def labels(rows) -> torch.Tensor:
        if cfg.label_column is None:
            return torch.zeros(len(rows), dtype=torch.int64)
        y = torch.as_tensor(rows[cfg.label_column], dtype=torch.int64)
        if cfg.class_conditional and y.numel() and not 0 <= int(y.min()) <= int(y.max()) < (cfg.label_classes or 0):
            raise ConfigError(f"{hf_text(cfg)}: labels in {cfg.label_column!r} run {int(y.min())}..{int(y.max())},"
                              f" outside 0..{(cfg.label_classes or 0) - 1}", key="data.label_classes")  # fmt: skip
        return y

    return ImageData(images(train), labels(train), images(held), labels(held), num_classes=cfg.label_classes or 0)
