"""The data and batch knobs the papers' spaces need: data.normalization (symmetric | centered),
train.batch_rule (fixed | min_n, with batch_cap) and train.sampling (replacement | epochs)."""

from __future__ import annotations

import io

import pytest
import torch
from tiny_trial import with_sections

from raydiff.config import ConfigError
from raydiff.data import channel_mean, from_model, load, to_model, to_model_range, to_uint8, train_mean
from raydiff.diffusion import build_process
from raydiff.evaluation import Evaluator
from raydiff.metrics.memorization import memorized_pixel
from raydiff.training.step import OptimizerStep
from raydiff.training.state import TrainState

CPU = torch.device("cpu")
SMALL = {
    "data": {"dataset": "digits", "n_train": 8, "n_test": 16},
    "model": {"base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16},
    "diffusion": {"objective": "ddpm", "sample_steps": 2},
    "train": {"batch_size": 4, "device": "cpu"},
    "eval": {"every_steps": 10, "num_samples": 4, "fid_every": 0, "probe_images": 2, "probe_noise_levels": 1},
}  # fmt: skip


def config(**sections):
    return with_sections(SMALL, **sections)


def images(n=37, c=3, s=5, seed=0):
    return torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- normalization


def test_symmetric_is_todays_conversion_bit_for_bit():
    x = images()
    assert torch.equal(to_model(x), to_model_range(x)) and torch.equal(to_model(x, "symmetric", None), to_model_range(x))
    y = torch.linspace(-1.3, 1.3, 3 * 25 * 37).reshape(37, 3, 5, 5)
    assert torch.equal(from_model(y), to_uint8(y))
    assert train_mean("symmetric", x) is None


def test_centered_round_trips_uint8():
    x = images()
    mean = train_mean("centered", x)
    assert mean.shape == (3,) and mean.dtype == torch.float32
    assert torch.allclose(mean.double(), x.double().div(255).mean(dim=(0, 2, 3)), atol=1e-7)
    z = to_model(x, "centered", mean)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6)  # centered on the training images
    assert z.min() >= -1.0 and z.max() <= 1.0  # inside the box the samplers clip to
    assert torch.allclose(z + mean.view(1, -1, 1, 1), x.float() / 255)  # [0, 1] minus the mean
    assert torch.equal(from_model(z, "centered", mean), x)  # uint8 → model range → uint8
    assert torch.equal(from_model(z.double(), "centered", mean), x)
    # held-out images use the training mean, and values outside the pixel range clip
    other = images(seed=1)
    assert torch.equal(from_model(to_model(other, "centered", mean), "centered", mean), other)
    assert from_model(torch.full((1, 3, 1, 1), 5.0), "centered", mean).tolist() == [[[[255]], [[255]], [[255]]]]
    assert from_model(torch.full((1, 3, 1, 1), -5.0), "centered", mean).tolist() == [[[[0]], [[0]], [[0]]]]
    with pytest.raises(ValueError, match="centered with the training mean"):
        to_model(x, "centered", None)


def test_channel_mean_is_exact_on_large_sets():
    x = torch.full((5000, 1, 4, 4), 255, dtype=torch.uint8)  # more than one chunk
    x[:2500] = 0
    assert channel_mean(x).tolist() == [0.5]


def test_centered_config_is_used_for_training_probes_and_samples():
    cfg = config(data={"normalization": "centered"})
    data = load(cfg.data)
    mean = channel_mean(data.x_train)
    ts = TrainState(cfg, data, CPU)
    step = OptimizerStep(cfg, ts, build_process(cfg.diffusion), data, CPU)
    assert torch.equal(step.x_train, to_model(data.x_train, "centered", mean))
    with torch.random.fork_rng():
        ev = Evaluator(cfg, data, build_process(cfg.diffusion), CPU)
    assert ev.norm[0] == "centered" and torch.equal(ev.norm[1], mean)
    assert torch.equal(ev.train_flat, to_model(data.x_train, "centered", mean).reshape(8, -1))
    assert torch.equal(ev.train_probe.x0[:: cfg.eval.probe_noise_levels], to_model(data.x_train[:2], "centered", mean))
    samples = ev.sample(ts.net, 4)
    assert samples.dtype == torch.uint8 and samples.shape == (4, 1, 8, 8)
    metrics = ev(ts.net, 0, memorization_only=True)
    assert 0.0 <= metrics["mem_frac"] <= 1.0


def test_ratio_test_is_the_same_in_either_range():
    """The pixel ratio test compares samples and training images in one space: [-1, 1] or
    centered, the ratios agree (a scale and a shift), so the memorized flags do too."""
    train, samples = images(n=50, seed=2), images(n=20, seed=3)
    samples[:5] = train[:5]  # copies: ratio 0
    mean = channel_mean(train)
    flags_sym, nb_sym = memorized_pixel(to_model(samples), to_model(train).reshape(50, -1), 1 / 3)
    flags_cen, nb_cen = memorized_pixel(
        to_model(samples, "centered", mean), to_model(train, "centered", mean).reshape(50, -1), 1 / 3
    )
    assert torch.equal(flags_sym, flags_cen) and flags_sym[:5].all()
    assert torch.equal(nb_sym.index, nb_cen.index)
    assert torch.allclose(nb_sym.d1 / nb_sym.d2, nb_cen.d1 / nb_cen.d2, atol=1e-4)


def test_normalization_is_checked():
    with pytest.raises(ConfigError, match="data.normalization: must be one of symmetric, centered"):
        config(data={"normalization": "standardized"})


# ------------------------------------------------------------------------------ batch rule


@pytest.mark.parametrize(
    "n, train, batch",
    [
        pytest.param(8, {}, 4, id="fixed"),
        pytest.param(2, {}, 4, id="fixed-above-n"),
        pytest.param(128, {"batch_size": 512, "batch_rule": "min_n"}, 128, id="min_n-below-cap"),
        pytest.param(1024, {"batch_size": 512, "batch_rule": "min_n"}, 512, id="min_n-at-cap"),
        pytest.param(100, {"batch_size": 16, "batch_rule": "min_n", "batch_cap": 64}, 64, id="min_n-batch_cap"),
        pytest.param(10, {"batch_size": 16, "batch_rule": "min_n", "batch_cap": 64}, 10, id="min_n-batch_cap-n"),
    ],
)
def test_batch_rule(n, train, batch):
    cfg = config(data={"n_train": n}, train=train)
    assert cfg.batch == batch


def test_budget_and_training_use_the_resolved_batch():
    cfg = config(data={"n_train": 8}, train={"batch_size": 512, "batch_rule": "min_n", "max_steps": 1000,
                                             "budget_scaling": "n_over_b", "budget_ref_n": 8, "budget_ref_batch": 4})  # fmt: skip
    assert cfg.batch == 8 and cfg.budget_steps == 500 and "B=8" in cfg.budget_reason  # 1000 × (8/8) × (4/8)
    data = load(cfg.data)
    step = OptimizerStep(cfg, TrainState(cfg, data, CPU), build_process(cfg.diffusion), data, CPU)
    assert step.b == 8 and step.draw().shape == (8,)


@pytest.mark.parametrize(
    "train, message",
    [
        ({"batch_rule": "min_k"}, "train.batch_rule: must be one of fixed, min_n"),
        ({"batch_cap": 64}, "train.batch_cap: applies only with train.batch_rule: min_n"),
        ({"batch_rule": "min_n", "batch_cap": 0}, "train.batch_cap"),
        ({"batch_rule": "min_n", "batch_cap": 10**6}, "train.batch_cap: must be ≤ 65,536"),
        ({"sampling": "bootstrap"}, "train.sampling: must be one of replacement, epochs"),
    ],
)
def test_batch_knobs_are_checked(train, message):
    with pytest.raises(ConfigError, match=message):
        config(train=train)


# -------------------------------------------------------------------------------- sampling


def stepper(n=8, b=3, sampling="epochs"):
    cfg = config(data={"n_train": n}, train={"batch_size": b, "sampling": sampling})
    data = load(cfg.data)
    ts = TrainState(cfg, data, CPU)
    return cfg, data, ts, OptimizerStep(cfg, ts, build_process(cfg.diffusion), data, CPU)


def test_replacement_draws_as_before():
    """The default draws exactly what it drew before the knob: B uniform indices per step."""
    _, _, _, step = stepper(b=5, sampling="replacement")
    g = torch.Generator().manual_seed(0 + 10_007)
    for _ in range(4):
        assert torch.equal(step.draw(), torch.randint(0, 8, (5,), generator=g))


@pytest.mark.parametrize("b", [4, 3, 8, 11])
def test_epochs_visit_every_image_once_per_epoch(b):
    _, _, ts, step = stepper(b=b)
    stream = torch.cat([step.draw() for _ in range(24)])  # 24·b images: 3·b whole epochs of 8
    assert all(len(stream[i * b : (i + 1) * b]) == b for i in range(24))  # every batch is a full B
    epochs = stream.view(-1, 8)
    assert len(epochs) == 3 * b
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(8))
    assert len({tuple(e.tolist()) for e in epochs}) > 1  # a fresh permutation each epoch
    assert ts.epoch_pos == 8  # the last epoch is spent; the next draw starts a new one


def test_epochs_restore_mid_epoch_to_the_same_sequence():
    cfg, data, ts, step = stepper(b=3)
    for _ in range(5):  # 15 images: mid-way through the second epoch
        step.draw()
    assert 0 < ts.epoch_pos < 8
    buf = io.BytesIO()
    torch.save(ts.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    after = [step.draw() for _ in range(9)]
    ts2 = TrainState(cfg, data, CPU)
    ts2.load_state_dict(state)
    step2 = OptimizerStep(cfg, ts2, build_process(cfg.diffusion), data, CPU)
    assert all(torch.equal(a, b) for a, b in zip(after, [step2.draw() for _ in range(9)]))


def test_a_checkpoint_without_epoch_state_loads():
    """Checkpoints written before the knob carry no epoch state: they restore as 'no epoch yet'."""
    cfg, data, ts, _ = stepper(sampling="replacement")
    state = ts.state_dict()
    del state["epoch_perm"], state["epoch_pos"]
    ts2 = TrainState(cfg, data, CPU)
    ts2.load_state_dict(state)
    assert ts2.epoch_perm is None and ts2.epoch_pos == 0
