"""Networks from elsewhere through real Ray: the smoke sweep with a tiny diffusers UNet2DModel
(every trial memorizes, τ_mem recorded, the real parameter count in trials.parquet), and a
one-trial sweep of a user's `python` factory, importable on the workers from PYTHONPATH."""

from __future__ import annotations

import json
import os
import textwrap

import pyarrow.parquet as pq
import pytest
import yaml

from paths import ROOT
from raydiff.config import experiment_from_dict, load_search_space
from raydiff.models import param_count

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SMOKE = ROOT / "raydiff" / "search_spaces" / "smoke.yaml"
NET = '''
import torch
from torch import nn


class Residual(nn.Module):
    """x, c_noise, labels → x's shape: three convolutions told the noise level."""

    def __init__(self, in_channels, width):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels + 1, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, in_channels, 3, padding=1))

    def forward(self, x, c_noise, class_labels=None):
        level = (c_noise / 1000.0)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        return self.net(torch.cat([x, level], 1))


def build(in_channels, width=16):
    return Residual(in_channels, width)
'''


@pytest.fixture(scope="module")
def ray_with_user_code(tmp_path_factory):
    """A local Ray whose workers import the user's module from PYTHONPATH, as on a cluster where
    the module is installed or shipped."""
    import ray

    code = tmp_path_factory.mktemp("usercode")
    (code / "my_nets.py").write_text(textwrap.dedent(NET))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        mp.syspath_prepend(str(code))  # and the driver, which checks the network before Ray starts
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def _sweep(tmp_path, name: str, model: dict, grid: dict, **train) -> str:
    from raydiff.tune.sweep import run_sweep

    raw = yaml.safe_load(SMOKE.read_text())
    raw["sweep"]["name"] = name
    raw["model"] = model
    raw["grid"] = grid
    raw["train"].update(train)
    raw["eval"].update(fid_every=0)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return run_sweep(load_search_space(path), storage=str(tmp_path / "results")).uri


def test_smoke_sweep_with_a_diffusers_unet(tmp_path, ray_with_user_code, capsys):
    pytest.importorskip("diffusers")
    model = {"kind": "diffusers", "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}
    uri = _sweep(tmp_path, "smoke-diffusers", model, {"data.n_train": [8, 12]})  # two of the smoke's three N: CI time
    trials = pq.read_table(f"{uri}/trials.parquet").to_pylist()
    assert sorted(t["n_train"] for t in trials) == [8, 12]
    assert {t["status"] for t in trials} == {"memorized"}, [(t["n_train"], t["status"], t["stop_reason"]) for t in trials]
    assert all(t["tau_mem_step"] and t["tau_mem_step"] <= t["steps_done"] for t in trials)
    cfg = experiment_from_dict(json.loads(trials[0]["config"]))
    assert {t["params"] for t in trials} == {param_count(cfg.model, cfg.data)} and trials[0]["model"] == "diffusers-c16-32-r1"


def test_a_python_factory_in_a_one_trial_sweep(tmp_path, ray_with_user_code, capsys):
    model = {"kind": "python", "factory": "my_nets:build", "kwargs": {"width": 12}}
    uri = _sweep(tmp_path, "python-net", model, {"data.n_train": [8]}, max_steps=200)
    [trial] = pq.read_table(f"{uri}/trials.parquet").to_pylist()
    assert trial["status"] in ("memorized", "budget") and trial["steps_done"] <= 200, trial
    width, c = 12, 1
    expected = ((c + 1) * width * 9 + width) + (width * width * 9 + width) + (width * c * 9 + c)
    assert trial["params"] == expected and trial["model"] == "my_nets:build"
    steps = pq.read_table(f"{uri}/metrics").column("step").to_pylist()
    assert steps == list(range(50, trial["steps_done"] + 1, 50))
