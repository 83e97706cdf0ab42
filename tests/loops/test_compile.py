"""`train.compile`: the training step runs a torch.compile'd network that shares the trial's
parameters; evaluation, EMA and checkpoints keep the plain module.

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
            "eval.fid_every": 0, "stop.patience": 10**6, "train.device": "cpu"}  # fmt: skip
    return apply_overrides(space.base, {**base, **over})


def run(cfg):
    reports, states = [], []
    train(cfg, lambda m, state_fn: reports.append(m) or states.append(state_fn()) or False)
    return reports, states[-1]


def test_compiled_step_trains_the_same_model(monkeypatch):
    real = torch.compile
    modes = []

    def compile_eagerly(model, mode=None, **kw):
        modes.append(mode)
        return real(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    plain, plain_state = run(smoke())
    assert modes == []  # off: nothing compiled
    compiled, state = run(smoke(**{"train.compile": "reduce-overhead"}))
    assert modes == ["reduce-overhead"]
    # the checkpoint holds the plain module's keys (no "_orig_mod." of the compiled wrapper)
    assert state["net"].keys() == plain_state["net"].keys()
    # same seed, same steps: the same losses and memorization, to float tolerance
    assert [r["step"] for r in compiled] == [r["step"] for r in plain]
    for a, b in zip(compiled, plain):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * max(1.0, abs(b["train_loss"]))
        assert a["mem_frac"] == b["mem_frac"]
    for k, v in state["net"].items():
        torch.testing.assert_close(v, plain_state["net"][k], rtol=1e-3, atol=1e-5)
