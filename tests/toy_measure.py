"""A measure registered from outside the package, as a user's would be: the nearest-image test,
a sample is a copy when its root-mean-square distance to its nearest training image, in the
model's pixel range, is below `threshold`. Importing this module registers it (in another
process: RAYDIFF_MEASURES=toy_measure)."""

from __future__ import annotations

from typing import Any

from raydiff.measures import MemorizationTest, Verdicts, register


@register
class NearestImage(MemorizationTest):
    name = "toy"
    label = "toy nearest-image test"
    description = "copy when the RMS distance to the nearest training image is below 0.5 (model range)"
    prefix = "mem_frac_toy"
    score_name = "rms"
    needs = ("samples",)
    threshold = 0.5
    threshold_source = "this test's own choice (a test fixture)"

    def verdicts(self, ctx: Any, samples: Any) -> Verdicts:
        nb = ctx.neighbours(samples)  # the pixel neighbours the evaluation computes once
        rms = nb.d1.cpu() / samples[0].numel() ** 0.5
        return Verdicts(rms < self.threshold, nb.index.cpu(), rms)
