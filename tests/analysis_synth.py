"""Synthetic results folders for the analysis tests: the real schemas and writers
(raydiff.results.table / write_atomic), a known power law underneath.

Each trial's true onset is τ = exp(c)·N^α·B^β·η^γ·exp(ε), ε ~ Normal(0, σ²). Its mem_frac rises
as a logistic in log(step) that crosses the threshold exactly at τ; evaluations sit on a fine
geometric grid, and a trial ends like a real one: `patience` evaluations after the crossing
(status memorized) or at its step budget (status budget, censored).

Options for the statistics tests (issue 13): `seeds` replicates every grid point with train.seed
0..seeds−1 (independent noise, one trial each); `tau_gen` replaces the FID curve by one whose
minimum lies at a known step per trial (returned through `gen_truth`); `definitions` records
every onset definition's column (pixel, features, raw weights, loss) with the metric series they
come from: the features test fires before the stop rule in even-numbered trials and well after it
in odd ones (so those are censored by the sweep's own stop), the raw weights always earlier.

Fidelity options (issue 13, the embedded default's second finding): `fid_extractor` is written on
every row with a FID (`digits_classifier/v3`, `inception_v3/clean`; None leaves it unrecorded);
`fid_every=0` puts no FID on the evaluations; `fidelity_every_steps` adds fidelity-only rows
(mem_frac and losses null, FID set) from that step on, 50% further apart each time (moved to the
next step no evaluation has), up to the trial's last evaluation, as `eval.fid_every_steps` does; `fid_n_exponent` scales the FID curve
(not the tau_gen one) by (N/N_min)^exponent: a negative one makes the peak FID before onset improve with N.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from raydiff import results
from raydiff.config import ExperimentConfig, StopConfig, apply_overrides, normalized_time
from raydiff.metrics.onset import loss_divergence_onset, mem_onset

THRESHOLD, PATIENCE = 0.1, 2
LOGIT_T = math.log(THRESHOLD / (1 - THRESHOLD))


def eval_steps(last: int, first: int = 10, ratio: float = 1.03) -> np.ndarray:
    k = np.arange(0, int(math.log(last / first) / math.log(ratio)) + 2)
    return np.unique(np.round(first * ratio**k).astype(np.int64))


def mem_curve(steps: np.ndarray, tau: float, width: float = 0.3) -> np.ndarray:
    """A logistic in log(step) through (τ, THRESHOLD)."""
    return 1.0 / (1.0 + np.exp(-((np.log(steps) - math.log(tau)) / width + LOGIT_T)))


DEFINITION_TRIAL_COLUMNS = ("tau_mem_pixel_step", "tau_mem_features_step", "tau_mem_pixel_raw_step")
RAW_METRIC_COLUMNS = ("mem_frac_raw", "mem_frac_raw_lo", "mem_frac_raw_hi")
FEATURES_AT, RAW_EARLIER = (0.9, 1.6), 0.8  # τ of the features test (even, odd trials) and of the raw weights, relative to τ


def _schema(schema: pa.Schema, names: tuple[str, ...], kind) -> pa.Schema:
    """The schema with the given columns appended if it lacks them (a results.py without them yet)."""
    for name in names:
        if name not in schema.names:
            schema = schema.append(pa.field(name, kind))
    return schema


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _samples(train: np.ndarray, m: float, k: int, rng) -> tuple[np.ndarray, list[int], list[float]]:
    """k generated images: a fraction m of them near-copies of training images, the rest blends;
    their nearest training images and distance ratios computed exactly in model range."""
    n = len(train)
    out = []
    for j in range(k):
        a, b = rng.integers(0, n, 2)
        if j < round(m * k):
            x = train[a].astype(float) + rng.normal(0, 12, train[a].shape)
        else:
            x = 0.5 * train[a] + 0.5 * train[b] + rng.normal(0, 30, train[a].shape)
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    x = np.stack(out)  # uint8 [k, C, H, W]
    f = lambda v: v.reshape(len(v), -1).astype(float) / 127.5 - 1.0  # noqa: E731
    d = np.sqrt(((f(x)[:, None, :] - f(train)[None]) ** 2).sum(-1))  # [k, n]
    order = np.argsort(d, axis=1)
    d1 = d[np.arange(k), order[:, 0]]
    d2 = d[np.arange(k), order[:, 1]] if n > 1 else d1
    return x, order[:, 0].tolist(), (d1 / np.maximum(d2, 1e-12)).tolist()


def write_sweep(
    root: Path,
    *,
    n=(64, 128, 256, 512),
    b=(16, 32, 64),
    lr=(1e-4, 2e-4, 4e-4),
    alpha=1.0,
    beta=-1.0,
    gamma=-0.5,
    log_c=math.log(5.0),
    sigma=0.1,
    budget: int | None = None,
    seed=0,
    samples=False,
    running: int = 0,
    no_trials_file=False,
    width=0.3,
    diverged: int = 0,
    mode: str = "grid",
    seeds: int = 1,
    tau_gen: float | None = None,
    gen_sigma: float = 0.1,
    gen_truth: dict[str, float] | None = None,
    fid_every: int = 4,
    definitions: bool = False,
    fid_extractor: str | None = None,
    fidelity_every_steps: int | None = None,
    fid_n_exponent: float = 0.0,
    continue_evals: int = 0,
    headline: str | None = None,
    p=(40489,),
    delta: float = 0.0,
    fid_exponents: dict[str, float] | None = None,
    fid_train_gap: float | None = None,
    fid_bump: float = 0.0,
    tau_gen_alpha: float = 0.0,
) -> dict[str, float]:
    """Write <root>/trials.parquet and <root>/metrics/*.parquet; returns {trial_id: true τ}.

    `running` trials (the last ones) get metrics but no trials row, their series cut halfway;
    `diverged` trials (the first ones) are recorded as diverged; `budget` censors slow trials.
    `seeds` trials per grid point (train.seed 0..seeds−1); `tau_gen`: FID = 20·(1 + 10·log²(step/τ_gen,i))
    + 60·mem_frac, its minimum at τ_gen,i = tau_gen·exp(Normal(0, gen_sigma²)), written into
    `gen_truth`; FID at every `fid_every`-th evaluation (none with 0); `definitions`, `fid_extractor`,
    `fidelity_every_steps`, `fid_n_exponent`: see the module docstring. `continue_evals`: a memorized
    trial evaluates that many times past the one that confirmed its onset (as `stop.continue_for`
    makes it), so its memorization rate is measurable; with 0 it stops at its onset.
    `fidelity_every_steps`, `fid_n_exponent`: see the module docstring; `headline`: the space's
    stop.headline, in its search space and every trial's config.

    For the findings (analysis/findings.py): `p` the models' parameter counts (a model axis, one
    model per count) and `delta` τ's exponent on it; `fid_exponents` scale every FID curve by
    Π (axis/axis_min)^exponent (n_train, batch_size, lr, params; with fid_n_exponent for N);
    `fid_train_gap` writes fid_train = fid·(1 + gap) against the N training images; `fid_bump`
    adds a bump of that height (× the scale) around 0.5·τ: a fall, a rise and a fall again;
    `tau_gen_alpha` makes τ_gen ∝ (N/N_min)^tau_gen_alpha.
    """
    rng = np.random.default_rng(seed)
    fs = pafs.LocalFileSystem()
    grid = {"data.n_train": list(n), "train.batch_size": list(b), "train.lr": list(lr)}
    space = {
        "sweep": {"name": root.name, "mode": mode},
        "grid": grid,
        "data": {"dataset": "digits", "n_test": 256},
        "train": {"max_steps": budget or 100000},
        "eval": {"save_samples": 8 if samples else 0},
        "stop": {"mem_frac_threshold": THRESHOLD, "patience": PATIENCE},
    }
    meta = results.provenance(json.dumps(space, sort_keys=True))
    base = apply_overrides(ExperimentConfig(), {"data.n_test": 256, "stop.patience": PATIENCE, "train.max_steps": budget or 100000})
    digits = None
    if samples:
        from raydiff.data import load

        digits = load(base.data.__class__(dataset="digits", n_train=max(n), n_test=256)).x_train.numpy()
    points = [(nn, bb, ll) for nn in n for bb in b for ll in lr]
    if mode == "one_factor":  # the first values are the default point; vary one axis at a time
        points = [(n[0], b[0], lr[0])] + [(v, b[0], lr[0]) for v in n[1:]]
        points += [(n[0], v, lr[0]) for v in b[1:]] + [(n[0], b[0], v) for v in lr[1:]]
    points = [(nn, bb, ll, k, pp) for nn, bb, ll in points for pp in p for k in range(seeds)]
    if definitions:
        base = apply_overrides(base, {"eval.memorization_space": "both", "eval.embedding": "sscd.pt"})
    if headline:  # the space's headline definition (stop.headline), in every trial's config and the space
        base = apply_overrides(base, {"stop.headline": headline})
        space["stop"]["headline"] = headline
    truth, trial_rows = {}, []
    n_min, b_min, lr_min = min(n), min(b), min(lr)
    metrics_schema = _schema(results.METRICS_SCHEMA, RAW_METRIC_COLUMNS, pa.float64())
    trials_schema = _schema(results.TRIALS_SCHEMA, DEFINITION_TRIAL_COLUMNS, pa.int64())
    stop = StopConfig()
    fx = {"n_train": fid_n_exponent, **(fid_exponents or {})}
    for i, (nn, bb, ll, sd, pp) in enumerate(points):
        tid = f"{root.name}_{i:05d}"
        log_p = delta * math.log(pp / p[0]) if delta else 0.0
        tau = math.exp(log_c + alpha * math.log(nn) + beta * math.log(bb) + gamma * math.log(ll) + log_p + rng.normal(0, sigma))
        truth[tid] = tau
        cap = budget or 10**9
        steps = eval_steps(max(int(tau * 3), 200))
        steps = steps[steps <= cap]
        m = mem_curve(steps.astype(float), tau, width)
        above = np.nonzero(m >= THRESHOLD)[0]
        onset_idx = above[0] if len(above) and above[0] + PATIENCE - 1 < len(steps) else None
        status = "memorized" if onset_idx is not None else "budget"
        end = onset_idx + PATIENCE + continue_evals if onset_idx is not None else len(steps)
        if i < diverged:
            status, end = "diverged", max(3, end // 2)
        is_running = i >= len(points) - running
        if is_running:
            end = max(2, end // 2)
        steps, m = steps[:end], m[:end]
        train_loss = 0.08 * (steps / 10.0) ** -0.15
        test_loss = train_loss * (1.0 + 1.0 * m)  # the held-out loss departs as memorization sets in
        at = {"n_train": nn / n_min, "batch_size": bb / b_min, "lr": ll / lr_min, "params": pp / min(p)}
        scale = math.prod(at[a] ** e for a, e in fx.items())
        tg = None
        if tau_gen is not None:
            tg = tau_gen * (nn / n_min) ** tau_gen_alpha * math.exp(rng.normal(0, gen_sigma))
            if gen_truth is not None:
                gen_truth[tid] = tg

        def fid_at(st, mm, tau=tau, tg=tg, scale=scale):
            bump = fid_bump * np.exp(-(np.log(st / (0.5 * tau)) ** 2) / (2 * 0.15**2))
            if tg is not None:
                return scale * (20.0 * (1.0 + 10.0 * np.log(st / tg) ** 2) + 60.0 * mm + bump)
            return scale * (15.0 + 300.0 * np.exp(-st / (0.25 * tau)) + 60.0 * mm + bump)

        fid = fid_at(steps.astype(float), m)
        feat = mem_curve(steps.astype(float), tau * FEATURES_AT[i % 2], width) if definitions else None
        raw = mem_curve(steps.astype(float), tau * RAW_EARLIER, width) if definitions else None
        train_x = digits[:nn] if digits is not None else None
        rows = []
        for j, (s, mf) in enumerate(zip(steps, m)):
            row = {
                "trial_id": tid, "step": int(s), "images_seen": int(s) * bb, "wall_s": float(s) * 0.01,
                "train_loss": float(train_loss[j]), "test_loss": float(test_loss[j]), "mem_frac": float(mf),
                "mem_frac_lo": float(max(0.0, mf - 0.05)), "mem_frac_hi": float(min(1.0, mf + 0.05)),
                "fid": float(fid[j]) if fid_every and j % fid_every == 0 else None, "loss": float(train_loss[j]),
            }  # fmt: skip
            if row["fid"] is not None and fid_extractor:
                row["fid_extractor"] = fid_extractor
            if row["fid"] is not None and fid_train_gap is not None:
                row.update(fid_train=row["fid"] * (1.0 + fid_train_gap), fid_reference=f"test=images:test[256];train=images:train[{nn}]")
            if definitions:
                row.update(mem_frac_features=float(feat[j]), mem_frac_raw=float(raw[j]),
                           mem_frac_raw_lo=float(max(0.0, raw[j] - 0.05)), mem_frac_raw_hi=float(min(1.0, raw[j] + 0.05)))  # fmt: skip
            if train_x is not None and (j % 8 == 0 or j >= end - PATIENCE - 1):
                x, idx, ratio = _samples(train_x, float(mf), 8, rng)
                row.update(samples=_npy(x), samples_nn_index=idx, samples_nn_ratio=ratio)
            rows.append(row)
        if fidelity_every_steps:  # fidelity-only evaluations between the memorization ones
            taken = {int(v) for v in steps}
            k, fsteps = 0, []
            while (st := int(round(fidelity_every_steps * 1.5**k))) <= steps[-1]:
                while st in taken:  # a step of its own (the fine evaluation grid here is no real schedule)
                    st += 1
                taken.add(st)
                fsteps.append(st)
                k += 1
            for st in fsteps:
                v = float(fid_at(float(st), mem_curve(np.array([float(st)]), tau, width)[0]))
                rows.append({"trial_id": tid, "step": st, "images_seen": st * bb, "wall_s": st * 0.01, "fid": v,
                             "fid_extractor": fid_extractor})  # fmt: skip
            rows.sort(key=lambda r: r["step"])
        results.write_atomic(
            results.table(rows, metrics_schema, meta), fs, str(root / results.METRICS_DIR / f"{tid}.parquet")
        )
        if is_running:
            continue
        cfg = apply_overrides(base, {"data.n_train": nn, "train.batch_size": bb, "train.lr": ll, "train.seed": sd,
                                     **({"model.base_channels": 8 * (1 + p.index(pp))} if len(p) > 1 else {})})  # fmt: skip
        onset = int(steps[onset_idx]) if status == "memorized" else None
        extra = {}
        if definitions:
            st = steps.tolist()
            extra = {
                "tau_mem_pixel_step": mem_onset(st, m.tolist(), THRESHOLD, PATIENCE),
                "tau_mem_features_step": mem_onset(st, feat.tolist(), THRESHOLD, PATIENCE),
                "tau_mem_pixel_raw_step": mem_onset(st, raw.tolist(), THRESHOLD, PATIENCE),
                "tau_mem_loss_step": loss_divergence_onset(st, train_loss.tolist(), test_loss.tolist(), stop.loss_gap, stop.loss_window),
            }  # fmt: skip
        trial_rows.append({**extra,
            "trial_id": tid, "status": status, "stop_reason": f"synthetic {status}", "dataset": "digits",
            "n_train": nn, "model": "digits-tiny" if len(p) == 1 else f"p{pp}", "params": pp, "batch_size": bb, "lr": ll, "objective": "ddpm",
            "seed": sd, "steps_done": int(steps[-1]), "tau_mem_step": onset,
            "tau_mem_images": None if onset is None else onset * bb,
            "tau_mem_normalized": normalized_time(onset, nn, bb, ll, {"n_train": n_min, "batch_size": b_min, "lr": lr_min}),
            "budget_steps": budget or 100000, "config": json.dumps(cfg.to_dict(), sort_keys=True),
        })  # fmt: skip
    if not no_trials_file:
        results.write_atomic(results.table(trial_rows, trials_schema, meta), fs, str(root / results.TRIALS_FILE))
    (root / results.SPACE_FILE).write_text(json.dumps(space))
    return truth
