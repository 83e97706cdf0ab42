"""1. Framework tax: `raydiff.trial.train`'s loop against a bare PyTorch loop of the same model.

Both train the embedded default's U-Net on the same data (resident on the device, batches drawn
by index), batch size, optimizer (Adam, foreach), gradient clipping, EMA and DDPM ε-loss. The
raydiff side is timed between two evaluations from what it reports (Δwall_s − eval_s), so the
evaluation is not counted; both sides skip the same number of warm-up steps. A third column, the
bare loop without clipping and EMA, shows what those two features cost (not part of the tax).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Section, alternate, config, default_space, median, smoke_space
from raydiff.data import load, to_model_range
from raydiff.diffusion.ddpm import DDPM
from raydiff.models import build_unet
from raydiff.training.schedule import eval_schedule
from raydiff.trial import train


def busy_rate(rows: list[dict]) -> float:
    """Steps/s between a trial's first regular evaluation and its last, evaluation time taken out
    (Δwall_s − Σ eval_s), from its reports or metrics rows. Regular evaluations only: fidelity-only
    rows measure no mem_frac, refinement rows no test loss."""
    rows = sorted((r for r in rows if r.get("mem_frac") is not None and r.get("test_loss") is not None), key=lambda r: r["step"])
    first, last = rows[0], rows[-1]
    busy = last["wall_s"] - first["wall_s"] - sum(r["eval_s"] or 0.0 for r in rows[1:])
    return (last["step"] - first["step"]) / busy


def raydiff_rate(cfg, warmup: int) -> float:
    """Steps/s of train() between its first evaluation (after `warmup` steps) and its last."""
    reports = []
    train(cfg, lambda m, _ckpt: reports.append(m) and False)
    assert reports[0]["step"] == warmup
    return busy_rate(reports)


def bare_rate(cfg, warmup: int, steps: int, extras: bool) -> float:
    """Steps/s of a plain loop: same model, data, optimizer and loss; clip + EMA if `extras`."""
    data = load(cfg.data)
    c, h, _ = data.shape
    torch.manual_seed(cfg.train.seed)
    net = build_unet(cfg.model, c, h, data.num_classes)
    ema = build_unet(cfg.model, c, h, data.num_classes)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    t = cfg.train
    opt = torch.optim.Adam(net.parameters(), lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps, foreach=True)
    params, ema_params = list(net.parameters()), list(ema.parameters())
    beta = t.ema_beta()
    x = to_model_range(data.x_train)  # [N, C, H, W]
    n, b = x.shape[0], t.batch_size
    d = cfg.diffusion
    abar = DDPM(d.num_timesteps, d.beta_start, d.beta_end).alphas_cumprod.float()  # [T]
    g = torch.Generator().manual_seed(t.seed + 10_007)

    def step() -> None:
        idx = torch.randint(0, n, (b,), generator=g)
        x0 = x[idx]
        ts = torch.randint(0, d.num_timesteps, (b,))
        eps = torch.randn_like(x0)
        a = abar[ts].view(-1, 1, 1, 1)
        loss = (net(a.sqrt() * x0 + (1 - a).sqrt() * eps, ts.float()) - eps).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if extras:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip, foreach=True)
        opt.step()
        if extras:
            torch._foreach_lerp_(ema_params, params, 1.0 - beta)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def run(quick: bool) -> Section:
    if quick:
        space, n, reps = smoke_space(), 8, 2
        over = {"train.max_steps": 15, "eval.every_steps": 5, "eval.cadence": "uniform"}
    else:  # the default's own cadence (every 100 steps, gaps ×1.5): evaluations at 100 … 675 and 812
        space, n, reps = default_space(), 64, 3
        over = {"train.max_steps": 812}
    # the timed block runs from the first evaluation to the last (evaluation time taken out), with
    # the default's refinement snapshots on: the loop as a sweep runs it
    cfg = config(space, {"data.n_train": n, "eval.fid_every": 0, "eval.fid_every_steps": None, **over})
    sched = eval_schedule(cfg, cfg.budget_steps)
    warmup, measured = sched[0], sched[-1] - sched[0]
    res = alternate({
        "raydiff": lambda: raydiff_rate(cfg, warmup),
        "bare": lambda: bare_rate(cfg, warmup, measured, extras=True),
        "bare_min": lambda: bare_rate(cfg, warmup, measured, extras=False),
    }, reps)  # fmt: skip
    r, b, m = (median(res[k]) for k in ("raydiff", "bare", "bare_min"))
    ratio = r / b
    rows = [
        ["raydiff train() loop", r, ratio],
        ["bare PyTorch loop (same clip + EMA)", b, 1.0],
        ["bare PyTorch loop, no clip, no EMA", m, m / b],
    ]
    return Section(
        "1", "Framework tax: raydiff's training loop vs a bare PyTorch loop", "≥ 0.98 (issue 15)",
        f"steps/s ratio raydiff/bare = {ratio:.3f}", None if quick else ratio >= 0.98,
        ["loop", "steps/s (median)", "vs bare"], rows,
        notes=[
            f"{cfg.data.dataset} N={n}, B={cfg.train.batch_size}, model {cfg.model.preset or 'smoke'}, "
            f"{measured} timed steps after {warmup} warm-up steps, {reps} alternated repetitions per side, "
            f"{torch.get_num_threads()} torch thread(s); raydiff's side evaluates on the default's cadence "
            f"(at steps {', '.join(map(str, sched))}) with its {cfg.eval.refine_snapshots} snapshots per gap",
            "raydiff's side is timed between evaluations from its own reports (Δwall_s − eval_s)",
        ],
        data={"raydiff": res["raydiff"], "bare": res["bare"], "bare_min": res["bare_min"], "ratio": ratio},
    )  # fmt: skip
