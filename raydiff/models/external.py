"""Networks from elsewhere, behind raydiff's network contract `net(x, c_noise, class_labels) → out`:

- x: [B, C, H, W] in the model's range; c_noise: [B] float, the process's noise level on a
  0 … 1000 scale (DDPM's timestep, rectified flow's t × 1000); class_labels: [B] int64 or None,
  with `num_classes` meaning "no label" (guidance, unconditional sampling); out: x's shape.

`DiffusersUNet` adapts a Hugging Face diffusers `UNet2DModel` (trained from scratch: no weights are
ever fetched). `from_factory` calls a user's "package.module:callable". Both raise a one-line
UserError when the package, the import or the call fails.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
import threading
import typing
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from raydiff.errors import UserError

if typing.TYPE_CHECKING:  # annotations only: the networks depend on nothing above them
    from raydiff.config import ModelConfig

DIFFUSERS_EXTRA = 'pip install -e ".[diffusers]"'


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel with raydiff's call signature. Class-conditional data gets
    UNet2DModel's class embedding with one extra row, the "no label" token."""

    def __init__(self, unet: nn.Module, num_classes: int = 0):
        super().__init__()
        self.unet, self.num_classes = unet, num_classes

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and class_labels is None:
            class_labels = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
        return self.unet(x, c_noise, class_labels=class_labels if self.num_classes else None).sample


def diffusers_kwargs(model: "ModelConfig", in_channels: int, image_size: int, num_classes: int = 0) -> dict[str, Any]:
    """UNet2DModel's keyword arguments for a `model:` section (its own keys where given, else
    raydiff's: base_channels × channel_mults, num_res_blocks, attention at attn_resolutions, and
    head_dim, capped at the narrowest block: its mid block always attends)."""
    channels = model.diffusers_channels
    # attention at a level whose input resolution is listed (level i works at image_size / 2**i)
    attn = [image_size // 2**i in model.attn_resolutions for i in range(len(channels))]
    down = model.down_block_types or tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = model.up_block_types or tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    kwargs = dict(
        sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=tuple(channels), layers_per_block=model.layers_per_block or model.num_res_blocks,
        down_block_types=tuple(down), up_block_types=tuple(up), attention_head_dim=min(model.head_dim, min(channels)),
        norm_num_groups=model.norm_num_groups, dropout=model.dropout,
        num_class_embeds=num_classes + 1 if num_classes else None,
    )  # fmt: skip
    return kwargs | DIFFUSERS_FIXED.get(model.preset or "", {})


# keys a preset pins beyond the shared ones: google/ddpm-cifar10-32's time embedding and padding
DIFFUSERS_FIXED: dict[str, dict[str, Any]] = {
    "ddpm-cifar10": dict(downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, attention_head_dim=None),
}


def build_diffusers(model: "ModelConfig", in_channels: int, image_size: int, num_classes: int = 0) -> DiffusersUNet:
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise UserError(f"model.kind: diffusers needs the diffusers package ({e}): {DIFFUSERS_EXTRA}") from None
    kwargs = diffusers_kwargs(model, in_channels, image_size, num_classes)
    try:
        unet = UNet2DModel(**kwargs)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"model: diffusers' UNet2DModel refused this architecture: {type(e).__name__}: {e}") from None
    return DiffusersUNet(unet, num_classes)


FACTORY_TIMEOUT_S = 300.0  # importing a user's module or calling its factory: a guard against hangs


@contextlib.contextmanager
def _stdout_to_stderr():
    """Whatever user code prints, from Python or C, goes to stderr: stdout is raydiff's own
    (`--dry-run --json` is read by scripts)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _guarded(what: str, fn: Callable[[], Any], failed: str = "{what} failed") -> Any:
    """fn() for code from elsewhere: its prints on stderr, its exit (SystemExit) and its errors
    one UserError line, and a hang cut off after FACTORY_TIMEOUT_S (in a daemon thread, under the
    caller's default device: the parameter count builds on "meta")."""
    box: dict[str, Any] = {}
    device = torch.get_default_device()

    def run() -> None:
        try:
            with torch.device(device):
                box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from user code too
            box["error"] = e

    with _stdout_to_stderr():
        worker = threading.Thread(target=run, name="raydiff-factory", daemon=True)
        worker.start()
        worker.join(FACTORY_TIMEOUT_S)
    if worker.is_alive():
        raise UserError(f"model.factory: {what} did not finish in {FACTORY_TIMEOUT_S:g} s (a module that waits or loops at import?)")
    if "error" in box:
        e = box["error"]
        if isinstance(e, UserError):
            raise e
        if isinstance(e, SystemExit):
            raise UserError(f"model.factory: {what} called exit({e.code!r})") from None
        head = failed.format(what=what)
        text = f"{head}{type(e).__name__}: {e})" if head.endswith("(") else f"{head}: {type(e).__name__}: {e}"
        raise UserError(f"model.factory: {text}") from None
    return box["value"]


def from_factory(model: "ModelConfig", in_channels: int, image_size: int, num_classes: int = 0) -> nn.Module:
    """`model.factory(**model.kwargs)`, also given in_channels, image_size and num_classes where
    its signature takes them; the module must be importable where the trial runs. The import and
    the call are guarded (`_guarded`); the network must have parameters to train."""
    path, _, name = str(model.factory).partition(":")
    module = _guarded(f"importing {path}", lambda: importlib.import_module(path), f"cannot import {model.factory} (")
    try:
        fn = getattr(module, name)
    except AttributeError as e:
        raise UserError(f"model.factory: cannot import {model.factory} (AttributeError: {e})") from None
    kwargs = dict(model.kwargs)
    shape = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    try:
        params = inspect.signature(fn).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs.update({k: v for k, v in shape.items() if (takes_all or k in params) and k not in kwargs})
    except (TypeError, ValueError):
        pass  # no signature to read (a builtin): the YAML's keywords only
    net = _guarded(f"{model.factory}(**{kwargs})", lambda: fn(**kwargs))
    if not isinstance(net, nn.Module):
        raise UserError(f"model.factory: {model.factory} returned {type(net).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in net.parameters()):
        raise UserError(f"model.factory: {model.factory} built a network without trainable parameters: nothing to train")
    return net
