"""Bracket refinement (eval.refine_snapshots): weight snapshots between evaluations, a binary
search over them when mem_frac first crosses the threshold, the one onset rule over the merged
history."""

from __future__ import annotations

import math

import pytest
import torch

from raydiff.config import apply_overrides, load_search_space, packaged_search_space
from raydiff.data import load
from raydiff.diffusion import build_process
from raydiff.errors import ConfigError
from raydiff.evaluation import Evaluator
from raydiff.metrics.onset import mem_onset
from raydiff.models import build_unet
from raydiff.training.refine import bisect_crossing, crossed
from raydiff.training.schedule import refine_steps
from raydiff.trial import train


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def smoke(**over):
    space = load_search_space(packaged_search_space("smoke"))
    return apply_overrides(space.base, {"data.n_train": 8} | over)


def test_refine_steps_evenly_inside_the_gap():
    assert refine_steps(100, 200, 3) == [125, 150, 175]
    assert refine_steps(0, 50, 1) == [25]
    assert refine_steps(10, 12, 7) == [11]  # a narrow gap holds fewer snapshots
    assert refine_steps(10, 11, 7) == []


@pytest.mark.parametrize("n", [1, 3, 7, 15])
@pytest.mark.parametrize("first_above", [0, 1, 2, 5, 15])
def test_bisect_crossing_finds_the_first_above_in_log_calls(n, first_above):
    calls = []

    def above(i):
        calls.append(i)
        return i >= first_above

    assert bisect_crossing(n, above) == min(first_above, n)
    assert len(calls) <= math.ceil(math.log2(n + 1))


def test_crossed_only_on_the_rise():
    h = [{"step": 1, "mem_frac": 0.0}, {"step": 2, "mem_frac": None}]
    assert crossed(h, 0.2, 0.1)
    assert not crossed(h, 0.05, 0.1)
    assert crossed([], 0.2, 0.1)  # the first evaluation: bracket (0, step]
    assert not crossed(h + [{"step": 3, "mem_frac": 0.3}], 0.2, 0.1)  # already above
    assert crossed(h + [{"step": 3, "mem_frac": math.nan}], 0.2, 0.1)  # NaN is not above
    assert not crossed(h, math.nan, 0.1)


def test_refine_snapshots_validated():
    with pytest.raises(ConfigError, match="eval.refine_snapshots"):
        smoke(**{"eval.refine_snapshots": -1})


class MeanFeatures:
    """A two-number feature extractor (the protocol is pluggable): FID's cadence is what is tested."""

    name, mode = "mean", "test"

    def __call__(self, images):
        x = images.float().flatten(1)
        return torch.stack([x.mean(1), x.std(1)], 1).double().numpy()


def test_memorization_only_evaluation_skips_probes_and_fid_cadence(monkeypatch):
    from raydiff.metrics import fid as fidlib

    monkeypatch.setattr(fidlib, "build_extractor", lambda *a, **k: MeanFeatures())
    cfg = smoke(**{"eval.fid_every": 2})
    data = load(cfg.data)
    ev = Evaluator(cfg, data, build_process(cfg.diffusion), torch.device("cpu"))
    net = build_unet(cfg.model, 1, 8, data.num_classes)
    m = ev(net, 10, memorization_only=True)
    assert ev.count == 0 and m["fid"] is None
    assert math.isnan(m["train_loss"]) and math.isnan(m["test_loss"])
    assert 0.0 <= m["mem_frac"] <= 1.0 and m["eval_s"] > 0
    assert ev(net, 20)["fid"] is not None and ev.count == 1  # the first full evaluation still has FID


def run(cfg):
    reports = []

    def report(m, ckpt):
        reports.append((m, ckpt is not None))
        return ckpt is not None and m.get("stop_status") is not None

    last = train(cfg, report)
    return last, reports


def test_train_with_refinement_same_trajectory_finer_onset():
    # 4 images: the smoke model memorizes them within ~100 steps
    over = {"data.n_train": 4, "eval.every_steps": 20, "eval.cadence": "geometric", "eval.geometric_ratio": 1.5,
            "eval.fid_every": 0, "train.max_steps": 400}  # fmt: skip
    plain_last, plain = run(smoke(**over))
    k = 3
    last, reps = run(smoke(**over, **{"eval.refine_snapshots": k}))
    assert plain_last["tau_mem_step"] is not None, "the smoke config memorizes within its budget"

    regular = [m for m, _ in reps if not m.get("refined")]
    refined = [(m, ck) for m, ck in reps if m.get("refined")]
    # snapshots do not perturb training: the regular evaluations measure the same as without them
    by_step = {m["step"]: m["mem_frac"] for m, _ in plain}
    assert all(by_step[m["step"]] == m["mem_frac"] for m in regular)
    # one binary search at the crossing: ≤ ⌈log₂(k+1)⌉ memorization-only evaluations, no checkpoint,
    # no history (the stopper acts on the regular report only), reported in step order before it
    assert 1 <= len(refined) <= math.ceil(math.log2(k + 1))
    assert all(not ck and "history_steps" not in m and math.isnan(m["train_loss"]) for m, ck in refined)
    steps = [m["step"] for m, _ in reps]
    assert steps == sorted(steps)
    # the onset is the one rule over the merged history, and never later than without refinement
    hist = [(m["step"], m["mem_frac"]) for m, _ in reps]  # the history, as train() kept it: every report
    tau = mem_onset([s for s, _ in hist], [v for _, v in hist], 0.1, 2)
    assert tau == last["tau_mem_step"] is not None
    assert last["tau_prev_step"] == max(s for s, _ in hist if s < tau)  # the bracket's lower end, refined ones included
    assert tau <= plain_last["tau_mem_step"]
    assert last["step"] <= plain_last["step"]
