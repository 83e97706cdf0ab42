"""Networks. `unet.py` is raydiff's U-Net and imports nothing of raydiff; `external.py` adapts
networks from elsewhere (a diffusers UNet2DModel, a user's factory) to the same contract. This
module builds the one a `model:` section names (any object with ModelConfig's fields) and counts
its parameters."""

from __future__ import annotations

import functools
import typing

import torch
from torch import nn

from raydiff.models.external import build_diffusers, from_factory
from raydiff.models.unet import UNet

if typing.TYPE_CHECKING:  # annotations only: the networks depend on nothing above them
    from raydiff.config import DataConfig, ModelConfig


def build_unet(model: "ModelConfig", in_channels: int, image_size: int, num_classes: int = 0) -> UNet:
    """The U-Net of a `model:` section for images of `in_channels` × `image_size`²."""
    return UNet(
        in_channels=in_channels,
        image_size=image_size,
        base_channels=model.base_channels,
        channel_mults=tuple(model.channel_mults),
        num_res_blocks=model.num_res_blocks,
        attn_resolutions=tuple(model.attn_resolutions),
        head_dim=model.head_dim,
        emb_dim=model.emb_dim,
        num_classes=num_classes,
        dropout=model.dropout,
        noise_dim=model.noise_dim,
        scale_shift=model.scale_shift,
        resblock_updown=model.resblock_updown,
        style=model.style,
    )


def build_network(model: "ModelConfig", in_channels: int, image_size: int, num_classes: int = 0) -> nn.Module:
    """The network a trial trains, by `model.kind`: net(x, c_noise, class_labels) → x's shape."""
    if model.kind == "diffusers":
        return build_diffusers(model, in_channels, image_size, num_classes)
    if model.kind == "python":
        return from_factory(model, in_channels, image_size, num_classes)
    return build_unet(model, in_channels, image_size, num_classes)


def model_name(model: "ModelConfig") -> str:
    """A trial's model as trials.parquet names it: its preset, else its architecture."""
    if model.preset:
        return model.preset
    if model.kind == "python":
        return str(model.factory)
    if model.kind == "diffusers":
        return "diffusers-c" + "-".join(map(str, model.diffusers_channels)) + f"-r{model.layers_per_block or model.num_res_blocks}"
    mults = "-".join(map(str, model.channel_mults))
    return f"unet-c{model.base_channels}-m{mults}-r{model.num_res_blocks}"


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_count(model: "ModelConfig", data: "DataConfig") -> int:
    """Parameters of the network a trial trains, built on the meta device (no memory, no init)."""
    size, channels = data.shape
    return _meta_count(model, channels, size, data.num_classes)


@functools.lru_cache(maxsize=None)
def _meta_count(model: "ModelConfig", channels: int, size: int, classes: int) -> int:
    # grids repeat a handful of architectures: a 320-trial grid builds 5 networks, not 320
    try:
        with torch.device("meta"):
            return count_params(build_network(model, channels, size, classes))
    except NotImplementedError:  # a factory that computes on its tensors while it builds
        return count_params(build_network(model, channels, size, classes))


__all__ = ["UNet", "build_network", "build_unet", "count_params", "model_name", "param_count"]
