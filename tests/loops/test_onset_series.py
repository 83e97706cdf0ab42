"""The onset definitions as named series in `train()`'s reports: τ by each definition, the raw
(non-EMA) weights' memorization beside the EMA's, the stop rule's τ, and the dry run's JSON."""

from __future__ import annotations

import json

import pytest
from tiny_trial import tiny

from raydiff import cli
from raydiff.config import load_search_space, packaged_search_space
from raydiff.metrics.stop import decide
from raydiff.training.reports import history_row, history_series
from raydiff.trial import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def series_of(cfg, reports):
    """The evaluation history's series as train() builds them, from its reports."""
    return history_series(cfg, [history_row(r["step"], cfg.batch, r["wall_s"], r) for r in reports])


def run(cfg):
    reports = []
    train(cfg, lambda m, _ckpt: reports.append(m) or False)
    return reports


def test_raw_weights_are_tested_beside_the_ema():
    cfg = tiny(stop={"on": ["pixel", "pixel_raw", "loss"], "mem_frac_threshold": 0.01, "patience": 1})
    assert cfg.measures_raw
    reports = run(cfg)
    for i, r in enumerate(reports):
        assert 0.0 <= r["mem_frac_raw_lo"] <= r["mem_frac_raw"] <= r["mem_frac_raw_hi"] <= 1.0
        series = series_of(cfg, reports[: i + 1])  # the reports carry no history: rebuilt from them
        assert series["history_pixel_raw"][-1] == r["mem_frac_raw"] and series["history_pixel"][-1] == r["mem_frac"]
        # every definition's τ is reported; the stop rule's is the latest of those it names
        taus = [r[f"tau_mem_{d}_step"] for d in ("pixel", "pixel_raw", "loss")]
        assert r["tau_mem_step"] == (None if None in taus else max(taus))
        assert r["tau_mem_features_step"] is None  # not measured
        d = decide({**r, **series}, cfg.stop)
        assert r["stop_status"] == (d.status if d else None)


def test_raw_test_off_and_without_ema():
    assert not tiny(eval={"raw_memorization": False}).measures_raw
    assert not tiny(train={"ema_halflife_images": None, "ema_decay": 0.0}).measures_raw
    r = run(tiny(eval={"raw_memorization": False}, train={"max_steps": 20}))[-1]
    assert r.get("mem_frac_raw") is None and "history_pixel_raw" not in series_of(tiny(eval={"raw_memorization": False}), [r])


def test_continue_for_runs_past_the_onset():
    """The stop rule fires at onset + continue_for × τ: the rise after onset is observed."""
    cfg = tiny(stop={"mem_frac_threshold": 0.01, "patience": 1, "continue_for": 1.0})
    reports = run(cfg)
    tau = next((r["tau_mem_step"] for r in reports if r["tau_mem_step"] is not None), None)
    stops = [r for r in reports if r["stop_status"] == "memorized"]
    if tau is not None and stops:
        assert stops[0]["step"] >= 2 * tau or stops[0]["step"] == cfg.budget_steps


def test_dry_run_json_is_the_config_column(capsys):
    assert cli.main(["sweep", "default", "--dry-run", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    exps = load_search_space(packaged_search_space("default")).experiments()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in exps]
    assert [json.loads(line)["data"]["n_train"] for line in lines] == [16, 32, 64, 128]


def test_fidelity_only_evaluations_leave_training_unchanged():
    """FID in its own evaluations (eval.fid_every_steps) adds rows with a FID and no memorization
    test, in step order, and moves nothing else: same losses and mem_frac as without them."""
    base = {"train": {"max_steps": 60}, "eval": {"every_steps": 20, "fid_every": 0, "fid_samples": 16, "swd_samples": 0}}
    plain = run(tiny(**base))
    with_fd = run(tiny(train={"max_steps": 60}, eval={**base["eval"], "fid_every_steps": 10, "cadence": "uniform"}))
    fd_rows = [r for r in with_fd if r.get("fid") is not None]
    assert [r["step"] for r in with_fd] == [10, 20, 30, 40, 50, 60]  # interim rows in step order
    assert [r["step"] for r in fd_rows] == [10, 20, 30, 40, 50]  # 20 and 40: measured by the evaluation itself
    assert all(r.get("mem_frac") is None and r["stop_status"] is None for r in with_fd if r["step"] in (10, 30, 50))
    evals = [r for r in with_fd if r["step"] in (20, 40, 60)]
    for a, b in zip(plain, evals):
        for k in ("loss", "train_loss", "test_loss", "mem_frac"):
            assert a[k] == b[k], k


def test_interim_rows_at_one_step_merge():
    """A refinement snapshot on a fidelity-only step: one row with both, keyed by its step."""
    from raydiff.training.refine import merge_interim

    fid = ({"step": 40, "mem_frac": None, "fid": 12.0, "fidelity_only": True}, {"fid": 12.0, "fid_extractor": "x/v", "mem_frac": None})
    snap = ({"step": 40, "mem_frac": 0.2, "fid": None, "refined": True}, {"mem_frac": 0.2, "fid": None})
    other = ({"step": 30, "mem_frac": 0.0, "refined": True}, {"mem_frac": 0.0})
    for order in ([fid, snap, other], [snap, other, fid]):
        merged = merge_interim(order)
        assert [r["step"] for r, _ in merged] == [30, 40]
        row, metrics = merged[1]
        assert row["mem_frac"] == 0.2 and row["fid"] == 12.0 and row.get("refined")
        assert metrics["mem_frac"] == 0.2 and metrics["fid"] == 12.0 and metrics["fid_extractor"] == "x/v"


def test_features_only_trial_has_no_pixel_onset():
    from raydiff.config import StopConfig
    from raydiff.metrics.stop import onsets

    report = {"history_steps": [100, 200, 300], "history_mem_frac": [0.2, 0.3, 0.4], "history_features": [0.2, 0.3, 0.4]}
    found = onsets(report, StopConfig())
    assert found["features"] == 100 and "pixel" not in found
