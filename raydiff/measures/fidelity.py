"""Figures of fidelity, measured on generated samples in a feature network's space: the Fréchet
distance (FID with Inception features; Heusel et al. 2017) against the train and test references,
and the sliced Wasserstein distance against held-out and training images. They define no onset."""

from __future__ import annotations

from typing import Any

from raydiff.measures.base import Column, Measure, register


@register
class Frechet(Measure):
    name = "fid"
    kind = "fidelity"
    description = "Fréchet distance of the samples' features to each split's reference (eval.fid_features, eval.fid_reference)"
    columns = (
        Column("fid"), Column("fid_train"), Column("fid_extractor", "string"), Column("fid_split", "string"),
        Column("fid_samples", "int64"), Column("fid_train_samples", "int64"), Column("fid_reference", "string"),
    )  # fmt: skip
    needs = ("samples", "fid_features")
    flops_per_sample = 11.4e9  # Inception-v3 at 299 px, the usual FID features

    def compute(self, ctx: Any) -> dict[str, Any]:
        return ctx.frechet()


@register
class SlicedWasserstein(Measure):
    name = "swd"
    kind = "fidelity"
    description = "sliced Wasserstein distance of the samples' features to held-out and training images' (eval.swd_samples)"
    columns = (
        Column("sliced_wasserstein"), Column("swd_samples", "int64"),
        Column("sliced_wasserstein_train"), Column("swd_train_samples", "int64"),
    )  # fmt: skip
    needs = ("samples", "fid_features")

    def compute(self, ctx: Any) -> dict[str, Any]:
        return ctx.sliced_wasserstein()
