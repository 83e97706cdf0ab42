"""The budget planner on simulated trials with known onset times (no Ray), and its Searcher."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner_sim import detect_step, simulate
from raydiff.config import BudgetPlannerConfig, search_space_from_dict
from raydiff.errors import ConfigError
from raydiff.tune.planner import BudgetPlanner, PointInfo, confirm_allowance, group_of, planned_columns, small_n_first

BUDGET = 200_000  # the configured (fixed) budget: generous, as one global budget must be
ON = BudgetPlannerConfig(enabled=True, safety=3.0, min_onsets=3, min_r2=0.9)
# When the law holds up to a 10% scatter (σ = 0.1 in log τ), planned budgets stay above the true
# onset × MARGIN: 1.5 when trials run one at a time; 1.1 with 3 at once, since budgets are then
# decided with fewer onsets known, and extrapolated further (over 200 seeds the smallest ratios
# measured were 1.92 and 1.20).
MARGIN = {1: 1.5, 3: 1.1}


def grid(ns, bs=(16,), budget=BUDGET, every=100, group=""):
    pts = [(n, b) for b in bs for n in ns]
    return [PointInfo(i, {"n_train": n, "batch_size": b, "lr": 1e-4, "params": 1e6}, budget, every, None, group)
            for i, (n, b) in enumerate(pts)]  # fmt: skip


def noisy_law(points, sigma=0.1, seed=0, law=lambda a: 20.0 * a["n_train"] * (16 / a["batch_size"])):
    rng = np.random.default_rng(seed)
    noise = {p.index: float(np.exp(rng.normal(0.0, sigma))) for p in points}
    return lambda p: law(p.axes) * noise[p.index]


NS = [16, 32, 64, 128, 256, 512, 1024, 2048]


# ------------------------------------------------------------------ the table of cases


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("concurrency", [1, 3])
def test_law_holds_budgets_never_below_truth_times_margin(seed, concurrency):
    pts = grid(NS)
    tau = noisy_law(pts, seed=seed)
    res = simulate(pts, tau, ON, patience=2, concurrency=concurrency)
    planned = [t for t in res.trials if t.planned]
    assert len(planned) >= 2, "with 8 N values and 3 onsets needed, the large-N trials are planned"
    for t in planned:
        assert t.budget >= MARGIN[concurrency] * t.tau_true, t
        assert t.budget < BUDGET
    assert res.cut_off == 0 and all(t.status == "memorized" for t in res.trials)


def test_law_over_two_axes_plans_from_a_joint_fit():
    pts = grid([64, 128, 256, 512, 1024], bs=(16, 64))
    res = simulate(pts, noisy_law(pts, seed=3), ON)
    planned = [t for t in res.trials if t.planned]
    assert len(planned) >= 3
    assert all(t.budget >= MARGIN[1] * t.tau_true for t in planned) and res.cut_off == 0


def test_too_few_onsets_falls_back_to_the_configured_budget():
    pts = grid([16, 32, 64])
    planner = BudgetPlanner(ON, patience=2)
    for p in pts:
        plan = planner.plan(p)
        assert (plan.budget, plan.planned) == (BUDGET, False) and "need 3" in plan.reason
        planner.observe(p, 20 * int(p.axes["n_train"]), 20 * int(p.axes["n_train"]) + 100, BUDGET, False)


def test_poor_fit_falls_back():
    pts = grid(NS)
    erratic = {16: 9000, 32: 400, 64: 15000, 128: 700, 256: 3000}  # no power law in N
    planner = BudgetPlanner(ON, patience=2)
    for p in pts[:5]:
        planner.observe(p, erratic[p.axes["n_train"]], erratic[p.axes["n_train"]] + 100, BUDGET, False)
    plan = planner.plan(pts[6])
    assert (plan.budget, plan.planned) == (BUDGET, False) and "R²" in plan.reason


def test_poor_fit_simulated_never_plans():
    pts = grid(NS)
    rng = np.random.default_rng(7)
    chaos = {p.index: float(rng.choice([300.0, 30000.0])) for p in pts}
    res = simulate(pts, lambda p: chaos[p.index], ON)
    assert not any(t.planned for t in res.trials)
    assert res.total_steps == simulate(pts, lambda p: chaos[p.index], None).total_steps


def test_budget_is_capped_at_the_configured_one():
    pts = grid(NS, budget=5000)  # the law puts the big trials' onsets past the configured budget
    res = simulate(pts, noisy_law(pts, seed=1), ON)
    assert all(t.budget <= 5000 for t in res.trials)
    big = [t for t in res.trials if t.n_train >= 512]
    assert big and all(not t.planned and t.budget == 5000 for t in big)


def test_an_axis_the_onsets_never_varied_is_not_extrapolated():
    pts = grid([16, 32, 64, 128], bs=(64,)) + [PointInfo(9, {"n_train": 256, "batch_size": 16, "lr": 1e-4, "params": 1e6}, BUDGET, 100)]
    planner = BudgetPlanner(ON, patience=2)
    for p in pts[:4]:
        planner.observe(p, 5 * int(p.axes["n_train"]), 0, BUDGET, False)
    plan = planner.plan(pts[4])
    assert not plan.planned and "batch_size" in plan.reason


def test_groups_are_fitted_separately():
    flow = grid([16, 32, 64, 128], group=group_of({"diffusion.objective": "flow"}))
    ddpm = grid([256], group=group_of({"diffusion.objective": "ddpm"}))
    planner = BudgetPlanner(ON, patience=2)
    for p in flow:
        planner.observe(p, 20 * int(p.axes["n_train"]), 0, BUDGET, False)
    assert not planner.plan(ddpm[0]).planned
    assert planner.plan(PointInfo(7, ddpm[0].axes, BUDGET, 100, None, flow[0].group)).planned


def test_a_planned_cut_off_turns_the_planner_off():
    """The law holds for small N, then breaks: the first cut-off is the last planned trial."""
    pts = grid(NS)
    tau = lambda p: 20.0 * p.axes["n_train"] * (1.0 if p.axes["n_train"] <= 256 else 8.0)  # noqa: E731
    res = simulate(pts, tau, ON)
    cut = [t for t in res.trials if t.cut_off]
    assert len(cut) == 1 and cut[0].n_train == 512
    after = [t for t in res.trials if t.n_train > 512]
    assert after and all(not t.planned and t.budget == BUDGET and not t.cut_off for t in after)


# ------------------------------------------------------------------ steps with vs without


def test_nothing_to_save_when_every_trial_memorizes_within_its_plan():
    """A trial stops at its onset under either budget: the same steps, and no cut-off."""
    pts = grid(NS)
    tau = noisy_law(pts)
    fixed, planned = simulate(pts, tau, None), simulate(pts, tau, ON)
    assert planned.total_steps == fixed.total_steps and planned.cut_off == 0


def test_steps_saved_on_trials_that_never_memorize():
    pts = grid(NS)
    law = noisy_law(pts, seed=2)
    never = {pts[3].index}  # one N=128 trial (e.g. an unlucky seed) never memorizes
    tau = lambda p: None if p.index in never else law(p)  # noqa: E731
    fixed, planned = simulate(pts, tau, None), simulate(pts, tau, ON)
    assert planned.cut_off == 0
    assert fixed.total_steps - planned.total_steps > 0.5 * BUDGET  # the never-memorizing trial stops early


# ------------------------------------------------------------------ pieces


def test_small_n_first_order():
    pts = [PointInfo(i, {"n_train": n, "batch_size": 16, "lr": 1e-4, "params": 1}, b, 10) for i, (n, b) in enumerate([(64, 5), (16, 9), (64, 1), (32, 1)])]
    assert small_n_first(pts) == [1, 3, 2, 0]


def test_confirmation_allowance_covers_patience_evaluations():
    p = PointInfo(0, {}, BUDGET, 100)
    onset, seen = detect_step(p, 1234.0, patience=3)
    assert (onset, seen) == (1300, 1500)
    assert 1234 + confirm_allowance(p, 1234.0, patience=3) >= seen
    geo = PointInfo(0, {}, BUDGET, 100, geometric_ratio=1.25)
    assert confirm_allowance(geo, 10_000.0, patience=2) == math.ceil(10_000 * 0.25) + 100
    # the gap the onset falls in is the scheduled one; the confirmations come after the smallest
    assert confirm_allowance(geo, 10_000.0, patience=3) == math.ceil(10_000 * 0.25) + 200


def test_longest_trial_first():
    from raydiff.tune.search import longest_first

    axes = [(16, 64, 1e5), (128, 64, 1e5), (32, 64, 1e5), (64, 16, 1e5), (64, 64, 1e6), (16, 64, 1e5)]
    pts = [PointInfo(i, {"n_train": n, "batch_size": b, "lr": 1e-3, "params": m}, 1000, 10) for i, (n, b, m) in enumerate(axes)]
    # cost ∝ N / B × params: 1e6 (i=4), 4e5 (i=3), 2e5 (i=1), 5e4 (i=2), then the equal ones in order
    assert longest_first(pts) == [4, 3, 1, 2, 0, 5]


def test_planned_columns():
    assert planned_columns({"point": {"data.n_train": 8}}) == {"tau_mem_predicted": None, "budget_planned": False}
    cols = planned_columns({"planner": {"tau_mem_predicted": 812.5, "budget_planned": True, "budget_reason": "planned: x"}})
    assert cols == {"tau_mem_predicted": 812.5, "budget_planned": True, "budget_reason": "planned: x"}


@pytest.mark.parametrize(
    "planner, key",
    [
        ({"safety": 0.5}, "sweep.budget_planner.safety"),
        ({"min_onsets": 2}, "sweep.budget_planner.min_onsets"),
        ({"min_r2": 0}, "sweep.budget_planner.min_r2"),
        ({"enable": True}, "sweep.budget_planner.enable"),
    ],
)
def test_planner_config_errors_name_the_key(planner, key):
    with pytest.raises(ConfigError) as e:
        search_space_from_dict({"sweep": {"budget_planner": planner}, "grid": {"data.n_train": [16, 32]}})
    assert e.value.key == key


def test_searcher_suggests_small_n_first_plans_and_survives_save_restore(tmp_path):
    """The Ray Searcher around the planner, driven by hand (no Ray cluster needed)."""
    from raydiff.tune.search import PlannedGridSearcher

    points = [{"data.n_train": n} for n in (256, 16, 64, 32, 128)]
    infos = [PointInfo(i, {"n_train": p["data.n_train"], "batch_size": 16, "lr": 1e-3, "params": 1e4}, BUDGET, 50) for i, p in enumerate(points)]
    s = PlannedGridSearcher(points, infos, BudgetPlanner(ON, patience=2))
    seen = []
    for k in range(3):  # the three smallest run first, with the configured budget
        cfg = s.suggest(f"t{k}")
        assert "train.max_steps" not in cfg and cfg["planner"]["budget_planned"] is False
        n = cfg["point"]["data.n_train"]
        seen.append(n)
        s.on_trial_complete(f"t{k}", {"tau_mem_step": 20 * n, "step": 20 * n + 50, "budget_steps": BUDGET, "diverged": False})
    assert seen == [16, 32, 64]
    path = tmp_path / "searcher.pkl"
    s.save(str(path))
    restored = PlannedGridSearcher([], [], BudgetPlanner(ON, patience=2))
    restored.restore(str(path))
    for searcher in (s, restored):
        cfg = searcher.suggest("t3")
        assert cfg["point"] == {"data.n_train": 128} and cfg["planner"]["budget_planned"] is True
        assert cfg["train.budget_scaling"] == "fixed"
        tau_hat = cfg["planner"]["tau_mem_predicted"]
        assert tau_hat == pytest.approx(20 * 128, rel=0.05)  # fitted to the middle of each onset's interval
        assert 3 * tau_hat <= cfg["train.max_steps"] < BUDGET
