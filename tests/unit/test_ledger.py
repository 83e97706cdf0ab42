"""The per-sample ledger: planted copies are named exactly (image, first step, count), by the
pixel test and a cosine test; files are keyed by step (a restored trial duplicates no row);
the byte budget holds on a long trial and says what it left out."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
import torch

from raydiff.evaluation import ledger as evaluation_ledger
from raydiff import ledger, measures
from raydiff.metrics.memorization import nearest_two

N, C, H = 40, 1, 8
STEPS = (100, 200, 300, 400)
# step → {training image: how many samples copy it}; the rest of the samples are fresh noise
PLANTED = {100: {}, 200: {3: 1, 7: 2}, 300: {3: 1, 11: 1}, 400: {7: 1, 11: 3, 29: 1}}
S = 24


class Context:
    """What a memorization test asks of an evaluation: its config, the samples' pixel neighbours
    and a feature network's embeddings (here the centered pixels: a copy is at cosine 1)."""

    def __init__(self, train: torch.Tensor):
        self.train = train
        self.cfg = SimpleNamespace(eval=SimpleNamespace(mem_ratio=1 / 3, mem_cosine=0.6, mem_thresholds=()))

    def neighbours(self, samples):
        return nearest_two(samples.float() / 127.5 - 1, self.train.float() / 127.5 - 1)

    def embed(self, network, samples):
        f = lambda x: x.float().reshape(len(x), -1) - 127.5  # noqa: E731
        return f(samples), f(self.train)


def planted_samples(train: torch.Tensor, step: int, rng: np.random.Generator) -> torch.Tensor:
    """S samples: fresh uniform noise, with exact or near (±2 grey levels) copies of the planted images first."""
    x = torch.from_numpy(rng.integers(0, 256, (S, C, H, H), dtype=np.uint8))
    i = 0
    for image, count in PLANTED[step].items():
        for k in range(count):
            copy = train[image].int()
            if k % 2:  # a near copy
                copy = (copy + torch.from_numpy(rng.integers(-2, 3, copy.shape))).clamp(0, 255)
            x[i] = copy.to(torch.uint8)
            i += 1
    return x


def reports(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    train = torch.from_numpy(rng.integers(0, 256, (N, C, H, H), dtype=np.uint8))
    ctx = Context(train)
    tests = {"pixel": measures.get("pixel")(), "dinov2": measures.get("dinov2")()}
    out = []
    for step in STEPS:
        x = planted_samples(train, step, rng)
        out.append({"step": step, "train_loss": 0.0, "ledger": evaluation_ledger(step, {n: t.verdicts(ctx, x) for n, t in tests.items()})})
    return out


def expected() -> dict[int, tuple[int, int]]:
    """image → (first step copied, copies)."""
    out: dict[int, list[int]] = {}
    for step in STEPS:
        for image, count in PLANTED[step].items():
            first, total = out.get(image, (step, 0))
            out[image] = (min(first, step), total + count)
    return out


def test_ledger_names_exactly_the_planted_images_their_first_steps_and_counts(tmp_path):
    writer = ledger.SamplesWriter(str(tmp_path), {"raydiff.git_commit": "x"})
    for r in reports():
        assert writer.add("t0", r) is not None
    fs = pafs.LocalFileSystem()
    table = ledger.read_samples(fs, str(tmp_path))
    assert table.num_rows == S * len(STEPS)
    assert table.schema.metadata[b"raydiff.git_commit"] == b"x"
    rows = table.to_pandas()
    want = expected()
    for test in ("pixel", "dinov2"):
        got = ledger.first_copies(rows, test)
        assert {int(r.image): (int(r.first_step), int(r.copies)) for r in got.itertuples()} == want, test
    # nulls for a test that did not run; the scores are the ones thresholded
    assert rows["copied_clip"].isna().all()
    assert (rows.loc[rows.copied_pixel, "score_pixel"] < 1 / 3).all()
    assert (rows.loc[rows.copied_dinov2, "score_dinov2"] > 0.95).all()


def test_ledger_rows_reject_ragged_or_unknown_columns():
    good = {"step": 5, "sample": [0, 1], "nearest_pixel": [3, 4], "score_pixel": [0.1, float("nan")], "copied_pixel": [True, False]}
    rows = ledger.ledger_rows("t", {"ledger": good})
    assert [r["sample"] for r in rows] == [0, 1] and rows[1]["score_pixel"] is None and rows[0]["step"] == 5
    assert ledger.ledger_rows("t", {"step": 5}) == []
    with pytest.raises(ValueError, match="differ in length"):
        ledger.ledger_rows("t", {"ledger": {**good, "nearest_pixel": [3]}})
    with pytest.raises(ValueError, match="no registered memorization test"):
        ledger.ledger_rows("t", {"ledger": {**good, "nearest_sift": [1, 2]}})


def test_a_restored_trial_writes_no_duplicate_rows(tmp_path):
    rs = reports()
    uri = str(tmp_path)
    writer = ledger.SamplesWriter(uri)
    for r in rs:
        writer.add("t0", r)
    # the trial restarts from its checkpoint at step 200 and reports 300 again (new process: new
    # writer, which lists the folder); 400's file is stale and goes
    again = ledger.SamplesWriter(uri)
    again.add("t0", rs[2])
    fs = pafs.LocalFileSystem()
    rows = ledger.read_samples(fs, uri).to_pandas()
    assert sorted(rows.step.unique()) == [100, 200, 300]
    assert not rows.duplicated(["trial_id", "step", "sample"]).any()
    again.add("t0", rs[3])
    again.add("t0", rs[3])  # the last result reported twice (a resume)
    rows = ledger.read_samples(fs, uri).to_pandas()
    assert len(rows) == S * len(STEPS) and not rows.duplicated(["trial_id", "step", "sample"]).any()


def test_byte_budget_holds_on_a_long_trial_and_records_what_it_left_out(tmp_path):
    rng = np.random.default_rng(1)
    n_samples, evaluations, budget = 256, 300, 60_000
    writer = ledger.SamplesWriter(str(tmp_path), budget_bytes=budget)
    written = []
    for e in range(evaluations):
        step = 10 * (e + 1)
        led = {
            "step": step, "sample": list(range(n_samples)),
            "nearest_pixel": rng.integers(0, 5000, n_samples).tolist(),
            "score_pixel": rng.random(n_samples).tolist(),
            "copied_pixel": (rng.random(n_samples) < 0.1).tolist(),
        }  # fmt: skip
        if writer.add("long", {"ledger": led}) is not None:
            written.append(step)
    folder = tmp_path / "samples" / "long"
    sizes = [p.stat().st_size for p in folder.glob("*.parquet")]
    assert 0 < sum(sizes) <= budget
    note = json.loads((folder / "budget.json").read_text())
    dropped = [d["step"] for d in note["dropped"]]
    assert note["budget_bytes"] == budget and dropped
    assert sorted(written + dropped) == [10 * (e + 1) for e in range(evaluations)]
    assert written == [10 * (e + 1) for e in range(len(written))]  # the kept ones are the first
    assert all(d["rows"] == n_samples for d in note["dropped"])
    rows = ledger.read_samples(pafs.LocalFileSystem(), str(tmp_path))
    assert rows.num_rows == n_samples * len(written)


def test_the_evaluations_ledger_writes_the_same_rows(tmp_path):
    """The evaluation's report (raydiff.evaluation.ledger) becomes one row per sample, whether the
    report keeps it nested or a logger flattened it."""
    from raydiff.evaluation import ledger as evaluation_ledger

    rng = np.random.default_rng(2)
    train = torch.from_numpy(rng.integers(0, 256, (N, C, H, H), dtype=np.uint8))
    ctx = Context(train)
    x = planted_samples(train, 400, rng)
    verdicts = {"pixel": measures.get("pixel")().verdicts(ctx, x)}
    a = ledger.ledger_rows("t", {"ledger": evaluation_ledger(400, verdicts)})
    assert len(a) == S and all(r["step"] == 400 for r in a)
    assert {r["nearest_pixel"] for r in a if r["copied_pixel"]} == {7, 11, 29}
    flat = {f"ledger/{k}": tuple(v) if isinstance(v, list) else v for k, v in evaluation_ledger(400, verdicts).items()}  # as a logger flattens it
    assert ledger.ledger_rows("t", flat) == a


def test_the_results_callback_writes_the_ledger_and_a_restored_trial_duplicates_nothing(tmp_path):
    """The driver's writer, as a sweep runs it: each evaluation's ledger goes to samples/; the
    driver dies (the callback is pickled with the experiment state, its rows live in the files),
    the trial restarts from its checkpoint at step 200 and reports 300 and 400 again."""
    import pickle

    from paths import ROOT
    from raydiff.config import load_search_space
    from raydiff.tune.callback import ResultsCallback
    from raydiff.tune.trainable import for_tune

    space = load_search_space(ROOT / "raydiff" / "search_spaces" / "smoke.yaml")
    trial = SimpleNamespace(trial_id="t0", config={"point": {}}, last_result={})
    rs = [for_tune(r) for r in reports()]
    cb = ResultsCallback(space, str(tmp_path), {})
    cb.setup()
    for r in rs:
        cb.on_trial_result(0, [trial], trial, r)
    fs = pafs.LocalFileSystem()
    first = ledger.read_samples(fs, str(tmp_path)).to_pandas()
    assert len(first) == S * len(STEPS)
    cb = pickle.loads(pickle.dumps(cb))  # the resumed driver
    cb.setup()
    for r in rs[2:]:
        cb.on_trial_result(0, [trial], trial, r)
    again = ledger.read_samples(fs, str(tmp_path)).to_pandas()
    assert not again.duplicated(["trial_id", "step", "sample"]).any()
    pd.testing.assert_frame_equal(first, again)
