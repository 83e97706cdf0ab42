"""The dry run's cost model (raydiff/tune/cost.py): hand-counted tiny trials, the FLOPs of networks
counted by hand, and the shipped marion2026_cifar10 against the hand arithmetic of its cost
(2026-12-06: the default trial's columns within 0.5%, the 14-trial grid's within 1%)."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap

import pytest

from raydiff import cli
from raydiff.config import load_search_space
from raydiff.config.space import packaged_search_space
from raydiff.tune.cost import (
    KINDS, assumed_mem_frac, forward_flops, fid_flops_per_image, sequential_count, simulate, sweep_cost, trial_cost,
)  # fmt: skip
from tiny_trial import tiny

F = 1e6  # a made-up forward pass (FLOPs per image) for the hand-counted trials
# evaluations every 100 steps, 8 samples × 4 DDIM steps, 4 probe images × 2 noise levels, the
# pixel test only (digits: D = 64, N = 8), no EMA, no FID, onset at τ = 250, patience 2
BASE = {
    "train": {"max_steps": 1000, "batch_size": 16, "ema_halflife_images": None, "ema_decay": 0.0},
    "eval": {"every_steps": 100, "cadence": "uniform", "num_samples": 8, "fid_every": 0, "refine_snapshots": 0},
    "stop": {"patience": 2},
}  # fmt: skip
DIGITS_CLASSIFIER = 2 * (32 * 9 * 1) * 64 + 2 * (64 * 9 * 32) * 64 + 2 * 1024 * 128  # conv, conv (8×8), linear: 2,658,304


def cfg_of(**edits):
    sections = {k: dict(v) for k, v in BASE.items()}
    for section, values in edits.items():
        sections.setdefault(section, {}).update(values)
    return tiny(**sections)


SEARCH = 8 * 8 * 64 * 2  # one test's pixel search: S·N·D·2
TEST = 8 * 4 * F  # one test's sampling: S × steps × F
PROBES = 2 * 4 * 2 * F  # 2 × images × levels forwards


@pytest.mark.parametrize(
    "edits, steps, stop, found, flops",
    [
        pytest.param({}, [100, 200, 300, 400], 400, 300,
                     {"training": 400 * 16 * 3 * F, "mem_sampling": 4 * TEST, "mem_features": 4 * SEARCH, "probes": 4 * PROBES},
                     id="crossing-at-300-confirmed-at-400"),
        pytest.param({"stop": {"continue_for": 1.0}}, [100, 200, 300, 400, 500, 600], 600, 300,
                     {"training": 600 * 48 * F, "mem_sampling": 6 * TEST, "probes": 6 * PROBES}, id="continue-for-tau"),
        pytest.param({"stop": {"on": ["pixel", "loss"], "loss_window": 3}}, [100, 200, 300, 400, 500], 500, 300,
                     {"training": 500 * 48 * F, "mem_sampling": 5 * TEST}, id="loss-window-3-waits-for-500"),
        pytest.param({"train": {"ema_decay": 0.99}, "eval": {"raw_memorization": True}}, [100, 200, 300, 400], 400, 300,
                     {"raw_test": 4 * (TEST + SEARCH), "mem_sampling": 4 * TEST}, id="raw-weights-test-doubles-sampling"),
        pytest.param({"eval": {"refine_snapshots": 3}}, [100, 200, 300], 300, 250,
                     {"refinement": 2 * (TEST + SEARCH), "training": 300 * 48 * F}, id="refinement-visits-250-and-225"),
        pytest.param({"stop": {"on": ["loss"], "loss_window": 2}, "eval": {"refine_snapshots": 3}}, [100, 200, 300, 400], 400, 250,
                     # the loss excess rises at 300 (200 was at the baseline): the probes alone on the
                     # snapshots 250 (above) and 225 (below); confirmed at 400, the onset moves back to 250
                     {"refinement": 2 * PROBES, "probes": 4 * PROBES, "mem_sampling": 4 * TEST}, id="loss-refinement-probes-250-and-225"),
        pytest.param({"data": {"class_conditional": True}, "diffusion": {"guidance": 1.0}}, [100, 200, 300, 400], 400, 300,
                     {"mem_sampling": 2 * 4 * TEST}, id="guidance-doubles-sampler-forwards"),
        pytest.param({"eval": {"fid_every": 2, "fid_samples": 20, "swd_samples": 0}}, [100, 200, 300, 400], 400, 300,
                     # FID at the 1st and 3rd evaluation: 12 samples beyond the test's 8, 20 classifier
                     # features each; the 16 test images' features once as the reference
                     {"fidelity": 2 * (12 * 4 * F + 20 * DIGITS_CLASSIFIER) + 16 * DIGITS_CLASSIFIER, "mem_sampling": 4 * TEST},
                     id="fid-shares-the-tests-samples"),
        pytest.param({"eval": {"cadence": "geometric", "geometric_ratio": 1.5}}, [100, 200, 300, 400], 400, 300,
                     {"training": 400 * 48 * F}, id="geometric-450-brought-forward-to-400-to-confirm"),
        pytest.param({"eval": {"measures": ["features", "loss"], "embedding": "sscd.pt"}}, [100, 200, 300, 400], 400, 300,
                     # SSCD (13.6 GFLOP) on each sample and on the 8 training images once; cosine search D = 512
                     {"mem_features": 4 * 8 * (13.6e9 + 8 * 512 * 2) + 8 * 13.6e9, "mem_sampling": 4 * TEST},
                     id="sscd-features-and-cosine-search"),
    ],
)  # fmt: skip
def test_hand_counted_trials(edits, steps, stop, found, flops):
    cfg = cfg_of(**edits)
    c = trial_cost(cfg, tau=250, forward=F)
    assert [e.step for e in c.run.events if e.kind == "evaluation"] == steps
    assert (c.run.stop_step, c.run.tau_found, c.run.status) == (stop, found, "memorized")
    got = {"training": c.training, **c.measurement}
    for k, v in flops.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    assert c.share == pytest.approx(c.measured / (c.training + c.measured))


def test_figures_off_the_loop_on_snapshots():
    """eval.figures: snapshots: the figure schedule (the 1st and 3rd evaluation) saves EMA weights
    instead of measuring FID; `raydiff measure` draws 20 samples for each (no shared pass) and
    extracts the references once. Beside the in-loop share, not in it."""
    from raydiff.models import param_count

    edits = {"eval": {"fid_every": 2, "fid_samples": 20, "swd_samples": 0, "figures": "snapshots"}}
    c = trial_cost(cfg_of(**edits), tau=250, forward=F)
    assert [e.step for e in c.run.events if e.kind == "snapshot"] == [100, 300] and c.run.fid_count == 0
    assert c.measurement["fidelity"] == 0 and c.measurement["mem_sampling"] == 4 * TEST
    assert c.figures_off_loop == 2 * (20 * 4 * F + 20 * DIGITS_CLASSIFIER) + 16 * DIGITS_CLASSIFIER
    one = 4 * param_count(cfg_of().model, cfg_of().data)  # fp32 weights; this U-Net has no buffers
    assert (c.snapshots, c.snapshots_dropped, c.snapshot_bytes) == (2, 0, 2 * one)
    assert c.gpu_hours() == pytest.approx((c.total + c.figures_off_loop) / (989e12 * 0.4) / 3600)
    tight = trial_cost(cfg_of(eval={**edits["eval"], "snapshot_budget_mb": 1.5 * one / 2**20}), tau=250, forward=F)
    assert (tight.snapshots, tight.snapshots_dropped, tight.figures_off_loop) == (1, 1, 20 * 4 * F + 36 * DIGITS_CLASSIFIER)


def test_refinement_events_are_the_bisections_visits():
    run = simulate(cfg_of(eval={"refine_snapshots": 3}), tau=250)
    assert [(e.step, e.kind) for e in run.events if e.kind == "refinement"] == [(225, "refinement"), (250, "refinement")]


def test_no_onset_runs_the_budget():
    c = trial_cost(cfg_of(train={"max_steps": 500}), tau=10_000, forward=F)
    assert (c.run.stop_step, c.run.status, c.run.tau_found) == (500, "budget", None)
    assert c.training == 500 * 48 * F and c.run.count("evaluation") == 5


@pytest.mark.parametrize(
    "frac, round_, drawn",
    [
        # a first round of 32 cannot settle (0/32's bound is 0.139 > 0.1): evaluation.sequential_plan doubles it to 64
        pytest.param(0.0, 32, 64, id="generalizing-settles-at-its-first-round-of-64"),
        pytest.param(0.1, 32, 128, id="at-the-threshold-the-full-count"),
        pytest.param(1.0, 32, 64, id="all-copies-settle-at-the-first-round"),
        pytest.param(0.3, 16, 64, id="well-above-settles-at-the-first-round"),
        pytest.param(0.0, None, 128, id="no-sequential-test"),
    ],
)
def test_sequential_count(frac, round_, drawn):
    cfg = cfg_of(eval={"num_samples": 128, "sequential_round": round_})
    assert sequential_count(cfg, [frac]) == drawn


def test_assumed_curve():
    assert [assumed_mem_frac(s, 100, 0.1) for s in (0, 99, 100, 150, 200, 400)] == pytest.approx([0, 0, 0.1, 0.55, 1.0, 1.0])


NET = """
import torch
from torch import nn

class TwoConvs(nn.Module):
    def __init__(self, in_channels, width):
        super().__init__()
        self.a = nn.Conv2d(in_channels, width, 3, padding=1)
        self.b = nn.Conv2d(width, in_channels, 1)

    def forward(self, x, c_noise, class_labels=None):
        return self.b(torch.relu(self.a(x)))

def two_convs(in_channels, width):
    return TwoConvs(in_channels, width)
"""


def test_forward_flops_of_a_network_counted_by_hand(tmp_path, monkeypatch):
    (tmp_path / "cost_nets.py").write_text(textwrap.dedent(NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = tiny(model={"kind": "python", "factory": "cost_nets:two_convs", "kwargs": {"width": 4}})
        # digits 1×8×8: a 3×3 conv 1→4 and a 1×1 conv 4→1 at 64 positions, 2 FLOPs per multiply-add
        assert forward_flops(cfg) == 2 * (4 * 9 * 1) * 64 + 2 * (1 * 4) * 64
    finally:
        sys.modules.pop("cost_nets", None)
    assert fid_flops_per_image(tiny()) == DIGITS_CLASSIFIER
    assert fid_flops_per_image(tiny(data={"dataset": "gmm", "image_size": 32, "channels": 3})) == 11.4e9  # the registry's Inception


# ----------------------------------------------------------------------- marion2026_cifar10


@pytest.fixture(scope="module")
def marion():
    space = load_search_space(packaged_search_space("marion2026_cifar10"))
    prior = space.sweep.budget_planner.prior  # 20,000 steps at N = 2048, B = 16, η = 1e-4
    assert (prior.tau, prior.n_train, prior.batch_size, prior.lr) == (20000, 2048, 16, 1e-4)
    return space.experiments(), prior


def as_hand_arithmetic(exp):
    """The space as the hand arithmetic counted it (as it shipped on 2026-12-06): the pixel and
    SSCD tests, the loss probes, FID and SWD in the loop, the raw-weights test at every evaluation,
    1,024 samples × 250 steps each time, FID against clean-fid's whole-split statistics with 5,120
    samples, and the stop at the first evaluation past 1.25 τ — what
    the stop on [features] with patience 1 and continue_for 0 gives for an onset at 1.25 τ."""
    ev = dataclasses.replace(
        exp.eval, measures=("pixel", "features", "loss", "fid", "swd"), raw_memorization=True, mem_sample_steps=None,
        sequential_round=None, figures="loop", refine_fraction=None, fid_reference="auto", fid_samples=5120, probe_noise_levels=8,
    )  # fmt: skip
    return dataclasses.replace(exp, eval=ev, stop=dataclasses.replace(exp.stop, on=("features",), patience=1, continue_for=0.0))


def columns(c) -> dict[str, float]:
    m = {k: v / 1e15 for k, v in c.measurement.items()}
    return {
        "training": c.training / 1e15, "probes": m["probes"], "memorization": m["mem_sampling"] + m["mem_features"],
        "raw": m["raw_test"], "fid": m["fidelity"], "refinement": m["refinement"], "share": c.share,
    }  # fmt: skip


def test_marion_default_trial_and_grid_reproduce_the_hand_arithmetic(marion):
    """measurement-costs (2026-12-06): default trial 38.2 / 11.1 / 87.3 / 86.9 / 107.2 / 13.4 PF,
    88.9%; the grid 1,196 / 228 / 1,266 / 1,259 / 1,428 / 168 PF, 78.4%. The hand's memorization
    column is 0.2 PF (0.3%) above this model's, which counts SSCD on 13 × 1,024 samples and the
    2,048 training images (0.21 PF) and the searches (0.02 PF) beside the sampling (86.87 PF)."""
    from raydiff.config import OnsetPrior

    marion, prior = marion
    prior = OnsetPrior(1.25 * prior.tau, prior.n_train, prior.batch_size, prior.lr)  # the onset at 1.25 τ
    assert forward_flops(marion[0]) == pytest.approx(26.1e9, rel=2e-3)
    one = trial_cost(as_hand_arithmetic(marion[0]), prior=prior)
    assert (one.run.count("evaluation"), one.run.fid_count, one.run.stop_step) == (13, 4, 30518)
    hand = {"training": 38.2, "probes": 11.1, "memorization": 87.3, "raw": 86.9, "fid": 107.2, "refinement": 13.4, "share": 0.889}
    for k, v in hand.items():
        assert columns(one)[k] == pytest.approx(v, rel=5e-3), k
    grid = sweep_cost([as_hand_arithmetic(e) for e in marion], prior=prior)
    assert [t.run.tau / 1.25 for t in grid.trials] == [20000, 40000, 80000, 160000, *[20000] * 4, 10000, 5000, 2500, 200000, 40000, 5000]
    got = {
        "training": grid.training / 1e15, "probes": grid.measurement["probes"] / 1e15,
        "memorization": (grid.measurement["mem_sampling"] + grid.measurement["mem_features"]) / 1e15,
        "raw": grid.measurement["raw_test"] / 1e15, "fid": grid.measurement["fidelity"] / 1e15,
        "refinement": grid.measurement["refinement"] / 1e15, "share": grid.share,
    }  # fmt: skip
    # within 1%: the hand counted one more evaluation for η = 4e-4 (τ = 5,000), the one that then
    # confirmed its onset at 5,120 before the stop at 6,400; stopping at the first evaluation past
    # 1.25 τ as this variant does, that trial has 6 evaluations, not 7 (−6.7 PF of sampling)
    hand = {"training": 1196, "probes": 228, "memorization": 1266, "raw": 1259, "fid": 1428, "refinement": 168, "share": 0.784}
    for k, v in hand.items():
        assert got[k] == pytest.approx(v, rel=1e-2), k
    # per trial of the grid: N = 4096 / 8192 / 16384 and η = 1e-5 / 5e-5 / 4e-4
    shares = [100 * t.share for t in grid.trials]
    assert shares[1:4] + shares[11:13] == pytest.approx([82.9, 75.2, 64.4, 58.5, 82.4], abs=0.1)
    assert shares[13] == pytest.approx(95.4, abs=0.5)


def test_marion_as_shipped(marion):
    """As shipped now: the SSCD test and the loss probes in the loop (50 sampler steps, a sequential
    test from 64), FID and SWD on snapshots off it, no raw-weights test. stop.on [features, loss]
    with loss_window 3: the loss onset (first seen at 24,414) is confirmed two evaluations later,
    so the default trial stops at 38,148 (14 evaluations); refinement narrows it to 20,751."""
    marion, prior = marion
    c = trial_cost(marion[0], prior=prior)
    r = c.run
    assert (r.count("evaluation"), r.fid_count, r.stop_step, r.tau_found) == (14, 0, 38148, 20751)
    assert r.count("raw") == 0 and r.count("refinement") == 2 and c.measurement["raw_test"] == c.measurement["fidelity"] == 0
    # both onsets rise at 24,414: the two searches visit the same snapshots (21,972 then 20,751), each
    # evaluated for the SSCD test (1,024 then 128 samples: the sequential test near onset) and for the
    # probes, and the loss onset moves back to 20,751 (the assumed onset is 20,000)
    refined = [e for e in r.events if e.kind == "refinement"]
    assert [(e.step, e.mem_samples, e.tests, e.probes) for e in refined] == [(20751, 1024, ("features",), True), (21972, 128, ("features",), True)]
    probes = 2 * 2048 * 3 * c.forward  # min(5120, N, n_test) images of each split × 3 noise levels
    assert c.measurement["refinement"] == pytest.approx(1152 * (50 * c.forward + 13.6e9 + 2048 * 512 * 2) + 2 * probes)
    evals = [e for e in r.events if e.kind == "evaluation"]
    assert {e.mem_samples for e in evals} == {64} and all(e.tests == ("features",) for e in evals)  # settled at the first round
    assert c.measurement["mem_sampling"] == pytest.approx(14 * 64 * 50 * c.forward)
    assert c.measurement["probes"] == pytest.approx(14 * probes)
    assert [e.step for e in r.events if e.kind == "snapshot"] == [1024, 5120, 12500, 30518]  # every 4th evaluation
    assert c.snapshots == 4 and c.figures_off_loop > 0 and c.share < 0.3


# ----------------------------------------------------------------------- the dry run


def test_dry_run_prints_the_cost_table(capsys):
    assert cli.main(["sweep", "default", "--dry-run", "--tau", "1000", "--gpu-tflops", "100", "--gpu-utilization", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "by exact FLOP arithmetic" in out and "τ = 1,000 steps (--tau)" in out and "100 TFLOP/s × 50%" in out
    header = next(line for line in out.splitlines() if "evals / FIDs" in line)
    assert all(label in header for label in KINDS.values()) and "in-loop share" in header and "GPU-h" in header
    assert out.rstrip().splitlines()[-1].split()[0] == "total"


def test_dry_run_json_cost_sums_to_its_total(capsys):
    assert cli.main(["sweep", "default", "--dry-run", "--json-cost", "--tau", "1000"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    trials, total = lines[:-1], lines[-1]["total"]
    assert [t["#"] for t in trials] == [0, 1, 2, 3] and total["trials"] == 4 and total["tau"] == 1000
    assert total["total_flops"] == pytest.approx(sum(t["total_flops"] for t in trials))
    assert total["measurement_share"] == pytest.approx(total["measurement_total_flops"] / total["total_flops"])
    for t in trials:
        assert t["total_flops"] == pytest.approx(t["training_flops"] + sum(t["measurement_flops"].values()))
        # GPU-hours count the figures measured off the loop too (the default's FD, on snapshots)
        assert t["figures_off_loop_flops"] > 0
        assert t["gpu_hours"] == pytest.approx((t["total_flops"] + t["figures_off_loop_flops"]) / (989e12 * 0.4) / 3600)


def test_dry_run_of_a_space_without_a_prior(capsys):
    assert cli.main(["sweep", "smoke", "--dry-run"]) == 0
    assert "states no onset to assume (sweep.budget_planner.prior); give --tau STEPS" in capsys.readouterr().out


def test_prior_scales_as_n_over_b_eta():
    from raydiff.config import OnsetPrior
    from raydiff.tune.planner import prior_tau

    p = OnsetPrior(tau=20000, n_train=2048, batch_size=16, lr=1e-4)
    assert [prior_tau(p, n, b, lr) for n, b, lr in [(2048, 16, 1e-4), (4096, 16, 1e-4), (2048, 64, 1e-4), (2048, 16, 4e-4)]] == [
        20000, 40000, 5000, 5000]


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["smoke", "--dry-run", "--json-cost"], "--json-cost: needs an onset to assume", id="no-prior-no-tau"),
        pytest.param(["--tau", "100"], "--tau goes with --dry-run", id="tau-without-dry-run"),
        pytest.param(["--dry-run", "--tau", "0"], "--tau: must be in 1..1,000,000,000,000 (got 0)", id="tau-zero"),
        pytest.param(["--dry-run", "--gpu-utilization", "1.5"], "--gpu-utilization: must be in 1e-06..1 (got 1.5)", id="utilization"),
        pytest.param(["--dry-run", "--gpu-tflops", "-1"], "--gpu-tflops: must be in 0.001..1,000,000 (got -1)", id="tflops"),
        pytest.param(["--dry-run", "--json", "--json-cost"], "not both", id="two-jsons"),
    ],
)
def test_cost_flags_misused(argv, message, capsys):
    argv = argv if argv[0] == "smoke" else ["default", *argv]
    assert cli.main(["sweep", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize(
    "prior, key",
    [
        pytest.param({"tau": 0, "n_train": 64, "batch_size": 64, "lr": 2e-3}, "sweep.budget_planner.prior.tau", id="tau-zero"),
        pytest.param({"tau": 100, "n_train": 64, "batch_size": 64}, "sweep.budget_planner.prior", id="lr-missing"),
        pytest.param({"tau": 100, "n_train": 64, "batch_size": 64, "lr": -1}, "sweep.budget_planner.prior.lr", id="lr-negative"),
    ],
)
def test_a_bad_prior_is_a_config_error(prior, key):
    from raydiff.config import ConfigError, search_space_from_dict

    with pytest.raises(ConfigError) as e:
        search_space_from_dict({"sweep": {"budget_planner": {"prior": prior}}})
    assert e.value.key == key
