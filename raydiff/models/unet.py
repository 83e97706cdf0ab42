"""The U-Net: a denoiser network that knows nothing about noise schedules.

It maps (x, c_noise[, class_labels]) → an image-shaped output. What c_noise means (a DDPM step
index, a flow time × 1000) and what the output means (ε, velocity) belong to the process object
in `raydiff.diffusion`; the network only embeds c_noise sinusoidally.

Layout as in DDPM / ADM: per resolution level `num_res_blocks` residual blocks (with
self-attention at the resolutions listed in `attn_resolutions`), down-sampling between levels, a
middle block, and a mirrored up path that concatenates the skip activations.

A `Style` holds the details in which U-Nets of this layout differ: raydiff's own, and
Bonnaire et al.'s (2025) as their Utils/Unet.py writes it (GroupNorm with 8 groups everywhere, 4
attention heads, a GELU in the time MLP, PyTorch's default initialisation, channel dropout, and
sinusoid frequencies 10000^(−i/(half − 1)) in the order sin, cos). The two have the same
parameters, one for one: the styles change what the network computes, not its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Style:
    norm_groups: int | None = None  # GroupNorm groups everywhere; None: _groups(width)
    num_heads: int | None = None  # attention heads; None: channels // head_dim
    time_act: str = "silu"  # the activation between the time MLP's two layers: silu | gelu
    zero_init: bool = True  # zero the last conv of each block, attention's projection and the output conv
    channel_dropout: bool = False  # Dropout2d (whole channels) instead of Dropout (elements)
    sinusoid: str = "raydiff"  # raydiff: cos, sin, freqs 10000^(−i/half); bonnaire2025: sin, cos, 10000^(−i/(half − 1))


STYLES: dict[str, Style] = {
    "raydiff": Style(),
    "bonnaire2025": Style(norm_groups=8, num_heads=4, time_act="gelu", zero_init=False, channel_dropout=True, sinusoid="bonnaire2025"),
}


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 as in DDPM, fewer for narrow layers (must divide the width)."""
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 2 or g == 1:
            return g
    return 1


def timestep_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10_000.0, kind: str = "raydiff") -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017). c_noise: [B] float → [B, dim].

    raydiff: [cos, sin] of c·10000^(−i/half); bonnaire2025: [sin, cos] of c·10000^(−i/(half − 1))
    (their SinusoidalPositionEmbeddings: the last frequency is exactly 1/10000)."""
    half = dim // 2
    i = torch.arange(half, device=c_noise.device, dtype=torch.float32)
    if kind == "bonnaire2025":
        freqs = torch.exp(i * -(math.log(max_period) / (half - 1)))
        args = c_noise.float()[:, None] * freqs[None]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    else:
        freqs = torch.exp(-math.log(max_period) * i / half)
        args = c_noise.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between (DDPM) or applied as a
    scale and shift of the second normalization (`scale_shift`, ADM's AdaGN). With `resample`
    "down" / "up" the block also halves / doubles the resolution (ADM's resblock_updown)."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, scale_shift: bool = False, resample: str = "none",
        style: Style = Style(),
    ):  # fmt: skip
        super().__init__()
        self.scale_shift, self.resample = scale_shift, resample
        self.norm1 = nn.GroupNorm(style.norm_groups or _groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(style.norm_groups or _groups(out_ch), out_ch)
        self.dropout = nn.Dropout2d(dropout) if style.channel_dropout else nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if style.zero_init:  # each block starts as the identity: stable early training
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self._resample(F.silu(self.norm1(x))))
        x = self._resample(x)
        e = self.emb(emb)[:, :, None, None]  # [B, out (×2), 1, 1]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1.0 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H×W positions."""

    def __init__(self, channels: int, head_dim: int, style: Style = Style()):
        super().__init__()
        self.heads = style.num_heads or max(1, channels // head_dim)
        self.norm = nn.GroupNorm(style.norm_groups or _groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        if style.zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        if x.device.type == "cpu":  # strided views: the CPU kernel takes them (and its results stay as they were)
            q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # each [B, heads, HW, c/heads]
        else:  # flash and memory-efficient SDPA kernels want each of q, k, v contiguous (last dim stride 1)
            q, k, v = qkv.permute(1, 0, 2, 4, 3).contiguous().unbind(0)  # each [B, heads, HW, c/heads]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: int,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attn_resolutions: tuple[int, ...] = (),
        head_dim: int = 64,
        emb_dim: int | None = None,
        num_classes: int = 0,
        dropout: float = 0.0,
        noise_dim: int | None = None,
        scale_shift: bool = False,
        resblock_updown: bool = False,
        style: str = "raydiff",
    ):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)} (got {style!r})")
        st = self.style = STYLES[style]
        emb_dim = emb_dim or 4 * base_channels
        self.noise_dim = noise_dim or base_channels  # width of the sinusoidal c_noise features
        self.num_classes = num_classes
        act = nn.GELU() if st.time_act == "gelu" else nn.SiLU()
        self.noise_embed = nn.Sequential(nn.Linear(self.noise_dim, emb_dim), act, nn.Linear(emb_dim, emb_dim))
        # one extra row: the "no label" token, used for guidance and unconditional sampling
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        def block(i: int, o: int, attn: bool = False) -> nn.Module:
            res = ResBlock(i, o, emb_dim, dropout, scale_shift, style=st)
            return AttnResBlock(res, Attention(o, head_dim, st)) if attn else res

        def resample(ch: int, kind: str) -> nn.Module:
            if resblock_updown:
                return ResBlock(ch, ch, emb_dim, dropout, scale_shift, resample=kind, style=st)
            return Downsample(ch) if kind == "down" else Upsample(ch)

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [base_channels]
        ch, res = base_channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                out = base_channels * mult
                self.down.append(block(ch, out, res in attn_resolutions))
                ch = out
                skips.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(resample(ch, "down"))
                res //= 2
                skips.append(ch)

        self.mid = nn.ModuleList([block(ch, ch)])
        if attn_resolutions:
            self.mid.append(Attention(ch, head_dim, st))
        self.mid.append(block(ch, ch))

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                out = base_channels * mult
                self.up.append(block(ch + skips.pop(), out, res in attn_resolutions))
                ch = out
            if level > 0:
                self.up.append(resample(ch, "up"))
                res *= 2

        self.norm_out = nn.GroupNorm(st.norm_groups or _groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        if st.zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [B, C, H, W]; c_noise: [B] float; class_labels: [B] int64 (num_classes = no label)."""
        emb = self.noise_embed(timestep_embedding(c_noise, self.noise_dim, kind=self.style.sinusoid))
        if self.class_embed is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_embed(class_labels)
        emb = F.silu(emb)

        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, (ResBlock, AttnResBlock)) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h)
            elif isinstance(layer, ResBlock) and layer.resample == "up":
                h = layer(h, emb)
            else:
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class AttnResBlock(nn.Module):
    def __init__(self, res: ResBlock, attn: Attention):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
