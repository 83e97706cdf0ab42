"""`train.compile`: the training step runs a torch.compile'd network that shares the trial's
parameters, and evaluations sample through the evaluated network (the EMA's) compiled once in
torch.compile's default mode; EMA updates and checkpoints keep the plain modules.

Inductor takes about a minute to compile even the smoke U-Net on this CPU, so the test compiles
with dynamo's `aot_eager` backend (graph capture and AOTAutograd, no code generation): the same
path through raydiff, the mode checked where it is handed to torch.compile. benchmarks/gpu.sh
measures the real modes on a GPU.
"""

from __future__ import annotations

import torch

from raydiff.config import apply_overrides, load_search_space, packaged_search_space
from raydiff.trial import train


def smoke(**over):
    space = load_search_space(packaged_search_space("smoke"))
    base = {"data.n_train": 8, "train.max_steps": 12, "eval.every_steps": 6, "eval.cadence": "uniform",
            "eval.fid_every": 0, "stop.patience": 10**6, "train.device": "cpu", "train.ema_decay": 0.9}  # fmt: skip
    return apply_overrides(space.base, {**base, **over})


def run(cfg):
    reports, states = [], []
    train(cfg, lambda m, state_fn: reports.append(m) or states.append(state_fn()) or False)
    return reports, states[-1]


def test_compiled_step_trains_the_same_model(monkeypatch):
    from raydiff.evaluation import Evaluator

    real, real_sample = torch.compile, Evaluator.sample
    modes, compiled_nets, sampled_through = [], [], []

    def compile_eagerly(model, mode=None, **kw):
        modes.append(mode)
        compiled_nets.append(model)
        return real(model, backend="aot_eager")

    def sample(self, net, *a, **kw):
        sampled_through.append(type(net).__name__)
        return real_sample(self, net, *a, **kw)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    monkeypatch.setattr(Evaluator, "sample", sample)
    torch._dynamo.reset()
    plain, plain_state = run(smoke())
    assert modes == [] and set(sampled_through) == {"UNet"}  # off: nothing compiled
    sampled_through.clear()
    compiled, state = run(smoke(**{"train.compile": "reduce-overhead"}))
    # the training step in the mode asked; the sampling network (the EMA, another module) in the
    # default mode, and every evaluation samples through it
    assert modes == ["reduce-overhead", None]
    assert compiled_nets[1] is not compiled_nets[0] and state["ema"] is not None
    assert sampled_through and set(sampled_through) == {"OptimizedModule"}
    # the checkpoint holds the plain module's keys (no "_orig_mod." of the compiled wrapper)
    assert state["net"].keys() == plain_state["net"].keys()
    # same seed, same steps: the same losses and memorization, to float tolerance
    assert [r["step"] for r in compiled] == [r["step"] for r in plain]
    for a, b in zip(compiled, plain):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * max(1.0, abs(b["train_loss"]))
        assert a["mem_frac"] == b["mem_frac"]
    for k, v in state["net"].items():
        torch.testing.assert_close(v, plain_state["net"][k], rtol=1e-3, atol=1e-5)
