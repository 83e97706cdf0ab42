"""Cosine copy tests in three more feature spaces: DINOv2, CLIP's image encoder, Inception-v3.

Each is a `CosineTest` over a network of metrics/features.FEATURE_NETWORKS: a sample is a copy
when its largest cosine similarity to a training image's embedding exceeds the test's threshold
(eval.mem_thresholds[name] overrides it). Unlike SSCD's 0.6 (trained for copy detection, and
calibrated by Marion & Wu), none of these spaces has a copy threshold established in the
memorization literature: each `threshold_source` says what the value rests on, and the ledger
(raydiff/ledger.py) keeps every sample's best cosine so a sweep can be re-thresholded afterwards.
"""

from __future__ import annotations

from typing import Any

from raydiff.measures.base import register
from raydiff.measures.cosine import CosineTest


class OverridableCosine(CosineTest):
    """A cosine test whose threshold eval.mem_thresholds may set per test."""

    def cosine_threshold(self, ctx: Any) -> float:
        return float(dict(getattr(ctx.cfg.eval, "mem_thresholds", ()) or ()).get(self.name, self.threshold))


@register
class DINOv2(OverridableCosine):
    label = "DINOv2 cosine test"
    name = "dinov2"
    description = "cosine test in DINOv2 space (pooled CLS, eval.feature_models.dinov2): max cosine > threshold"
    prefix = "mem_frac_dinov2"
    needs = ("samples", "dinov2")
    network = "dinov2"
    threshold = 0.95
    threshold_source = (
        "no established convention: Stein et al. 2023 (arXiv 2306.04675) use DINOv2 ViT-L/14 for memorization "
        "metrics but set no per-sample cosine threshold; 0.95 is a near-duplicate cut chosen here"
    )
    flops_per_sample = 1.6e11  # ViT-L/14 at 224 px: 2 × 304 M parameters × 257 tokens


@register
class CLIP(OverridableCosine):
    label = "CLIP cosine test"
    name = "clip"
    description = "cosine test in CLIP image-embedding space (eval.feature_models.clip): max cosine > threshold"
    prefix = "mem_frac_clip"
    needs = ("samples", "clip")
    network = "clip"
    threshold = 0.95
    threshold_source = (
        "no established convention for copies of generated images: CLIP near-duplicate filtering of training "
        "sets commonly cuts at cosine 0.95-0.99 (practice, not a calibrated test); 0.95 chosen here"
    )
    flops_per_sample = 8.8e9  # ViT-B/32 at 224 px: 2 × 88 M parameters × 50 tokens


@register
class Inception(OverridableCosine):
    label = "Inception cosine test"
    name = "inception"
    description = "cosine test in Inception-v3 pool-feature space (clean-fid's weights): max cosine > threshold"
    prefix = "mem_frac_inception"
    needs = ("samples", "inception")
    network = "inception"
    threshold = 0.95
    threshold_source = (
        "no established convention: Inception features serve distance-based copy tests (Meehan et al. 2020, "
        "arXiv 2004.05675, compare nearest-neighbour distances with held-out ones) without a cosine cut; "
        "0.95 chosen here"
    )
    flops_per_sample = 1.15e10  # Inception-v3 at 299 px: 5.7 G multiply-adds
