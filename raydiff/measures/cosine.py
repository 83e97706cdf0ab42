"""Copy tests by cosine similarity in a feature network's space: a sample is a copy when its
largest cosine similarity to a training image's embedding exceeds the test's threshold.

`features` is SSCD (Pizzi et al. 2022), Marion & Wu's test (arXiv 2605.06077, §3.1: cosine > 0.6),
loaded from `eval.embedding` (a TorchScript file or URL: metrics/embedding.py)."""

from __future__ import annotations

from typing import Any, ClassVar

from raydiff.measures.base import register
from raydiff.measures.memorization import MemorizationTest, Verdicts


class CosineTest(MemorizationTest):
    """A cosine test over the feature network `network` (a key of the context's `features`)."""

    score_name = "cosine"
    network: ClassVar[str]

    def cosine_threshold(self, ctx: Any) -> float:
        return float(self.threshold)

    def verdicts(self, ctx: Any, samples: Any) -> Verdicts:
        from raydiff.metrics.memorization import nearest_cosine

        emb, train_emb = ctx.embed(self.network, samples)  # [S, D], [N, D]
        best, index = nearest_cosine(emb, train_emb)
        return Verdicts((best > self.cosine_threshold(ctx)).cpu(), index.cpu(), best.cpu())


@register
class SSCD(CosineTest):
    name = "features"
    label = "feature cosine test"
    fraction_label = "SSCD mem_frac"
    description = "cosine test in SSCD feature space (eval.embedding): max cosine > eval.mem_cosine"
    prefix = "mem_frac_features"
    needs = ("samples", "embedding")
    network = "embedding"
    threshold = 0.6
    threshold_source = "Marion & Wu 2026 (arXiv 2605.06077), §3.1: SSCD cosine similarity > 0.6"
    flops_per_sample = 13.6e9  # ResNet-50 at 288 px (measurement-costs: torch's FLOP counter)

    def cosine_threshold(self, ctx: Any) -> float:
        return float(ctx.cfg.eval.mem_cosine)
