"""The papers' search spaces: dry-run tables in both sweep modes, Bonnaire's on a folder, and
one CPU trial of the Marion & Wu settings on a CIFAR-10 archive written by the test."""

from __future__ import annotations

import math
import re

import pytest
import torch
import yaml
from cifar_archive import trust, write_cifar10

from raydiff.cli import main
from raydiff.config import ConfigError, apply_overrides, load_search_space, packaged_search_space, search_space_from_dict
from raydiff.preflight import preflight
from raydiff.trial import train

MARION = packaged_search_space("marion2026_cifar10")
BONNAIRE = packaged_search_space("bonnaire2025")
PARAMS = {"marion-2.9m": 2_930_451, "marion-7.9m": 7_936_035, "marion-25.8m": 25_765_443,
          "marion-92.7m": 92_697_219, "marion-201.3m": 201_326_275}  # fmt: skip


def dry_run(capsys, *args) -> tuple[list[list[str]], str]:
    assert main(["sweep", *args, "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [ln.split() for ln in lines if re.match(r"\s*\d+\s+cifar10\s", ln)]
    summary = next(ln for ln in lines if re.match(r"\d+ trials \(", ln))  # the cost table follows it
    return rows, summary


def test_marion_one_factor_dry_run(capsys, tmp_path):
    rows, summary = dry_run(capsys, str(MARION), "--storage", str(tmp_path))
    assert summary.startswith("14 trials (one_factor mode)")
    assert len(rows) == 14
    # columns: #, dataset, N, model, params, B, lr, objective, resources (4 words), budget, eval_every
    default = rows[0]
    assert default[1:8] == ["cifar10", "2048", "marion-92.7m", "92,697,219", "16", "1e-04", "flow"]
    assert {(r[3], r[4]) for r in rows} == {(m, f"{p:,}") for m, p in PARAMS.items()}
    # every other trial moves exactly one axis away from the default point
    for r in rows[1:]:
        assert sum(a != b for a, b in zip((r[2], r[3], r[5], r[6]), (default[2], default[3], default[5], default[6]))) == 1
    budgets = {(r[2], r[5]): int(r[-2]) for r in rows}
    assert budgets[("2048", "16")] == 400_000
    assert budgets[("16384", "16")] == 8 * 400_000  # ∝ N
    assert budgets[("2048", "128")] == 400_000 // 8  # ∝ 1/B
    # requests by model (sweep.resources_by): ≤ 30M parameters packed two per GPU, the rest a whole one
    small = {"marion-2.9m", "marion-7.9m", "marion-25.8m"}
    assert all(" ".join(r[8:12]) == ("1 CPU, 0.5 GPU" if r[3] in small else "3 CPU, 1 GPU") for r in rows)
    assert not (tmp_path / "marion2026-cifar10").exists()  # a dry run writes nothing


def test_marion_grid_dry_run(capsys, tmp_path):
    rows, summary = dry_run(capsys, str(MARION), "--mode", "grid", "--storage", str(tmp_path))
    assert summary.startswith("320 trials (grid mode)")
    assert len(rows) == 320 == len({(r[2], r[3], r[5], r[6]) for r in rows})


def test_marion_file_records_the_papers_settings():
    base = load_search_space(MARION).base
    assert (base.diffusion.objective, base.diffusion.sample_steps, base.diffusion.guidance) == ("flow", 250, 0.0)
    assert (base.train.optimizer, base.train.ema_decay, base.train.budget_scaling) == ("adam", 0.9999, "n_over_b")
    assert base.data.class_conditional and base.data.n_test == 5120
    assert (base.eval.mem_cosine, base.eval.swd_samples, base.eval.fid_features) == (0.6, 2000, "inception")
    assert base.eval.embedding.endswith(".torchscript.pt")
    assert base.eval.refine_snapshots > 0 and base.data.normalization == "symmetric"


def as_folder(raw: dict, root) -> dict:
    """Bonnaire's space with its CelebA read from a folder of images instead of the hub."""
    for key in ("hf_name", "hf_config", "hf_revision", "split", "order", "image_column"):
        raw["data"].pop(key)
    raw["data"].update(dataset="folder", root=str(root))
    return raw


def test_bonnaire_grid_with_a_folder(tmp_path):
    import io

    from PIL import Image

    raw = yaml.safe_load(BONNAIRE.read_text())
    assert raw["grid"]["data.n_train"] == [128 * 2**k for k in range(9)]  # 128 … 32,768
    assert raw["grid"]["model.preset"] == [f"bonnaire-w{w}" for w in (8, 16, 32, 48, 64)]
    png = io.BytesIO()
    Image.new("L", (32, 32), 128).save(png, format="PNG")
    for i in range(512 + 2048):  # enough for n ≤ 512 beside the 2,048 held out
        (tmp_path / f"{i:06d}.png").write_bytes(png.getvalue())
    as_folder(raw, tmp_path)
    raw["grid"]["data.n_train"] = [128, 256, 512]
    space = search_space_from_dict(raw)
    assert len(space.points()) == 3 * 5  # grid mode: every (n, W)
    exp = space.experiments()[0]
    assert (exp.diffusion.objective, exp.diffusion.num_timesteps, exp.diffusion.beta_end) == ("ddpm", 1000, 0.02)
    assert (exp.train.optimizer, exp.train.momentum, exp.model.dropout) == ("sgd", 0.95, 0.1)
    assert exp.data.shape == (32, 1)
    # their loader, batch rule, DataLoader and sampler (Utils/loader.py, run_Unet.py, generate.py)
    assert (exp.data.normalization, exp.train.sampling, exp.diffusion.resolved_sampler) == ("centered", "epochs", "ddim")
    assert [e.batch for e in space.experiments()[::5]] == [128, 256, 512]  # B = min(n, 512)
    assert (exp.eval.num_samples, exp.eval.mem_sample_steps, exp.eval.refine_snapshots > 0) == (10_000, 99, True)
    # their sampler, t range, float f_mem, FID pipeline and U-Net blocks (Utils/Diffusion.py, compute_fmem.py, compute_FID.py, Unet.py)
    assert (exp.diffusion.step_grid, exp.diffusion.clip_x0, exp.diffusion.t_min, exp.eval.mem_on_floats) == ("floored", False, 1, True)
    assert (exp.eval.fid_mode, exp.model.style, exp.stop.headline) == ("legacy_pytorch", "bonnaire2025", "pixel")
    raw["grid"]["data.n_train"].append(1024)
    with pytest.raises(ConfigError, match="n_train \\+ n_test must be ≤ 2560"):  # the folder's size: preflight's
        preflight(search_space_from_dict(raw))


def test_one_marion_trial_on_cpu(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, per_batch=20, n_test=40)
    trust(monkeypatch, written["md5"])
    space = load_search_space(MARION)
    cfg = apply_overrides(space.base, {
        "model.preset": "marion-2.9m", "data.root": str(tmp_path), "data.download": False,
        "data.n_train": 32, "data.n_test": 16, "train.batch_size": 2, "train.max_steps": 2,
        "train.budget_scaling": "fixed", "train.device": "cpu", "diffusion.sample_steps": 1,
        "eval.every_steps": 2, "eval.every_images": None, "eval.cadence": "uniform", "eval.num_samples": 2,
        "eval.fid_every": 0, "eval.measures": ["pixel", "loss"], "stop.on": ["pixel", "loss"], "eval.probe_images": 1,
        "eval.probe_noise_levels": 1, "eval.save_samples": 2,
    })  # fmt: skip
    # the file's own settings are what runs: rectified flow, class labels, EMA 0.9999, Adam
    assert (cfg.diffusion.objective, cfg.data.class_conditional, cfg.train.ema_decay) == ("flow", True, 0.9999)
    reports = []
    last = train(cfg, lambda m, ckpt: reports.append((m, ckpt)))
    assert [m["step"] for m, _ in reports] == [2]
    assert last["params"] == PARAMS["marion-2.9m"] and last["n_train"] == 32
    assert last["fid"] is None and 0.0 <= last["mem_frac"] <= 1.0
    assert last["train_loss"] > 0 and last["test_loss"] > 0
    assert "tau_mem_loss_step" in last
    state = reports[-1][1]()
    assert state["ema"] is not None and state["step"] == 2  # the EMA weights are kept beside the raw ones


def test_optimizer_choice():
    from raydiff.config import experiment_from_dict
    from raydiff.data import load
    from raydiff.training.state import TrainState

    cfg = experiment_from_dict({"data": {"n_train": 8, "n_test": 8}, "model": {"preset": "digits-tiny"},
                                "train": {"optimizer": "sgd", "momentum": 0.95, "lr": 0.01}}).validate()  # fmt: skip
    opt = TrainState(cfg, load(cfg.data), torch.device("cpu")).opt
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.95
    with pytest.raises(ConfigError, match="train.optimizer: must be one of adam, sgd"):
        search_space_from_dict({"train": {"optimizer": "lion"}})


def test_one_bonnaire_trial_on_cpu(tmp_path):
    """The file's own settings run: centered gray images, B = min(n, 512), shuffled epochs, SGD,
    DDIM samples for the ratio test."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(16 + 8):
        pixels = torch.randint(0, 256, (32, 32), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels, mode="L").save(tmp_path / f"{i:06d}.png")
    raw = as_folder(yaml.safe_load(BONNAIRE.read_text()), tmp_path)
    space = search_space_from_dict(raw)
    cfg = apply_overrides(space.base, {
        "model.preset": "bonnaire-w8", "data.n_train": 16, "data.n_test": 8, "train.max_steps": 4,
        "train.device": "cpu", "diffusion.sample_steps": 2, "eval.mem_sample_steps": 2, "eval.every_steps": 2,
        "eval.cadence": "uniform", "eval.num_samples": 4, "eval.fid_every": 0, "eval.probe_images": 2,
        "eval.probe_noise_levels": 1, "eval.refine_snapshots": 1, "eval.save_samples": 2,
    })  # fmt: skip
    assert (cfg.data.normalization, cfg.batch, cfg.train.sampling) == ("centered", 16, "epochs")
    reports = []
    last = train(cfg, lambda m, ckpt: reports.append((m, ckpt)))
    assert [m["step"] for m, _ in reports] == [2, 4]
    assert 0.0 <= last["mem_frac"] <= 1.0 and math.isnan(last["train_loss"])  # the loop measures what its stop needs: no loss probes
    state = reports[-1][1]()
    assert state["ema"] is None and state["epoch_pos"] == 16  # 4 steps × 16 = 4 whole epochs


def test_marion_trial_measures_its_own_onset_definitions(tmp_path, monkeypatch):
    """Marion & Wu's space keeps its own stop rule (features and loss, then 25% of τ more): a CPU
    trial with a stand-in TorchScript embedding reports every definition's series and τ."""
    import warnings

    from raydiff.metrics.stop import stop_onset

    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    emb = tmp_path / "standin.torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Pool()).save(str(emb))
    written = write_cifar10(tmp_path, per_batch=20, n_test=40)
    trust(monkeypatch, written["md5"])
    space = load_search_space(MARION)
    assert space.base.stop.on == ("features", "loss") and space.base.stop.continue_for == 0.25
    cfg = apply_overrides(space.base, {
        "model.preset": "marion-2.9m", "data.root": str(tmp_path), "data.download": False, "data.n_train": 8,
        "data.n_test": 8, "train.batch_size": 2, "train.max_steps": 4, "train.budget_scaling": "fixed",
        "train.device": "cpu", "diffusion.sample_steps": 1, "eval.every_steps": 2, "eval.every_images": None,
        "eval.cadence": "uniform", "eval.num_samples": 4, "eval.fid_every": 0, "eval.embedding": str(emb),
        "eval.probe_images": 1, "eval.probe_noise_levels": 1, "eval.save_samples": 0, "eval.refine_snapshots": 0,
        "eval.mem_sample_steps": None,
    })  # fmt: skip
    # the loop measures what the stop needs: the SSCD test and the loss probes (no pixel, no raw-weights test)
    assert cfg.measured == ("features", "loss", "fid", "swd") and cfg.definitions == ("features", "loss") and not cfg.measures_raw
    reports = []
    train(cfg, lambda m, ckpt: reports.append(m) or False)
    last = reports[-1]
    assert not [k for k in last if k.startswith("history_")]  # a report is O(1): the series stay in train()
    assert [r["step"] for r in reports] == [2, 4]
    assert all(r["mem_frac_features"] is not None and r["test_loss"] is not None and r.get("mem_frac_raw") is None for r in reports)
    for d in ("features", "loss"):
        assert f"tau_mem_{d}_step" in last
    found = {d: last[f"tau_mem_{d}_step"] for d in ("features", "loss")}
    assert last["tau_mem_step"] == stop_onset(found, cfg.stop)  # the latest of features and loss
