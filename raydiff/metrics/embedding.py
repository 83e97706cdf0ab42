"""Image embeddings for feature-space memorization (Marion & Wu 2026: SSCD).

A sample counts as memorized when its embedding's maximum cosine similarity to a training
image's embedding exceeds a threshold (0.6). The embedding is any TorchScript model mapping an
ImageNet-normalized RGB batch [B, 3, S, S] to descriptors [B, D]; the intended one is SSCD
(Pizzi et al. 2022, github.com/facebookresearch/sscd-copy-detection), e.g.
https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt

Preprocessing follows SSCD's README for inference: images resized to 288 px ("small edge to
288"; our images are square, so 288×288), scaled to [0, 1], normalized with the ImageNet mean
and std. 32×32 CIFAR images are upsampled bilinearly (torchvision's Resize default); gray images
are repeated to three channels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from raydiff.data import cache_dir
from raydiff.download import fetch, is_url, url_filename
from raydiff.errors import UserError
from raydiff.metrics.fid import feature_autocast

SSCD_IMAGE_SIZE = 288
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Embedding:
    """uint8 images [B, C, H, W] → float32 embeddings [B, D] on the model's device (where the
    cosine search runs), in batches; with precision bf16 under bf16 autocast."""

    def __init__(
        self, model: torch.jit.ScriptModule, name: str, device, image_size: int = SSCD_IMAGE_SIZE, batch: int = 256,
        precision: str = "fp32",
    ):  # fmt: skip
        self.model, self.name, self.device = model, name, torch.device(device)
        self.image_size, self.batch, self.precision = image_size, batch, precision
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] → ImageNet-normalized float [B, 3, S, S] on the model's device."""
        x = images.to(self.device).float().div(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batches = (images[i : i + self.batch] for i in range(0, len(images), self.batch))
        with feature_autocast(self.device, self.precision):
            out = [self.model(self.preprocess(b)).float() for b in batches]
        return torch.cat(out).reshape(len(images), -1)


def resolve(path_or_url: str) -> Path:
    """A local TorchScript file: the path itself, or the URL's file cached under weights/."""
    if is_url(path_or_url):
        return fetch(path_or_url, cache_dir("weights") / url_filename(path_or_url))
    path = Path(path_or_url).expanduser()
    if not path.is_file():
        raise UserError(f"no such embedding model file: {path}", key="eval.embedding")
    return path


def load_embedding(path_or_url: str, device, image_size: int = SSCD_IMAGE_SIZE, precision: str = "fp32") -> Embedding:
    path = resolve(path_or_url)
    try:
        with warnings.catch_warnings():  # SSCD ships TorchScript; torch ≥ 2.10 warns jit is deprecated
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
            model = torch.jit.load(str(path), map_location=torch.device(device)).eval()
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a TorchScript model ({first})", key="eval.embedding") from None
    return Embedding(model, path.name, device, image_size, precision=precision)
