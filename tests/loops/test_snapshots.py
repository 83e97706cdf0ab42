"""Figures off the training loop: a trial saves its EMA weights on the figure schedule, `raydiff
measure` measures them — the same values the loop measures on the same weights, the same rows when
measured twice, never more snapshots than the byte budget — and the readers merge them in."""

from __future__ import annotations

import pytest

from raydiff import results
from raydiff.remeasure import measure_sweep
from raydiff.results_folder import merge_figures
from raydiff.snapshots import SnapshotStore, trials_with_snapshots
from raydiff.training.schedule import fidelity_schedule
from raydiff.trial import train
from raydiff.tune.dryrun import config_json
from tiny_trial import tiny

FIGURES = {"fid_every_steps": 10, "fid_samples": 16, "swd_samples": 8, "swd_projections": 16, "fid_features": "digits_classifier"}


def run(cfg, sink=None) -> list[dict]:
    reports: list[dict] = []
    train(cfg, lambda m, ckpt: reports.append(m) or bool(m.get("stop_status")), snapshot=sink)
    return reports


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One trial run twice: figures in the loop, then on snapshots measured by `raydiff measure`."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sweep") / "snap"
    loop_cfg = tiny(eval=FIGURES, train={"max_steps": 80})
    snap_cfg = tiny(eval={**FIGURES, "figures": "snapshots"}, train={"max_steps": 80})
    in_loop = run(loop_cfg)
    store = SnapshotStore(str(root), "t0")
    store.save_config(config_json(snap_cfg))
    off_loop = run(snap_cfg, store.save)
    rows = measure_sweep(str(root), ["fid", "swd"])
    return root, loop_cfg, in_loop, off_loop, store, rows


def test_snapshots_on_the_figure_schedule(measured):
    root, cfg, in_loop, off_loop, store, _ = measured
    figure_steps = sorted({r["step"] for r in in_loop if r.get("fid") is not None})
    assert store.steps() == figure_steps and set(fidelity_schedule(cfg, cfg.budget_steps)) <= set(figure_steps)
    assert all(r.get("fid") is None for r in off_loop)  # the loop measured no figure
    # training and its onsets are the same either way: figures draw no training randomness
    assert [(r["step"], r.get("mem_frac"), r.get("tau_mem_step")) for r in off_loop if "fidelity_only" not in r] == [
        (r["step"], r.get("mem_frac"), r.get("tau_mem_step")) for r in in_loop if "fidelity_only" not in r
    ]


def test_measure_gives_the_loops_values(measured):
    root, _, in_loop, _, _, rows = measured
    fs, path = results.filesystem(str(root))
    figures = results.read_figures(fs, path).to_pylist()
    assert rows == len(figures) == 2 * len({r["step"] for r in in_loop if r.get("fid") is not None})
    loop_fid = {r["step"]: r["fid"] for r in in_loop if r.get("fid") is not None}
    loop_swd = {r["step"]: r["sliced_wasserstein"] for r in in_loop if r.get("sliced_wasserstein") is not None}
    got_fid = {f["step"]: f["fid"] for f in figures if f["measure"] == "fid"}
    got_swd = {f["step"]: f["sliced_wasserstein"] for f in figures if f["measure"] == "swd"}
    assert got_fid == pytest.approx(loop_fid, rel=1e-5) and got_swd == pytest.approx(loop_swd, rel=1e-5)
    assert all(f["protocol"].startswith("features=digits_classifier") and f["n_samples"] == 16 for f in figures)


def test_measuring_again_replaces(measured):
    root, *_ = measured
    fs, path = results.filesystem(str(root))
    before = sorted(results.read_figures(fs, path).to_pylist(), key=lambda r: (r["measure"], r["step"]))
    measure_sweep(str(root), ["fid"], ["t0"])
    after = sorted(results.read_figures(fs, path).to_pylist(), key=lambda r: (r["measure"], r["step"]))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "measure_s"} for r in rows]  # noqa: E731
    assert strip(after) == strip(before)  # same rows, none duplicated


def test_merged_into_evaluations(measured):
    root, _, _, off_loop, _, _ = measured
    fs, path = results.filesystem(str(root))
    evals = {"t0": [{"trial_id": "t0", "step": r["step"], "fid": None} for r in off_loop if "fidelity_only" not in r]}
    merge_figures(evals, results.read_figures(fs, path).to_pylist())
    with_fid = [r for r in evals["t0"] if r.get("fid") is not None]
    assert with_fid and [r["step"] for r in evals["t0"]] == sorted(r["step"] for r in evals["t0"])
    assert any(r.get("fidelity_only") for r in with_fid)  # a snapshot between evaluations: a row of its own


def test_byte_budget(tmp_path):
    import torch

    import io

    weights = {"w": torch.zeros(1000)}
    buf = io.BytesIO()
    torch.save(weights, buf)
    budget = int(2.5 * len(buf.getvalue()))  # room for two snapshots
    store = SnapshotStore(str(tmp_path / "s"), "t0", budget_bytes=budget)
    saved = [store.save(step, weights) for step in (10, 20, 30, 40)]
    assert saved == [True, True, False, False] and store.steps() == [10, 20]
    assert store.used <= budget and (tmp_path / "s" / "snapshots" / "t0" / "budget.txt").read_text().startswith("snapshot at step 30")
    assert SnapshotStore(str(tmp_path / "s"), "t0", budget_bytes=budget).used == store.used  # a restored trial counts them
    assert trials_with_snapshots(str(tmp_path / "s")) == ["t0"]


def test_unknown_figure_is_one_line(measured):
    from raydiff.errors import UserError

    root, *_ = measured
    with pytest.raises(UserError, match="not a figure measure"):
        measure_sweep(str(root), ["pixel"])
    with pytest.raises(UserError, match="no snapshots of trial"):
        measure_sweep(str(root), None, ["nope"])


def test_raydiff_train_prints_fidelity_only_rows(tmp_path, capsys):
    """`raydiff train` prints every report, fidelity-only ones too (no memorization test in them)."""
    import yaml

    from raydiff import cli
    from tiny_trial import TINY

    space = {**TINY, "eval": {**TINY["eval"], **FIGURES}, "train": {**TINY["train"], "max_steps": 40}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
    assert cli.main(["train", str(tmp_path / "s.yaml"), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(" mem_frac nan " in ln and " fid -" not in ln for ln in lines)  # step 10: a fidelity-only row


def test_measure_samples_through_the_compiled_network(measured, monkeypatch):
    """Under train.compile the snapshots are sampled through the network compiled once, as the
    loop samples; the weights are loaded into the plain module it shares (torch.compile is
    replaced by a recorder: Inductor takes minutes on this CPU; tests/loops/test_compile.py)."""
    import dataclasses
    import json

    import torch

    from raydiff.config import experiment_from_dict
    from raydiff.evaluation import Evaluator
    from raydiff.remeasure import measure_trial

    root, _, _, _, store, _ = measured
    cfg = experiment_from_dict(json.loads(store.config_json()))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile="reduce-overhead"))
    compiled, sampled = [], []

    class Compiled(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *a, **k):
            return self.net(*a, **k)

    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or Compiled(net))
    real = Evaluator.fidelity
    monkeypatch.setattr(Evaluator, "fidelity", lambda self, net, step: sampled.append(type(net).__name__) or real(self, net, step))
    steps = store.steps()[:2]
    got = dict(measure_trial(cfg.to_dict(), store, steps, ("fid",), torch.device("cpu")))
    assert len(compiled) == 1 and sampled == ["Compiled", "Compiled"]  # compiled once, every snapshot through it
    plain = dict(measure_trial(json.loads(store.config_json()), store, steps, ("fid",), torch.device("cpu")))
    assert [got[s]["fid"]["fid"] for s in steps] == pytest.approx([plain[s]["fid"]["fid"] for s in steps], rel=1e-6)
