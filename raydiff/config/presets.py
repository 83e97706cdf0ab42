"""Model presets: named architectures that fill the `model:` fields a search space leaves unset.

Presets are configuration (as in NVlabs/edm, they live with the config, not with the network):
`raydiff.models.unet` knows nothing of them. The parameter counts they give are pinned in
tests/loops/test_presets.py.
"""

from __future__ import annotations


def _marion(width: int) -> dict:
    """Marion & Wu (2026), Table 1, at base width `width` (theirs: 128 → 92.7M parameters).

    Multipliers (1, 2, 4), 3 residual blocks per level, attention with head dim 64, 512-dim noise
    and class embeddings. Their five parameter counts are exactly 5090·W² + 68325·W + 530450 for
    W = 16, 32, 64, 128, 192, which pins the layout down to an ADM-style U-Net (Dhariwal & Nichol
    2021): attention at 16×16 and 8×8, scale-shift (AdaGN) embedding projections, residual blocks
    that down/up-sample, and a 512-dim sinusoid feeding two 512×512 layers at every width. Ours
    then has 204·W + 497 parameters more than theirs (+0.03 to +0.13%; a null-label row for
    guidance is part of it), pinned in tests/loops/test_presets.py.
    """
    return dict(
        base_channels=width, channel_mults=[1, 2, 4], num_res_blocks=3, attn_resolutions=[16, 8], head_dim=64,
        emb_dim=512, noise_dim=512, scale_shift=True, resblock_updown=True,
    )  # fmt: skip


def _bonnaire(width: int) -> dict:
    """Bonnaire et al. (2025) at base width W, as in their code (run_Unet.py of
    tbonnair/Why-Diffusion-Models-Don-t-Memorize): multipliers (1, 2, 4), attention at the two
    lower resolutions (16×16 and 8×8 for 32×32 images), dropout 0.1, a DDPM-style U-Net with
    2 residual blocks per level, conv down/up-sampling and a 4·W-dim time embedding."""
    return dict(
        base_channels=width, channel_mults=[1, 2, 4], num_res_blocks=2, attn_resolutions=[16, 8], head_dim=64,
        emb_dim=4 * width, dropout=0.1,
    )  # fmt: skip


# Architecture presets: a preset fills the ModelConfig fields a search space leaves unset.
# "digits-*" are the CPU presets of the embedded default; "marion-*" are Marion & Wu's five sizes
# (named by their parameter counts: 2.9M … 201.3M); "bonnaire-w*" the widths of Bonnaire et al.
PRESETS: dict[str, dict] = {
    "digits-tiny": dict(base_channels=16, channel_mults=[1, 2], num_res_blocks=1, attn_resolutions=[], emb_dim=64),
    "digits-small": dict(base_channels=32, channel_mults=[1, 2], num_res_blocks=1, attn_resolutions=[], emb_dim=128),
    **{f"marion-{name}": _marion(w) for name, w in
       (("2.9m", 16), ("7.9m", 32), ("25.8m", 64), ("92.7m", 128), ("201.3m", 192))},
    **{f"bonnaire-w{w}": _bonnaire(w) for w in (8, 16, 32, 48, 64)},
    # the DDPM CIFAR-10 model of Ho et al. (2020) as diffusers ships it (google/ddpm-cifar10-32,
    # 35.7M parameters; its config only, trained from scratch here): a diffusers UNet2DModel
    "ddpm-cifar10": dict(
        kind="diffusers", block_out_channels=[128, 256, 256, 256], layers_per_block=2,
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], dropout=0.1,
    ),
}  # fmt: skip
