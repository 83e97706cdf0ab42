"""Feature networks for the cosine memorization tests, one loader each behind one registry.

    FEATURE_NETWORKS: name → loader(cfg, device) → embed(uint8 images [B, C, H, W]) → float32 [B, D]

A cosine test (measures/cosine.py) names its network; the evaluation loads it by that name here,
embeds the training set once and each evaluation's samples. `raydiff prestage` calls the same
loaders on the driver, so the weights are in the caches before trials start.

    embedding  SSCD (Pizzi et al. 2022), TorchScript from eval.embedding (metrics/embedding.py)
    dinov2     DINOv2 (Oquab et al. 2023), transformers' Dinov2Model: the pooled (layer-normed) CLS token
    clip       CLIP's image encoder (Radford et al. 2021), transformers' CLIPVisionModelWithProjection:
               the projected image embedding
    inception  Inception-v3 pool features (2048), clean-fid's TorchScript weights (metrics/fid.py)

The transformers networks are named by a hub id or a local folder (`eval.feature_models`,
default `DEFAULT_MODELS`) and loaded with `from_pretrained` from the Hugging Face cache
(HF_HOME / HF_HUB_CACHE; with HF_HUB_OFFLINE=1 nothing is fetched). Images are resized to the
model's `config.image_size` (bicubic, antialiased: the processors' resampling), scaled to [0, 1]
and normalized with the processor's mean and std; gray images are repeated to three channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from raydiff.errors import UserError
from raydiff.metrics.fid import feature_autocast

Embed = Callable[[torch.Tensor], torch.Tensor]  # uint8 [B, C, H, W] → float32 [B, D] on the network's device
Loader = Callable[[Any, Any], Embed]  # (ExperimentConfig, device) → Embed

FEATURE_NETWORKS: dict[str, Loader] = {}

# the hub ids used when eval.feature_models does not name one: DINOv2 ViT-L/14, the extractor
# Stein et al. 2023 (arXiv 2306.04675) recommend for evaluating generative models; CLIP ViT-B/32
DEFAULT_MODELS = {"dinov2": "facebook/dinov2-large", "clip": "openai/clip-vit-base-patch32"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DINOv2's processor
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's processor (openai/CLIP clip.py)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def feature_network(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register a loader under `name`."""

    def add(fn: Loader) -> Loader:
        if name in FEATURE_NETWORKS and FEATURE_NETWORKS[name] is not fn:
            raise ValueError(f"a feature network named {name!r} is registered already")
        FEATURE_NETWORKS[name] = fn
        return fn

    return add


def load(name: str, cfg: Any, device: Any = "cpu") -> Embed:
    if name not in FEATURE_NETWORKS:
        raise UserError(f"unknown feature network {name!r} (known: {', '.join(FEATURE_NETWORKS)})")
    return FEATURE_NETWORKS[name](cfg, device)


def precision(cfg: Any) -> str:
    """eval.feature_precision (fp32 | bf16); fp32 for a config without it."""
    return str(getattr(cfg.eval, "feature_precision", "fp32"))


def model_id(cfg: Any, name: str) -> str:
    """The hub id or local folder of network `name`: eval.feature_models[name], else the default."""
    given = dict(getattr(cfg.eval, "feature_models", ()) or ())
    return str(given.get(name, DEFAULT_MODELS[name]))


class Batched:
    """uint8 [B, C, H, W] → float32 [B, D] on the device: resize (on the device), normalize,
    `forward` in batches (under bf16 autocast with precision bf16)."""

    def __init__(
        self, forward: Callable[[torch.Tensor], torch.Tensor], size: int, mean, std, device, batch: int = 256, precision: str = "fp32"
    ):  # fmt: skip
        self.forward, self.size, self.batch, self.device = forward, int(size), batch, torch.device(device)
        self.precision = precision
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float().div(255.0)  # [B, C, H, W] in [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with feature_autocast(self.device, self.precision):
            out = [self.forward(self.preprocess(images[i : i + self.batch])).float() for i in range(0, len(images), self.batch)]
        return torch.cat(out).reshape(len(images), -1) if out else torch.zeros(0, 0, device=self.device)


def _pretrained(cls_name: str, ident: str, device) -> Any:
    """transformers' `cls_name`.from_pretrained(ident) on `device`, in eval mode; a missing model
    (not in the cache, offline) is one UserError naming it and how to fetch it."""
    try:
        import transformers
    except ImportError:
        raise UserError("the DINOv2 and CLIP memorization tests need transformers: pip install 'raydiff[features]'") from None
    try:
        model = getattr(transformers, cls_name).from_pretrained(ident)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot load {cls_name} {ident!r} ({first}); run `raydiff prestage` where the hub is reachable, "
            "or name a local folder in eval.feature_models",
            key="eval.feature_models",
        ) from None
    return model.to(device).eval()


@feature_network("embedding")
def sscd(cfg: Any, device: Any) -> Embed:
    from raydiff.metrics.embedding import load_embedding

    if not cfg.eval.embedding:
        raise UserError("the SSCD test needs an embedding path or URL", key="eval.embedding")
    return load_embedding(cfg.eval.embedding, device, precision=precision(cfg))


@feature_network("dinov2")
def dinov2(cfg: Any, device: Any) -> Embed:
    model = _pretrained("Dinov2Model", model_id(cfg, "dinov2"), device)
    # the hub's DINOv2 configs say 518 (the position embeddings' grid); their processor feeds 224
    size = 224 if model.config.image_size == 518 else model.config.image_size
    return Batched(lambda x: model(pixel_values=x).pooler_output, size, IMAGENET_MEAN, IMAGENET_STD, device, precision=precision(cfg))


@feature_network("clip")
def clip(cfg: Any, device: Any) -> Embed:
    model = _pretrained("CLIPVisionModelWithProjection", model_id(cfg, "clip"), device)
    return Batched(lambda x: model(pixel_values=x).image_embeds, model.config.image_size, CLIP_MEAN, CLIP_STD, device, precision=precision(cfg))


@feature_network("inception")
def inception(cfg: Any, device: Any) -> Embed:
    from raydiff.metrics.fid import InceptionFeatures

    net = InceptionFeatures(device, precision=precision(cfg))  # clean-fid's weights under the raydiff cache (weights/)

    def embed(images: torch.Tensor, batch: int = 256) -> torch.Tensor:  # batches: 299² per image
        out = [torch.from_numpy(net(images[i : i + batch])).float() for i in range(0, len(images), batch)]
        return (torch.cat(out) if out else torch.zeros(0, net.dim)).to(device)

    return embed


def networks_needed(cfg: Any) -> tuple[str, ...]:
    """The feature networks the experiment's measures need (each measure's `needs` that names one)."""
    from raydiff import measures

    out: list[str] = []
    for name in cfg.memorization_tests:  # ExperimentConfig: eval.measures resolved
        out += [n for n in measures.get(name).needs if n in FEATURE_NETWORKS and n not in out]
    return tuple(out)


def source_of(name: str, cfg: Any) -> str:
    """Where network `name` comes from for this experiment (what makes two loads the same)."""
    if name == "embedding":
        return str(cfg.eval.embedding)
    if name in DEFAULT_MODELS:
        return model_id(cfg, name)
    return name


def prestage(cfg: Any, seen: set[tuple[str, str]] | None = None) -> None:
    """Load each feature network the experiment needs once, on the CPU, so its weights are in the
    caches (the hub cache, the raydiff cache) before trials start; `seen` skips those loaded already."""
    seen = set() if seen is None else seen
    for name in networks_needed(cfg):
        key = (name, source_of(name, cfg))
        if key not in seen:
            seen.add(key)
            load(name, cfg, "cpu")
