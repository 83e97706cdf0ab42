"""The ratio test in pixel space (Bonnaire et al. 2025, arXiv 2505.17638, their compute_fmem.py):
a sample x is a copy when ‖x − a₁‖ / ‖x − a₂‖ < eval.mem_ratio (1/3), a₁ and a₂ its nearest and
second-nearest training images by Euclidean distance in the model's pixel range."""

from __future__ import annotations

from typing import Any

from raydiff.measures.base import register
from raydiff.measures.memorization import MemorizationTest, Verdicts


@register
class PixelRatio(MemorizationTest):
    name = "pixel"
    label = "pixel ratio test"
    fraction_label = "mem_frac (pixel)"
    description = "ratio test in pixel space: ‖x − a₁‖/‖x − a₂‖ < eval.mem_ratio"
    prefix = "mem_frac"
    score_name = "ratio"
    needs = ("samples",)
    threshold = 1.0 / 3.0
    threshold_source = "Bonnaire et al. 2025 (arXiv 2505.17638): a sample is memorized when the ratio is below 1/3"
    raw_variant = True

    def verdicts(self, ctx: Any, samples: Any) -> Verdicts:
        from raydiff.metrics.memorization import distance_ratio

        nb = ctx.neighbours(samples)  # exact two nearest training images, computed once per sample set
        ratio = distance_ratio(nb).cpu()
        return Verdicts(ratio < ctx.cfg.eval.mem_ratio, nb.index.cpu(), ratio)
