"""Model presets: exact parameter counts (regression guard) and the papers' sizes within 5%."""

from __future__ import annotations

import pytest
import torch

from raydiff.config import PRESETS, ConfigError, apply_overrides, experiment_from_dict
from raydiff.models import build_unet, count_params, param_count

# Marion & Wu (2026): their five U-Nets, by base width
MARION = {  # preset: (width, the paper's parameter count)
    "marion-2.9m": (16, 2_926_690),
    "marion-7.9m": (32, 7_929_010),
    "marion-25.8m": (64, 25_751_890),
    "marion-92.7m": (128, 92_670_610),
    "marion-201.3m": (192, 201_286_610),
}
# ours, 32×32 RGB, 10 classes (CIFAR-10, class-conditional); counted once, pinned
MARION_OURS = {
    "marion-2.9m": 2_930_451,
    "marion-7.9m": 7_936_035,
    "marion-25.8m": 25_765_443,
    "marion-92.7m": 92_697_219,
    "marion-201.3m": 201_326_275,
}
# Bonnaire et al. (2025): 32×32 gray, unconditional (CelebA)
BONNAIRE_OURS = {
    "bonnaire-w8": 255_089,
    "bonnaire-w16": 1_010_657,
    "bonnaire-w32": 4_023_233,
    "bonnaire-w48": 9_037_729,
    "bonnaire-w64": 16_054_145,
}


def model_data(cfg):
    return cfg.model, cfg.data


def cifar(preset: str):
    data = {"dataset": "cifar10", "class_conditional": True}
    return experiment_from_dict({"data": data, "model": {"preset": preset}})


def celeba(preset: str, tmp_path):
    (tmp_path / "a.png").write_bytes(b"")  # the folder dataset's root must exist to validate
    return experiment_from_dict({
        "data": {"dataset": "folder", "root": str(tmp_path), "channels": 1, "image_size": 32},
        "model": {"preset": preset},
    })  # fmt: skip


@pytest.mark.parametrize("preset", list(MARION))
def test_marion_presets_exact_and_within_5_percent_of_the_paper(preset):
    ours = param_count(*model_data(cifar(preset)))  # built on the meta device
    assert ours == MARION_OURS[preset]
    width, paper = MARION[preset]
    assert abs(ours / paper - 1) < 0.05
    # the paper's counts are exactly 5090·W² + 68325·W + 530450; ours differ by a small linear term
    assert paper == 5090 * width**2 + 68325 * width + 530450
    assert ours - paper == 204 * width + 497


@pytest.mark.parametrize("preset", list(BONNAIRE_OURS))
def test_bonnaire_presets_exact(preset, tmp_path):
    assert param_count(*model_data(celeba(preset, tmp_path))) == BONNAIRE_OURS[preset]
    assert PRESETS[preset]["base_channels"] == int(preset.removeprefix("bonnaire-w"))


def test_marion_table_1_architecture():
    p = PRESETS["marion-92.7m"]
    assert (p["base_channels"], p["channel_mults"], p["num_res_blocks"]) == (128, [1, 2, 4], 3)
    assert (p["head_dim"], p["emb_dim"]) == (64, 512)
    assert 16 in p["attn_resolutions"]


def test_meta_count_equals_a_real_model():
    cfg = cifar("marion-2.9m")
    torch.manual_seed(0)
    assert count_params(build_unet(cfg.model, 3, 32, num_classes=10)) == param_count(cfg.model, cfg.data)


def test_preset_axis_replaces_the_architecture():
    base = cifar("marion-92.7m")
    small = apply_overrides(base, {"model.preset": "marion-2.9m"})
    assert small.model.base_channels == 16 and small.model.scale_shift and small.model.noise_dim == 512


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model preset 'marion-93m'"):
        cifar("marion-93m")
