"""The ledger per image: covariates against brute force, Cohen's κ on planted (dis)agreements,
the first-copy correlation and its finding, and the whole analysis on a planted ledger (the
images named, their first steps and counts, the finding, the gallery, the tests' onsets)."""

from __future__ import annotations

import base64
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from raydiff.metrics.agreement import cohen_kappa, pairwise_kappa

from raydiff import ledger
from raydiff.analysis import images
from raydiff.config import experiment_from_dict
from raydiff.data import load
from raydiff.evaluation import encode_array


def test_covariates_match_brute_force_with_duplicates():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 1, 4, 4)).astype(np.uint8)
    x[7] = x[3]  # an exact duplicate pair
    x[12] = np.clip(x[5].astype(int) + 1, 0, 255)  # a near duplicate
    emb = rng.normal(size=(30, 6))
    cov = images.covariates(x, labels=np.arange(30) % 3, embeddings={"dinov2": emb}, k=4)
    px = x.reshape(30, -1).astype(np.float64) / 127.5 - 1
    d = np.sqrt(((px[:, None] - px[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    srt = np.sort(d, axis=1)
    np.testing.assert_allclose(cov.nn_distance, srt[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov.typicality_pixel, srt[:, :4].mean(1), rtol=1e-5)
    assert cov.nn_distance[3] == 0 and cov.nn_distance[7] == 0 and cov.nn_distance[12] == pytest.approx(cov.nn_distance[5])
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = e @ e.T
    np.fill_diagonal(cos, -np.inf)
    np.testing.assert_allclose(cov.typicality_dinov2, 1 - np.sort(cos, axis=1)[:, ::-1][:, :4].mean(1), rtol=1e-6, atol=1e-9)
    assert cov.label.tolist() == (np.arange(30) % 3).tolist()
    # chunking changes nothing
    np.testing.assert_allclose(images.nearest_distances(px, 4, chunk=7), srt[:, :4], rtol=1e-5)


@pytest.mark.parametrize("a, b, want", [
    ([1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 0], 1.0),  # planted agreement
    ([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], -1.0),  # planted disagreement on balanced verdicts
    ([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 1, 0, 0, 0, 0, 0], (0.7 - 0.54) / 0.46),  # by hand: p_o .7, p_e .54
    ([1, 0, 1, 0], [1, 1, 0, 0], 0.0),  # independent: agreement at chance
])  # fmt: skip
def test_cohen_kappa_on_planted_verdicts(a, b, want):
    assert cohen_kappa(a, b) == pytest.approx(want)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_kappa_undefined_and_pairwise():
    assert math.isnan(cohen_kappa([0, 0, 0], [0, 0, 0]))  # p_e = 1
    with pytest.raises(ValueError):
        cohen_kappa([1, 0], [1, 0, 1])
    k = pairwise_kappa({"pixel": [1, 1, 0, 0], "features": [1, 1, 0, 0], "dinov2": [0, 0, 1, 1]})
    assert k == {("pixel", "features"): 1.0, ("pixel", "dinov2"): -1.0, ("features", "dinov2"): -1.0}


def synthetic_table(first_of, n=60, trials=2, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(trials):
        typ = rng.random(n)
        first = [first_of(v, rng) for v in typ]
        out.append(pd.DataFrame({"trial_id": f"t{t}", "image": range(n), "typicality_pixel": typ, "nn_distance": rng.random(n),
                                 "first_step_pixel": pd.array(first, dtype="Int64"), "copies_pixel": [0 if f is None else 1 for f in first]}))  # fmt: skip
    return pd.concat(out, ignore_index=True)


def test_first_copy_correlation_reads_planted_orders():
    # atypical (large typicality distance) copied early, the most typical never
    atypical = synthetic_table(lambda v, rng: None if v < 0.3 else int(1000 * (1.1 - v)))
    c = images.first_copy_correlation(atypical, "typicality_pixel", "pixel", n_boot=300)
    assert c.rho < -0.9 and c.hi < 0 and c.n_trials == 2 and c.n_copied == (atypical.first_step_pixel.notna()).sum()
    assert c.finding().startswith("atypical images are copied first (pixel test): ρ = -")
    typical = synthetic_table(lambda v, rng: int(1000 * (0.1 + v)))
    assert images.first_copy_correlation(typical, "typicality_pixel", "pixel", n_boot=300).finding().startswith("typical images are copied first")
    noise = synthetic_table(lambda v, rng: int(rng.integers(100, 1000)), n=200, seed=3)
    c = images.first_copy_correlation(noise, "typicality_pixel", "pixel", n_boot=300)
    assert c.lo < 0 < c.hi and c.finding().startswith("no evidence")
    none = synthetic_table(lambda v, rng: None)
    assert images.first_copy_correlation(none, "nn_distance", "pixel", n_boot=10).finding().startswith("no evidence")


def test_images_report_on_a_planted_ledger(tmp_path):
    """A digits trial whose ledger copies its three most atypical images first (pixel test; the
    features test agrees on some samples and not on others): images.parquet names exactly them,
    with first steps and counts; the finding, the gallery and the onsets follow."""
    exp = experiment_from_dict({"data": {"dataset": "digits", "n_train": 48}}).validate()
    x = load(exp.data).x_train.numpy()
    typ = images.covariates(x).typicality_pixel.to_numpy()
    order = np.argsort(-typ)
    planted = {int(order[0]): 100, int(order[1]): 200, int(order[2]): 200}  # image → first step
    S, steps = 8, (100, 200, 300)
    writer = ledger.SamplesWriter(str(tmp_path))
    evals = []
    counts = dict.fromkeys(planted, 0)
    for step in steps:
        now = [i for i, s in planted.items() if s <= step]
        nearest = now + [int(order[-1 - j]) for j in range(S - len(now))]  # the rest: typical, not copied
        copied = [True] * len(now) + [False] * (S - len(now))
        feat = [c and j % 2 == 0 for j, c in enumerate(copied)]  # the features test sees half of them
        for i in now:
            counts[i] += 1
        led = {"step": step, "sample": list(range(S)), "nearest_pixel": nearest, "score_pixel": [0.0 if c else 0.9 for c in copied],
               "copied_pixel": copied, "nearest_features": nearest, "score_features": [0.9 if f else 0.1 for f in feat], "copied_features": feat}  # fmt: skip
        writer.add("t0", {"ledger": led})
        evals.append({"step": step, "samples": base64.b64decode(encode_array(x[nearest[:4]]))})  # metrics' `samples`: .npy bytes
    trial = {"trial_id": "t0", "config": json.dumps(exp.to_dict())}
    sweep = SimpleNamespace(uri=str(tmp_path), trials=[trial], evals={"t0": evals}, git_commit="abc")
    out = tmp_path / "analysis"
    out.mkdir()
    rep = images.images_report(sweep, out, n_boot=200)
    t = pd.read_parquet(out / "images.parquet")
    assert len(t) == 48 and set(t.columns) >= {"trial_id", "image", "label", "nn_distance", "typicality_pixel", "first_step_pixel", "copies_pixel"}
    hit = t[t.first_step_pixel.notna()]
    assert dict(zip(hit.image, hit.first_step_pixel)) == planted
    assert dict(zip(hit.image, hit.copies_pixel)) == counts
    assert t.loc[t.first_step_features.notna(), "image"].tolist() != [] and set(t.loc[t.first_step_features.notna(), "image"]) <= set(planted)
    assert t.label.tolist() == load(exp.data).y_train.tolist()
    assert rep.findings[0].startswith("atypical images are copied first (pixel test)")
    assert (out / "images_vs_typicality.png").stat().st_size > 0
    k = pd.read_parquet(out / "agreement.parquet")
    assert k.step.tolist() == list(steps) and (k.test_a == "pixel").all() and (k.test_b == "features").all()
    # 100: both call 1 of 8; later pixel 3 of 8, features 2 of them: p_o 7/8, p_e 36/64, κ = 20/28
    np.testing.assert_allclose(k.kappa, [1.0, 20 / 28, 20 / 28])
    assert rep.onsets.iloc[0]["pixel"] == 100  # 1/8, 3/8, 3/8 ≥ 0.1 from the first (patience 2)
    assert rep.onsets.iloc[0]["features"] == 100  # 1/8, 2/8, 2/8
    assert "First images copied" in rep.html and rep.html.count("<figure style") == 3
    assert "Images one test calls copies and another does not" in rep.html
