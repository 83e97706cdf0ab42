"""Memorization tests: exact nearest neighbours, the 1/3 ratio rule on real digits, intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydiff.config import DataConfig
from raydiff.data import load, to_model_range
from raydiff.metrics.memorization import fraction_with_interval, memorized_cosine, memorized_pixel, nearest_two


@pytest.fixture(scope="module")
def digits():
    d = load(DataConfig(dataset="digits", n_train=512, n_test=512))
    return to_model_range(d.x_train), to_model_range(d.x_test)  # [512, 1, 8, 8] each, disjoint


@pytest.mark.parametrize(
    "s, n, shape, chunk, candidates",
    [
        pytest.param(50, 37, (64,), 16, 8, id="chunk-smaller-than-S"),
        pytest.param(50, 37, (64,), 1024, 8, id="one-chunk"),
        pytest.param(33, 200, (3, 4, 4), 7, 2, id="images-two-candidates"),
        pytest.param(10, 2, (5,), 3, 8, id="N=2"),
    ],
)
def test_nearest_two_equals_brute_force(s, n, shape, chunk, candidates):
    g = torch.Generator().manual_seed(s * 1000 + n)
    samples = torch.randn(s, *shape, generator=g)
    train = torch.randn(n, *shape, generator=g)
    nb = nearest_two(samples, train, chunk=chunk, candidates=candidates)
    dist = torch.cdist(samples.flatten(1).double(), train.flatten(1).double())  # [S, N] brute force
    ranked, order = dist.sort(dim=1)
    assert torch.allclose(nb.d1.double(), ranked[:, 0], rtol=1e-5, atol=1e-5)
    assert torch.allclose(nb.d2.double(), ranked[:, 1], rtol=1e-5, atol=1e-5)
    assert torch.equal(nb.index, order[:, 0])


def test_nearest_two_single_training_image():
    nb = nearest_two(torch.zeros(3, 4), torch.ones(1, 4))
    assert nb.d1.tolist() == pytest.approx([2.0] * 3)
    assert torch.isinf(nb.d2).all() and nb.index.tolist() == [0, 0, 0]


def test_nearest_two_is_exact_for_near_duplicates():
    # the matmul expansion loses digits for close points; the re-measured distances must not
    train = torch.randn(100, 64, generator=torch.Generator().manual_seed(0)) * 10.0
    samples = train[:5] + 1e-3
    nb = nearest_two(samples, train)
    assert nb.index.tolist() == [0, 1, 2, 3, 4]
    assert nb.d1.tolist() == pytest.approx([1e-3 * 8.0] * 5, rel=1e-2)  # ‖1e-3 · 1₆₄‖ = 8e-3


def test_mem_frac_is_one_on_copies(digits):
    train, _ = digits
    shuffled = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    flags, nb = memorized_pixel(shuffled, train, 1 / 3, chunk=100)
    assert flags.all()
    assert (nb.d1 == 0).all()
    assert fraction_with_interval(flags).value == 1.0


def test_mem_frac_is_near_zero_on_held_out(digits):
    train, test = digits
    flags, nb = memorized_pixel(test, train, 1 / 3)
    frac = fraction_with_interval(flags)
    assert frac.value <= 0.02
    assert (nb.d1 > 0).all()


def test_mem_frac_on_a_mix(digits):
    # 64 copies among 256 held-out images: exactly a quarter memorized
    train, test = digits
    mix = torch.cat([train[:64], test[:192]])
    flags, _ = memorized_pixel(mix, train)
    assert flags[:64].all()
    assert fraction_with_interval(flags).value == pytest.approx(64 / 256, abs=0.02)


def test_noisy_copies_cross_the_ratio(digits):
    # a copy plus small noise is still memorized; plus large noise it is not
    train, _ = digits
    g = torch.Generator().manual_seed(1)
    small = train[:100] + 0.02 * torch.randn(train[:100].shape, generator=g)
    large = train[:100] + 1.0 * torch.randn(train[:100].shape, generator=g)
    assert memorized_pixel(small, train)[0].float().mean() == 1.0
    assert memorized_pixel(large, train)[0].float().mean() < 0.1


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(np.array([True] * 3 + [False] * 97), id="3pct"),
        pytest.param(np.array([True, False] * 32), id="half"),
        pytest.param(np.zeros(128, dtype=bool), id="none"),
        pytest.param(np.ones(20, dtype=bool), id="all"),
        pytest.param(torch.rand(200, generator=torch.Generator().manual_seed(2)) < 0.2, id="torch-20pct"),
    ],
)
def test_fraction_with_interval_brackets_value(flags):
    f = fraction_with_interval(flags)
    expected = float(np.asarray(flags).mean())
    assert f.value == pytest.approx(expected)
    assert 0.0 <= f.lo <= f.value <= f.hi <= 1.0
    assert f.lo < f.hi  # exact (Clopper–Pearson): a real interval even at 0/S and S/S
    assert fraction_with_interval(flags) == f  # no resampling: the same flags, the same interval
    # the old bootstrap arguments are accepted and change nothing
    assert fraction_with_interval(flags, 500, seed=3) == f


def test_fraction_interval_width_shrinks_with_samples():
    small = fraction_with_interval(np.arange(40) % 4 == 0)
    big = fraction_with_interval(np.arange(4000) % 4 == 0)
    assert small.value == big.value == 0.25
    assert (big.hi - big.lo) < (small.hi - small.lo) / 5  # ∝ 1/√S: 10× narrower


def test_no_memorized_sample_is_not_zero_memorization():
    """0 of 128 memorized bounds the fraction by ≈ 2.9% (the bootstrap said [0, 0])."""
    f = fraction_with_interval(torch.zeros(128, dtype=torch.bool))
    assert (f.value, f.lo) == (0.0, 0.0) and f.hi == pytest.approx(1 - 0.025 ** (1 / 128))


def test_fraction_of_nothing_is_nan():
    f = fraction_with_interval(np.array([], dtype=bool))
    assert np.isnan(f.value) and np.isnan(f.lo) and np.isnan(f.hi)


def test_memorized_cosine_on_copies(digits):
    train, test = digits
    emb_train = train.flatten(1)[:200]
    flags, best = memorized_cosine(emb_train[torch.randperm(200)] * 3.0, emb_train, 0.6, chunk=64)  # scale-free
    assert flags.all()
    assert best.tolist() == pytest.approx([1.0] * 200, abs=1e-5)
    rand = torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    flags_r, best_r = memorized_cosine(rand, emb_train, 0.99)
    assert not flags_r.any() and (best_r < 0.99).all()


# ------------------------------------------------------------------ the sequential test


@pytest.mark.parametrize(
    "k, n, looks, answer",
    [
        pytest.param(0, 32, 4, False, id="0/32: the interval still reaches 0.1"),
        pytest.param(0, 64, 4, True, id="0/64: wholly below"),
        pytest.param(0, 64, 40, False, id="0/64 with many looks: each look stricter"),
        pytest.param(3, 64, 4, False, id="3/64: undecided"),
        pytest.param(12, 32, 4, True, id="12/32: wholly above"),
        pytest.param(13, 128, 4, False, id="13/128 at the full count: undecided, and the count is spent"),
        pytest.param(0, 0, 4, False, id="nothing yet"),
    ],
)
def test_settled(k, n, looks, answer):
    from raydiff.metrics.memorization import settled

    assert settled(k, n, 0.1, looks) is answer


def test_settled_errs_no_more_than_one_look():
    """Under p = threshold exactly, a test that may stop at any of its looks calls the wrong side
    (settled below) at most 1 − level of the time: the Bonferroni split of the level."""
    from raydiff.metrics.memorization import settled

    rng = np.random.default_rng(0)
    wrong, trials = 0, 4000
    for _ in range(trials):
        flags = rng.random(128) < 0.1
        wrong += any(settled(int(flags[:n].sum()), n, 0.1, 4) and flags[:n].mean() < 0.1 for n in (32, 64, 96, 128))
    assert wrong / trials <= 0.05


@pytest.fixture(scope="module")
def evaluators():
    """One tiny trial's evaluator with every sample at once, and one with rounds of 32."""
    from tiny_trial import tiny

    from raydiff.data import load as load_data
    from raydiff.diffusion import build_process
    from raydiff.evaluation import Evaluator
    from raydiff.models import build_unet

    out = {}
    for rounds in (None, 32):
        cfg = tiny(eval={"num_samples": 128, "sequential_round": rounds, "save_samples": 2})
        data = load_data(cfg.data)
        torch.manual_seed(0)
        net = build_unet(cfg.model, data.shape[0], data.shape[1])
        out[rounds] = (Evaluator(cfg, data, build_process(cfg.diffusion), torch.device("cpu")), net, data)
    return out


def test_sequential_test_settles_early_on_a_model_that_copies_nothing(evaluators):
    full, net, _ = evaluators[None]
    seq, _, _ = evaluators[32]
    a, b = full(net, 20, memorization_only=True), seq(net, 20, memorization_only=True)
    assert a["mem_samples"] == 128 and a["mem_frac"] == 0.0  # an untrained U-Net generates noise
    assert b["mem_samples"] == 64 and b["mem_frac"] == 0.0  # 0/64 is wholly below 0.1 at 4 looks; 0/32 is not
    assert b["mem_frac_hi"] < 0.1  # the interval it stopped on
    assert b["samples_nn_index"] == a["samples_nn_index"]  # the same first samples, the same neighbours


def test_sequential_test_uses_every_sample_when_undecided(evaluators, monkeypatch):
    """Where the rounds never settle, the sequential test measures what the all-at-once one does."""
    full, net, data = evaluators[None]
    seq, _, _ = evaluators[32]
    i = torch.arange(128)
    copies = data.x_train[i % len(data.x_train)]  # uint8 copies of the training images
    some = torch.where((i % 10 == 0)[:, None, None, None], copies, torch.full_like(copies, 128))  # 13 of 128 copied
    for ev in (full, seq):
        monkeypatch.setattr(ev, "sample", lambda net, n, steps=None, start=0, floats=False: some[start : start + n])
    a, b = full(net, 20, memorization_only=True), seq(net, 20, memorization_only=True)
    assert a["mem_frac"] == 13 / 128 and b["mem_samples"] == a["mem_samples"] == 128
    assert (b["mem_frac"], b["mem_frac_lo"], b["mem_frac_hi"]) == (a["mem_frac"], a["mem_frac_lo"], a["mem_frac_hi"])


@pytest.mark.parametrize("first, total, looks", [(32, 128, 3), (32, 1024, 6), (128, 128, 1), (32, 100, 3), (1, 2, 2)])
def test_sequential_rounds_double(first, total, looks):
    from raydiff.evaluation import sequential_looks

    assert sequential_looks(first, total) == looks
