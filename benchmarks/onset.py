"""4. Onset resolution per evaluation.

A dense-cadence reference run per N evaluates the memorization test every d ≈ τ/100 steps; its
onset (the one rule, `mem_onset`, patience 2) is the reference τ. Training does not depend on the
cadence (evaluation draws from its own generators), so each cadence policy is replayed exactly on
that curve — the same schedule (`eval_schedule`), snapshot steps (`refine_steps`), crossing test
(`crossed`), binary search (`bisect_crossing`) and onset rule as `train()` — with each evaluation
read off the nearest dense point. One real run of the packaged default checks the replay.
"""

from __future__ import annotations

import bisect
import time

import torch

from benchmarks.common import Section, config, default_space, smoke_space
from raydiff.metrics.onset import mem_onset
from raydiff.trial import bisect_crossing, crossed, eval_schedule, refine_steps, train
from raydiff.tune.stopper import decide

Curve = tuple[list[int], list[float]]  # dense steps, mem_frac


def dense_reference(cfg, d: int, beyond: float) -> Curve:
    dense = config_dense(cfg, d)
    steps: list[int] = []
    fracs: list[float] = []
    thr, pat = cfg.stop.mem_frac_threshold, cfg.stop.patience

    def report(m, _ckpt) -> bool:
        steps.append(m["step"])
        fracs.append(m["mem_frac"])
        tau = mem_onset(steps, fracs, thr, pat)
        return tau is not None and m["step"] >= beyond * tau

    train(dense, report)
    return steps, fracs


def config_dense(cfg, d: int):
    from raydiff.config import apply_overrides

    return apply_overrides(cfg, {
        "eval.every_steps": d, "eval.every_images": None, "eval.cadence": "uniform", "eval.refine_snapshots": 0,
        "eval.fid_every": 0, "eval.probe_images": 1, "eval.probe_noise_levels": 1, "eval.save_samples": 0,
    })  # fmt: skip


def replay(curve: Curve, cfg) -> dict:
    """What train() under cfg's cadence would measure and decide on this curve."""
    steps, fracs = curve

    def at(s: int) -> float:
        i = bisect.bisect_left(steps, s)
        if i == len(steps):
            return fracs[-1]  # past the reference run's end: mem_frac stays where it ended
        if i > 0 and s - steps[i - 1] < steps[i] - s:
            i -= 1
        return fracs[i]

    thr, pat, k = cfg.stop.mem_frac_threshold, cfg.stop.patience, cfg.eval.refine_snapshots
    history: list[dict] = []
    full = mem = 0
    prev = 0
    for s in eval_schedule(cfg, cfg.budget_steps):
        v = at(s)
        if k and crossed(history, v, thr):
            snaps = refine_steps(prev, s, k)
            done: dict[int, float] = {}

            def above(i: int) -> bool:
                done[i] = at(snaps[i])
                return done[i] >= thr

            bisect_crossing(len(snaps), above)
            history += [{"step": snaps[i], "mem_frac": done[i]} for i in sorted(done)]
            mem += len(done)
        history.append({"step": s, "mem_frac": v})
        full += 1
        tau = mem_onset([h["step"] for h in history], [h["mem_frac"] for h in history], thr, pat)
        if tau is not None:
            return {"tau": tau, "full": full, "mem": mem, "stop": s}
        prev = s
    return {"tau": None, "full": full, "mem": mem, "stop": cfg.budget_steps}


def policies(quick: bool) -> dict[str, dict]:
    g = {"eval.cadence": "geometric", "eval.every_images": None}
    u = {"eval.cadence": "uniform", "eval.every_images": None, "eval.refine_snapshots": 0}
    out = {
        **{f"uniform every {k}": {**u, "eval.every_steps": k} for k in ((10, 50) if quick else (25, 50, 100, 200))},
        "geometric 50 ×1.2 (default before)": {**g, "eval.every_steps": 50, "eval.geometric_ratio": 1.2, "eval.refine_snapshots": 0},
        "geometric 50 ×1.2 + 3 snapshots": {**g, "eval.every_steps": 50, "eval.geometric_ratio": 1.2, "eval.refine_snapshots": 3},
        "geometric 50 ×1.5 + 7 snapshots": {**g, "eval.every_steps": 50, "eval.geometric_ratio": 1.5, "eval.refine_snapshots": 7},
        "geometric 100 ×1.5 + 7 snapshots": {**g, "eval.every_steps": 100, "eval.geometric_ratio": 1.5, "eval.refine_snapshots": 7},
        "geometric 100 ×2 + 15 snapshots": {**g, "eval.every_steps": 100, "eval.geometric_ratio": 2.0, "eval.refine_snapshots": 15},
        "packaged default (after)": {},
    }  # fmt: skip
    return out


def run(quick: bool) -> Section:
    torch.set_num_threads(1)
    if quick:
        space, ns, guess = smoke_space(), [8], lambda n: 25 * n
    else:
        space, ns, guess = default_space(), [16, 32, 64], lambda n: 20 * n
    curves: dict[int, Curve] = {}
    refs: dict[int, int] = {}
    d_of: dict[int, int] = {}
    t0 = time.perf_counter()
    for n in ns:
        base = config(space, {"data.n_train": n})
        d_of[n] = max(2, round(guess(n) * (64 / base.train.batch_size) / 100))
        curves[n] = dense_reference(base, d_of[n], beyond=1.6 if not quick else 1.2)
        refs[n] = mem_onset(*curves[n], base.stop.mem_frac_threshold, base.stop.patience)
        print(f"  dense reference N={n}: every {d_of[n]} steps, τ_ref={refs[n]}, "
              f"{len(curves[n][0])} evaluations, {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip

    rows, summary = [], {}
    for name, over in policies(quick).items():
        row: list = [name]
        errs, total = [], 0
        for n in ns:
            r = replay(curves[n], config(space, {"data.n_train": n, **over}))
            err = None if (r["tau"] is None or refs[n] is None) else (r["tau"] - refs[n]) / refs[n]
            errs.append(err)
            total += r["full"] + r["mem"]
            row += [r["tau"], f"{r['full']}+{r['mem']}" if r["mem"] else str(r["full"]), err]
        worst = max((abs(e) for e in errs if e is not None), default=None)
        row += [total, worst]
        rows.append(row)
        summary[name] = {"evals": total, "worst_err": worst}

    # the replay against a real run of the packaged default at the smallest N
    n0 = ns[0]
    real = []
    cfg0 = config(space, {"data.n_train": n0, "eval.fid_every": 0})
    def report(m, _ckpt) -> bool:
        real.append(m)
        return not m.get("refined") and decide(m, cfg0.stop) is not None

    train(cfg0, report)
    real_tau = real[-1]["tau_mem_step"]
    sim = replay(curves[n0], cfg0)
    check = f"real run of the packaged default at N={n0}: τ={real_tau} in {len(real)} evaluations; replay: τ={sim['tau']} in {sim['full'] + sim['mem']}"

    default = summary["packaged default (after)"]
    uniform_ok = [v["evals"] for k, v in summary.items() if k.startswith("uniform") and v["worst_err"] is not None and v["worst_err"] <= 0.05]
    head = (f"packaged default: worst |error| {default['worst_err']:.1%} with {default['evals']} evaluations "
            f"over N={ns}; uniform cadences within 5%: {min(uniform_ok) if uniform_ok else 'none'} evaluations")  # fmt: skip
    cols = ["policy"]
    for n in ns:
        cols += [f"N={n} τ (ref {refs[n]})", "evals", "error"]
    cols += ["Σ evals", "worst |error|"]
    return Section(
        "4", "Onset resolution per evaluation: detected τ_mem vs a dense-cadence reference", "≤ 5% error, far fewer evaluations than uniform",
        head, None if quick else (default["worst_err"] is not None and default["worst_err"] <= 0.05),
        cols, rows,
        notes=[
            f"dense reference every {', '.join(str(d_of[n]) for n in ns)} steps (N = {', '.join(map(str, ns))}) "
            "with the default's memorization test; every policy below is replayed on those curves",
            "evals: regular evaluations + memorization-only refinement evaluations (cheaper: no probes, no FID)",
            "error = (τ − τ_ref)/τ_ref: positive means late. " + check,
        ],
        data={"curves": {n: curves[n] for n in ns}, "refs": refs, "summary": summary, "real_tau": real_tau, "replay_tau": sim["tau"]},
    )  # fmt: skip
