"""Networks from elsewhere (raydiff/models/external.py): a diffusers UNet2DModel and a user's
`python` factory behind raydiff's network contract, their config checks, and their one-line errors."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import yaml
from tiny_trial import TINY, tiny

from raydiff import cli
from raydiff.config import ConfigError, experiment_from_dict
from raydiff.errors import UserError
from raydiff.models import build_network, model_name, param_count
from raydiff.trial import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_DIFFUSERS = {"kind": "diffusers", "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}
NETS = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """x, c_noise, labels → x's shape: a two-layer conv net told the noise level."""

    def __init__(self, in_channels, width):
        super().__init__()
        self.inp = nn.Conv2d(in_channels + 1, width, 3, padding=1)
        self.out = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x, c_noise, class_labels=None):
        level = (c_noise / 1000.0)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        return self.out(torch.relu(self.inp(torch.cat([x, level], 1))))


def tiny(in_channels, width=8, image_size=None):
    assert image_size is not None  # raydiff passes the image shape where the factory takes it
    return Tiny(in_channels, width)


def fails(**kw):
    raise RuntimeError("no such architecture")


def not_a_module(**kw):
    return "a string"


class Doubled(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * in_channels, 1)

    def forward(self, x, c_noise, class_labels=None):
        return self.conv(x)


def wrong_shape(in_channels):
    return Doubled(in_channels)
'''


@pytest.fixture
def nets(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_nets"
    sys.modules.pop("user_nets", None)


def test_the_ddpm_cifar10_preset_is_the_published_model():
    pytest.importorskip("diffusers")
    cfg = experiment_from_dict({"data": {"dataset": "cifar10", "n_train": 16}, "model": {"preset": "ddpm-cifar10"}}).validate()
    n = param_count(cfg.model, cfg.data)
    assert round(n / 1e6, 1) == 35.7 and n == 35_746_307  # google/ddpm-cifar10-32: 35.7M parameters
    assert cfg.model.kind == "diffusers" and model_name(cfg.model) == "ddpm-cifar10"


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
@pytest.mark.parametrize("conditional", [False, True])
def test_a_diffusers_unet_trains_under_every_process(objective, conditional):
    pytest.importorskip("diffusers")
    cfg = tiny(model=TINY_DIFFUSERS, diffusion={"objective": objective}, data={"class_conditional": conditional}, train={"max_steps": 20})
    net = build_network(cfg.model, 1, 8, 10 if conditional else 0)
    x = torch.randn(3, 1, 8, 8)
    assert net(x, torch.tensor([1.0, 500.0, 999.0])).shape == x.shape  # no labels: the "no label" token
    reports = []
    last = train(cfg, lambda m, _ckpt: reports.append(m) or False)
    assert [r["step"] for r in reports] == [20] and last["params"] == param_count(cfg.model, cfg.data)
    assert 0.0 <= last["mem_frac"] <= 1.0 and last["loss"] == last["loss"]
    assert model_name(cfg.model) == "diffusers-c16-32-r1"


def test_diffusers_follows_raydiffs_fields_where_its_own_are_unset():
    from raydiff.models.external import diffusers_kwargs

    cfg = tiny(model={"kind": "diffusers", "base_channels": 16, "channel_mults": [1, 2, 2], "attn_resolutions": [4], "norm_num_groups": 8})
    kw = diffusers_kwargs(cfg.model, 1, 8)
    assert kw["block_out_channels"] == (16, 32, 32) and kw["layers_per_block"] == cfg.model.num_res_blocks
    assert kw["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")  # 8, 4, 2: attention at 4
    assert kw["up_block_types"] == ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")


def test_a_python_factory_gets_its_keywords_and_the_image_shape(nets):
    cfg = tiny(model={"kind": "python", "factory": f"{nets}:tiny", "kwargs": {"width": 4}}, train={"max_steps": 20})
    assert cfg.model.kwargs == (("width", 4),)
    net = build_network(cfg.model, 1, 8)
    assert net.inp.out_channels == 4
    assert param_count(cfg.model, cfg.data) == sum(p.numel() for p in net.parameters()) == (2 * 4 * 9 + 4) + (4 * 9 + 1)
    last = train(cfg, lambda m, _ckpt: False)
    assert last["step"] == 20 and model_name(cfg.model) == f"{nets}:tiny"
    again = experiment_from_dict(cfg.to_dict()).validate()  # the trial's config column round-trips
    assert again.model == cfg.model


@pytest.mark.parametrize(
    "model, message",
    [
        pytest.param({"kind": "keras"}, "model.kind", id="kind"),
        pytest.param({"kind": "python"}, "model.factory: kind python needs a factory", id="no-factory"),
        pytest.param({"kind": "python", "factory": "no colon"}, "model.factory", id="factory-form"),
        pytest.param({"factory": "a.b:c"}, "model.factory: is for model.kind: python", id="factory-without-kind"),
        pytest.param({"kind": "python", "factory": "a:b", "kwargs": {"x": {"deep": 1}}}, "model.kwargs.x: values are", id="kwargs-nested"),
        pytest.param({"layers_per_block": 2}, "are for model.kind: diffusers", id="diffusers-keys-on-raydiff"),
        pytest.param({**TINY_DIFFUSERS, "down_block_types": ["DownBlock2D"]}, "model.down_block_types: needs one block type per level (2; got 1)", id="block-types"),
        pytest.param({**TINY_DIFFUSERS, "norm_num_groups": 32}, "must divide by model.norm_num_groups", id="groups"),
    ],
)
def test_config_errors_name_the_key(model, message):
    with pytest.raises(ConfigError) as e:
        tiny(model=model)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "factory, message",
    [
        pytest.param("no_such_module_anywhere:net", "model.factory: cannot import no_such_module_anywhere:net (ModuleNotFoundError", id="import"),
        pytest.param("user_nets:absent", "cannot import user_nets:absent (AttributeError", id="attribute"),
        pytest.param("user_nets:fails", "user_nets:fails(**{'in_channels': 1, 'image_size': 8, 'num_classes': 0}) failed: RuntimeError: no such", id="call"),
        pytest.param("user_nets:not_a_module", "returned str, not a torch.nn.Module", id="not-a-module"),
    ],
)
def test_factory_errors_are_one_line(nets, factory, message):
    cfg = tiny(model={"kind": "python", "factory": factory})
    with pytest.raises(UserError) as e:
        build_network(cfg.model, 1, 8)
    assert message in str(e.value) and "\n" not in str(e.value)


def _space(tmp_path, model: dict) -> str:
    raw = {"sweep": {"name": "ext"}, "grid": {"data.n_train": [8]}, **TINY}
    raw["model"] = model
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_network_of_the_wrong_shape_is_refused_before_ray(nets, tmp_path, capsys):
    assert cli.main(["sweep", _space(tmp_path, {"kind": "python", "factory": f"{nets}:wrong_shape"}), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.factory: the network must return its input's shape [2, 1, 8, 8] (got [2, 2, 8, 8]" in err


def test_diffusers_missing_is_one_line_before_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed: its import raises ImportError
    assert cli.main(["sweep", _space(tmp_path, TINY_DIFFUSERS), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.kind: diffusers needs the diffusers package" in err and '.[diffusers]' in err


def test_grids_over_model_keys_for_a_diffusers_unet():
    pytest.importorskip("diffusers")
    from raydiff.config import search_space_from_dict

    space = search_space_from_dict({
        "sweep": {"name": "g"}, **TINY, "model": TINY_DIFFUSERS,
        "grid": {"model.layers_per_block": [1, 2], "model.block_out_channels": [[16, 32], [32, 64]]},
    })  # fmt: skip
    exps = space.experiments()
    assert [(e.model.layers_per_block, e.model.block_out_channels) for e in exps] == [(1, (16, 32)), (1, (32, 64)), (2, (16, 32)), (2, (32, 64))]
    assert len({param_count(e.model, e.data) for e in exps}) == 4 and all(e.model.kind == "diffusers" for e in exps)
