"""The denoising loss on fixed train and test probes, and Marion & Wu's onset (arXiv 2605.06077,
§3.1): τ_mem is when the test loss begins to diverge from the train loss (metrics/onset.py:
`loss_divergence_onset`, with stop.loss_gap and stop.loss_window)."""

from __future__ import annotations

from typing import Any

from raydiff.measures.base import Column, Measure, register


@register
class LossDivergence(Measure):
    name = "loss"
    kind = "loss"
    label = "loss divergence (recorded)"
    description = "denoising loss on fixed train and test probes; onset where the test loss departs from the train loss"
    columns = (Column("train_loss"), Column("test_loss"))
    needs = ("probes",)
    onset = "loss_divergence"
    history = ("train_loss", "test_loss")

    def compute(self, ctx: Any) -> dict[str, Any]:
        return {"train_loss": ctx.probe_loss("train"), "test_loss": ctx.probe_loss("test")}
