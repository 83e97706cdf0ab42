"""The U-Net: shapes, parameter counts (a regression guard), gradients, class labels."""

from __future__ import annotations

import pytest
import torch

from raydiff.config import ModelConfig
from raydiff.config import PRESETS
from raydiff.models import UNet, build_unet, count_params


@pytest.mark.parametrize(
    "channels, size, kw, num_classes",
    [
        pytest.param(1, 8, dict(base_channels=8, channel_mults=(1, 2)), 0, id="gray8"),
        pytest.param(3, 8, dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=2), 0, id="rgb8-2blocks"),
        pytest.param(1, 8, dict(base_channels=16, channel_mults=(1, 2), attn_resolutions=(4,), head_dim=8), 0, id="gray8-attn"),
        pytest.param(3, 32, dict(base_channels=8, channel_mults=(1, 2, 2), attn_resolutions=(16,), head_dim=8), 0, id="rgb32-attn"),
        pytest.param(3, 32, dict(base_channels=8, channel_mults=(1, 2, 2, 2)), 10, id="rgb32-classes"),
        pytest.param(1, 8, dict(PRESETS["digits-tiny"]), 10, id="digits-tiny-classes"),
    ],
)
def test_output_shape_equals_input_shape(channels, size, kw, num_classes):
    net = UNet(channels, size, num_classes=num_classes, **kw)
    x = torch.randn(3, channels, size, size)
    labels = torch.tensor([0, 1, 2]) if num_classes else None
    with torch.no_grad():
        out = net(x, torch.tensor([0.0, 10.0, 999.0]), labels)
    assert out.shape == x.shape


def test_digits_tiny_parameter_count():
    # regression guard: measured once for the preset of the embedded default; a change in the
    # architecture changes every τ_mem of the default sweep, so it must be deliberate
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in PRESETS["digits-tiny"].items()})
    assert count_params(build_unet(cfg, in_channels=1, image_size=8)) == 159_697
    # class conditional: one 64-wide embedding row per class plus the "no label" row
    assert count_params(build_unet(cfg, in_channels=1, image_size=8, num_classes=10)) == 159_697 + 11 * 64


def test_parameter_count_by_hand():
    # one level of width 4, one residual block, 8-dim embedding, 1 input channel, no attention
    c, e = 4, 8
    conv3 = lambda i, o: i * o * 9 + o  # noqa: E731
    linear = lambda i, o: i * o + o  # noqa: E731
    gn = lambda ch: 2 * ch  # noqa: E731

    def resblock(i, o):
        skip = 0 if i == o else i * o + o  # 1×1 conv when the width changes
        return gn(i) + conv3(i, o) + linear(e, o) + gn(o) + conv3(o, o) + skip

    noise_embed = linear(c, e) + linear(e, e)  # sinusoid of width c → e → e
    conv_in = conv3(1, c)
    down = resblock(c, c)  # skips: conv_in (c) and this block (c)
    mid = 2 * resblock(c, c)
    up = 2 * resblock(c + c, c)  # num_res_blocks + 1 blocks, each concatenating one skip
    out = gn(c) + conv3(c, 1)
    total = noise_embed + conv_in + down + mid + up + out
    assert total == 2313
    net = UNet(1, 8, base_channels=c, channel_mults=(1,), num_res_blocks=1, emb_dim=e)
    assert count_params(net) == total


def test_gradient_flows_to_every_parameter():
    net = UNet(1, 8, base_channels=8, channel_mults=(1, 2), attn_resolutions=(4,), head_dim=8, num_classes=3)
    # the zero-initialized output layers would block gradients at init: randomize everything
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    out = net(x, torch.tensor([1.0, 100.0, 500.0, 900.0]), torch.tensor([0, 1, 2, 3]))
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_zero_initialized_output():
    # the output layer starts at zero (each block starts as the identity): stable early training
    net = UNet(1, 8, base_channels=8)
    with torch.no_grad():
        assert net(torch.randn(2, 1, 8, 8), torch.tensor([1.0, 2.0])).abs().max() == 0


def test_class_labels_none_is_the_no_label_token():
    net = UNet(1, 8, base_channels=8, num_classes=10)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
        x, c = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 700.0])
        none = net(x, c, None)
        token = net(x, c, torch.tensor([10, 10]))  # num_classes is the "no label" row
        labelled = net(x, c, torch.tensor([1, 2]))
    assert none.shape == x.shape
    assert torch.equal(none, token)
    assert not torch.allclose(none, labelled)


def test_noise_level_changes_the_output():
    net = UNet(1, 8, base_channels=8)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
        x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)
        out = net(x, torch.tensor([10.0, 900.0]))
    assert not torch.allclose(out[0], out[1])
