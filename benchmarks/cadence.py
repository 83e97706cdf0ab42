"""4b. The paper spaces' cadence against a dense one: is τ_mem still where a dense reference puts it?

Issue 21's target: with each paper space's own evaluation and stop settings (geometric cadence
and ratio, refinement snapshots and refine_fraction, the sequential test's first round,
memorization samples at fewer sampler steps than the figures', the stop rule and its patience,
loss_gap / loss_window, the ratio test on floats or pixels, the space's objective and sampler), τ_mem
lies within 5% of a dense-cadence reference's, on CIFAR-size data on this CPU.

Each space's evaluation and stop settings are kept; its size is not: a small U-Net (digits-tiny
layout at 8 channels, the space's block style) on 32×32×3 Gaussian-mixture images the benchmark
writes (`gmm`: no download; 64 smooth modes, 8 images trained on, each its mode plus a little
pixel noise), 128 memorization samples, the first evaluation at about the fraction of τ it has at
paper scale, sampler steps scaled down (Marion & Wu's 250 → 50, and their test's 50 → 10: the same
fifth), one thread, and no figures (FID and SWD are off the loop in both spaces). SSCD cannot be
fetched here: for Marion & Wu the section measures their headline, the loss divergence, alone
(`stop.on: [loss]`; the memorization test's settings do not bear on it). For Bonnaire et al. it
measures their f_mem, the pixel ratio test on floats, with their cadence, refinement and
sequential test, but trained by Marion & Wu's CPU recipe here, class-conditional: their DDPM
(SGD, ε-prediction, DDIM without clamp) does not memorize at this size within a few thousand steps
(after 1,500 steps its samples are as far from the nearest training image as from the second:
ratio ≈ 0.99), nor did that recipe unconditionally by 2,500 steps; with each of the 8 images its
own mode's label it does, near step 1,300. What is measured is where their evaluation settings
put an onset against a dense cadence, not their model's onset.

The dense reference trains the same model again with an evaluation every K steps (uniform, K ≈
1-2% of τ), all samples at once (no sequential test), no refinement, the full sampler steps for
the memorization test and the full probes. Evaluations draw no training randomness (they sample
from their own generators), so both runs train the very same weights step for step: the
benchmark checks it, comparing the evaluated weights of the two runs bit for bit at every step
both evaluated. Each onset is then read from the two runs' reports (`tau_mem_<definition>_step`)
and the space's is judged against the dense one's: met when |τ_space − τ_dense| ≤ 5% of τ_dense.

Probes: the dense run also measures the loss probes at reduced sizes on the same weights (4, 3 and 2
noise levels instead of the 8 the space shipped with on 2026-12-06 (it now measures 3); 40% of the
probe images, which is what a cap of 2,048 of the space's 5,120 does at paper scale) and the loss
onset each gives, side by side.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import Section, config, fmt
from raydiff.config import apply_overrides, load_search_space, packaged_search_space
from raydiff.data import load, train_mean
from raydiff.diffusion import build_process
from raydiff.evaluation import Probe
from raydiff.metrics.fid import weights_digest
from raydiff.metrics.onset import loss_divergence_onset
from raydiff.models import build_unet
from raydiff.trial import train

TOLERANCE = 0.05  # issue 21: within 5% of the dense reference


def _cpu_size(space: str, quick: bool) -> dict[str, Any]:
    """What changes from the space as shipped: its size (model, data, samples, the cadence's scale,
    the sampler's steps) and, for Marion & Wu, the EMA and learning rate that let a CPU-size model
    memorize within a thousand steps; every evaluation and stop setting is the space's own."""
    common = {
        "data.dataset": "gmm", "data.image_size": 8 if quick else 32, "data.channels": 3, "data.n_train": 8,
        # 64 smooth modes, 8 of them trained on, each image its mode plus a little pixel noise
        "data.n_test": 32 if quick else 256, "data.download": False, "data.gmm_components": 64, "data.gmm_std": 0.05,
        "data.crop": "none",
        "model.preset": "digits-tiny", "model.base_channels": 8,
        "eval.num_samples": 16 if quick else 128, "eval.sample_batch": 128, "eval.fid_every": 0,
        "eval.fid_every_steps": None, "eval.figures": "loop", "eval.save_samples": 0,
        "train.budget_scaling": "fixed", "train.max_steps": 60 if quick else 4000,
    }  # fmt: skip
    if space == "marion":
        return {
            **common,
            # their first evaluation at 16,384 images = 1,024 steps of an onset near 20k: ~5% of τ
            # (τ ≈ 600 steps here); 250 Euler steps for samples, 50 for the memorization test: 1/5
            "eval.every_images": None, "eval.every_steps": 10 if quick else 30,
            "diffusion.sample_steps": 10 if quick else 50, "eval.mem_sample_steps": 2 if quick else 10,
            # the loss divergence, their headline, alone: SSCD (their `features` test) cannot be
            # fetched here, and the memorization tests' settings do not bear on the loss onset
            "eval.measures": ("loss",), "stop.on": ("loss",), "stop.headline": "loss",
            # Adam at 1e-3 (1e-4 in the paper) and an EMA half-life of 4,000 images (250 steps; the
            # paper's 0.9999 is ~7k steps, a third of its τ): a CPU-size model's onset in ~600 steps
            "train.lr": 1.0e-3, "train.ema_halflife_images": 4000.0,
        }  # fmt: skip
    return {
        **common, "data.hf_name": None, "data.hf_config": None, "data.hf_revision": None, "data.split": "train",
        # their first evaluation at 250 steps of an onset ≥ 10k: ≤ 2.5% of τ; DDIM for both
        # memorization samples and figures (their 99 calls here 10: the space and the reference alike)
        "eval.every_steps": 5 if quick else 30, "diffusion.sample_steps": 4 if quick else 10,
        "eval.mem_sample_steps": 4 if quick else 10, "eval.measures": ("pixel",),
        # their DDPM (ε-prediction, DDIM η = 0, no clamp; SGD, no EMA, B = n) does not memorize at this
        # size within a few thousand steps (a 1,500-step model's samples lie as far from the nearest
        # training image as from the second: ratio ≈ 0.99), nor does a rectified flow without EMA
        # at B = 8 within 4,000: their evaluation and stop settings are measured on Marion's CPU
        # recipe (rectified flow, Adam at 1e-3, B = 16, EMA half-life 4,000 images, data in [-1, 1])
        "diffusion.objective": "flow", "diffusion.sampler": "euler", "diffusion.clip_x0": True, "diffusion.step_grid": "rounded",
        "diffusion.t_min": 0, "train.optimizer": "adam", "train.lr": 1.0e-3, "train.batch_rule": "fixed", "train.batch_size": 16,
        "train.ema_halflife_images": 4000.0, "data.normalization": "symmetric", "train.max_steps": 60 if quick else 2500,
        "model.dropout": 0.0,
        # and class-conditional (each image its own mode's label): unconditionally that recipe had
        # not reached f_mem ≥ 0.1 by 2,500 steps; conditionally it does near 1,300
        "data.class_conditional": True,
    }  # fmt: skip


def space_config(space: str, quick: bool):
    name = {"marion": "marion2026_cifar10", "bonnaire": "bonnaire2025"}[space]
    return config(load_search_space(packaged_search_space(name)), _cpu_size(space, quick))


def dense_config(cfg, k: int):
    """The reference: every k steps, all samples at once, no refinement, the full sampler steps."""
    return apply_overrides(cfg, {
        "eval.every_steps": k, "eval.every_images": None, "eval.cadence": "uniform", "eval.sequential_round": None,
        "eval.refine_snapshots": 0, "eval.mem_sample_steps": None, "eval.approach_fraction": None, "stop.continue_for": 0.0,
    })  # fmt: skip


class ReducedProbes:
    """The loss probes at other sizes, measured on the weights a run reports (same process, same
    seeds as the evaluator's): {label: (noise levels, fraction of the probe images)}."""

    def __init__(self, cfg, variants: dict[str, tuple[int, float]]):
        data = load(cfg.data)
        self.process = build_process(cfg.diffusion)
        self.net = build_unet(cfg.model, data.shape[0], data.shape[1], data.num_classes)
        self.net.eval()
        norm = (cfg.data.normalization, train_mean(cfg.data.normalization, data.x_train))
        conditional = data.num_classes > 0
        full = min(cfg.eval.probe_images, len(data.x_train), len(data.x_test))
        self.probes = {}
        for label, (levels, frac) in variants.items():
            p = max(1, round(full * frac))
            times = self.process.probe_times(levels)
            seed = cfg.eval.sample_seed + 1
            self.probes[label] = tuple(
                Probe.build(x[:p], y[:p] if conditional else None, times, seed, torch.device("cpu"), norm)
                for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test))
            )
        self.rows: dict[str, list[tuple[int, float, float]]] = {k: [] for k in variants}

    def measure(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(weights)
        for label, (tr, te) in self.probes.items():
            self.rows[label].append((step, tr.loss(self.process, self.net), te.loss(self.process, self.net)))

    def onset(self, label: str, stop) -> int | None:
        steps, tr, te = zip(*self.rows[label]) if self.rows[label] else ((), (), ())
        return loss_divergence_onset(steps, tr, te, stop.loss_gap, stop.loss_window)


def run_trial(cfg, probes: ReducedProbes | None = None, until: int | None = None) -> dict[str, Any]:
    """train() until the stop rule's τ has fired (each onset is fixed once found: later evaluations
    cannot move it), the budget, or step `until` (with `probes`: to `until`); the reports, a digest of
    the evaluated weights per step."""
    reports: list[dict] = []
    digests: dict[int, str] = {}
    t0 = time.perf_counter()

    def report(m, ckpt) -> bool:
        reports.append(m)
        if ckpt is None:  # a refinement report: no weights, no decision
            return False
        state = ckpt()
        w = state["ema"] if state["ema"] is not None else state["net"]
        digests[m["step"]] = weights_digest(w)
        if probes is not None:
            probes.measure(m["step"], w)
        if until is not None and m["step"] >= until:
            return True
        # with probes to read, on to `until`: their onsets may come after the reported one's
        return probes is None and (m.get("tau_mem_step") is not None or bool(m.get("stop_status")))

    train(cfg, report)
    return {"reports": reports, "digests": digests, "seconds": time.perf_counter() - t0}


def _tau(run: dict, definition: str) -> int | None:
    return run["reports"][-1].get(f"tau_mem_{definition}_step")


def _evals(run: dict) -> tuple[int, int]:
    """(evaluations, of which refinement-only), up to the run's end."""
    rs = run["reports"]
    return len(rs), sum(1 for r in rs if r.get("refined"))


def _rel(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None else (a - b) / b


SPACES = (  # (space, its onset definition here, the dense reference's K: every K steps, ~1.5% of τ)
    ("marion", "loss", 5),
    ("bonnaire", "pixel", 20),
)
PROBES = {  # the loss probes' variants on the dense run's weights: (noise levels, share of the probe images)
    "8 levels, all images (as shipped 2026-12-06)": (8, 1.0), "4 levels, all images": (4, 1.0),
    "3 levels, all images": (3, 1.0), "2 levels, all images": (2, 1.0),
    "8 levels, 40% of the images": (8, 0.4), "4 levels, 40% of the images": (4, 0.4),
}  # fmt: skip


def run(quick: bool) -> Section:
    torch.set_num_threads(1)
    rows, data, parts, rels, same_all = [], {}, [], [], True
    probe_rows: list[str] = []
    for space, d, k in SPACES:
        cfg = space_config(space, quick)
        k = 5 if quick else k
        dense = dense_config(cfg, k)
        probes = ReducedProbes(dense, PROBES) if d == "loss" else None
        ours = run_trial(cfg)
        print(f"  {space}: the space's settings, {ours['seconds']:.0f} s, τ ({d}) {_tau(ours, d)}, "
              f"{len(ours['reports'])} reports to step {ours['reports'][-1]['step']}", flush=True)
        # the reference need not run far past the space's onset: one that has not fired by 1.5 τ is 50% off
        t_own = _tau(ours, d)
        ref = run_trial(dense, probes, None if t_own is None else int(1.5 * t_own) + k * (cfg.stop.patience + cfg.stop.loss_window))
        print(f"  {space}: dense every {k} steps, {ref['seconds']:.0f} s, τ ({d}) {_tau(ref, d)}, "
              f"{len(ref['reports'])} reports to step {ref['reports'][-1]['step']}", flush=True)
        shared = sorted(set(ours["digests"]) & set(ref["digests"]))
        same = bool(shared) and all(ours["digests"][s] == ref["digests"][s] for s in shared)
        same_all &= same
        t_s, t_d = _tau(ours, d), _tau(ref, d)
        rel = _rel(t_s, t_d)
        rels.append(float("inf") if rel is None else abs(rel))
        ev, ev_refined = _evals(ours)
        shown = "–" if rel is None else f"{rel:+.1%}"
        # the space's own resolution at its onset: the gap from the evaluation (or refinement) before τ to τ
        before = max((r["step"] for r in ours["reports"] if t_s is not None and r["step"] < t_s), default=0)
        gap = None if t_s is None else (t_s - before) / t_s
        rows.append([space, d, t_s, t_d, k, shown, "yes" if rel is not None and abs(rel) <= TOLERANCE else "no",
                     "–" if gap is None else f"{gap:.0%}", f"{ev} ({ev_refined} refinement)", len(ref["reports"]),
                     f"{ours['seconds']:.0f} / {ref['seconds']:.0f}"])  # fmt: skip
        parts.append(f"{space} ({d}): τ {fmt(t_s)} vs dense {fmt(t_d)} ({shown})")
        data[space] = {"definition": d, "tau_space": t_s, "tau_dense": t_d, "k": k, "rel": rel, "shared_steps": shared,
                       "identical_weights": same, "seconds": (ours["seconds"], ref["seconds"]), "space_gap": gap,
                       "dense_last_step": ref["reports"][-1]["step"],
                       "space_steps": [r["step"] for r in ours["reports"]]}  # fmt: skip
        if probes is not None:
            taus = {label: probes.onset(label, dense.stop) for label in PROBES}
            full = taus[next(iter(PROBES))]
            data["probes"] = {"tau": taus, "reported": t_d, "p_images": {lb: len(p[0].x0) // PROBES[lb][0] for lb, p in probes.probes.items()}}
            probe_rows = [f"{label} ({data['probes']['p_images'][label]} train + as many test images): loss τ {fmt(t)}"
                          for label, t in taus.items()]  # fmt: skip
            parts.append(f"probes, loss τ: 8 levels {fmt(full)}, 4 {fmt(taus['4 levels, all images'])}, 3 (shipped) "
                         f"{fmt(taus['3 levels, all images'])}, 2 {fmt(taus['2 levels, all images'])}; 8 levels on 40% of "
                         f"the images {fmt(taus['8 levels, 40% of the images'])}")  # fmt: skip
    worst = max(rels)
    data["worst"] = worst
    notes = [
        "same weights: " + "; ".join(
            f"{s}: the evaluated weights of its two runs are {'identical, bit for bit,' if data[s]['identical_weights'] else 'NOT identical'} "
            f"at the {len(data[s]['shared_steps'])} steps both evaluated" for s, _, _ in SPACES),
        "the dense reference's own resolution is K steps (an onset lies in (τ_dense − K, τ_dense]): "
        + ", ".join(f"{s} K = {data[s]['k']} = {_share(data[s]['k'], data[s]['tau_dense'])} of τ_dense" for s, _, _ in SPACES),
        "marion: the loss divergence alone (stop.on [loss]): SSCD, their `features` test, cannot be fetched here, and "
        "the memorization test's settings (sequential round, refinement, 50 of 250 sampler steps) do not bear on the "
        "loss onset; they are exercised in bonnaire's run (sequential round 64, 7 refinement snapshots). "
        f"The space's evaluations: {', '.join(map(str, data['marion']['space_steps'][:12]))}…",
        "bonnaire: their f_mem (the pixel ratio test on floats, stop.on [pixel]) with their cadence (every 250 steps → "
        "30 here, ×1.25), 7 refinement snapshots and sequential round 64, trained by marion's CPU recipe (rectified flow, "
        "Adam 1e-3, B = 16, EMA half-life 4,000 images, data in [-1, 1]), class-conditional: their DDPM (SGD, no EMA, "
        "B = n, DDIM without clamp) does not memorize at this size within a few thousand steps, nor did that recipe "
        "unconditionally by 2,500",
        "size: digits-tiny layout at 8 channels, 32×32×3 gmm (64 modes, std 0.05), N = 8, 128 memorization samples, "
        "one thread; sampler steps: marion 50 (their test 10, the space's fifth), bonnaire 10 for both",
        "loss probes on the dense run's weights (the evaluator's seeds and noise, the onset rule with stop.loss_gap "
        f"and loss_window): {'; '.join(probe_rows)} (–: no onset by the dense run's last evaluation, step "
        f"{data['marion']['dense_last_step']})",
        "the space's gap before τ: the distance from the last point evaluated before τ (a regular evaluation or a "
        "refinement of its bracket: both onsets are refined) to τ; a space's τ is off by up to that gap",
    ]  # fmt: skip
    return Section(
        "4b", "τ_mem at the paper spaces' settings against a dense cadence (CIFAR-size, CPU)",
        f"within {TOLERANCE:.0%} of a dense cadence (issue 21)", "; ".join(parts),
        None if quick else (worst <= TOLERANCE and same_all),
        ["space", "onset", "τ, space's settings", "τ, dense", "dense: every K steps", "Δ / τ_dense", "within 5%",
         "space's gap before τ, / τ", "space's evaluations", "dense evaluations", "seconds (space / dense)"], rows, notes=notes, data=data,
    )  # fmt: skip


def _share(k: int, tau: int | None) -> str:
    return "–" if not tau else f"{k / tau:.1%}"
