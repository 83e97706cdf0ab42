"""Figures for `raydiff analyze` and the paper scripts (matplotlib, Agg backend, PNG). Fidelity
(the `fid` column) is labelled for the features it is measured in (fidelity.fidelity_label):
"FID" only for Inception, e.g. "FD (digits classifier)" on the digits.

    tau_vs_<axis>.png     τ_mem against one axis, log-log, the joint fit's line and bootstrap band,
                          points coloured by the other axes, censored trials as lower bounds
    curves_step.png       mem_frac, fidelity and train/test loss against optimizer step, one curve per trial
    curves_normalized.png the same against normalized time T = step·(N_min/N)·(B/B_min)·(η/η_min)
    fidelity_vs_n.png     each trial's fidelity up to its onset against step (left), and its lowest
                          value there, the peak fidelity before onset, against N (right)
    copies_<trial>.png    generated samples beside their nearest training image, before/at/after onset
    axis_<axis>.png       (paper scripts) the one-factor slice along an axis, raw and normalized time
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from raydiff.analysis.fidelity import MIN_BEFORE_ONSET, before_onset, fidelity_label  # noqa: E402
from raydiff.analysis.fits import SYMBOLS, PowerLawFit  # noqa: E402
from raydiff.analysis.scaling import Analysis  # noqa: E402
from raydiff.analysis.trials import TrialStats, fmt_value, normalized_steps, stop_rule  # noqa: E402
from raydiff.config import experiment_from_dict  # noqa: E402
from raydiff.errors import UserError  # noqa: E402
from raydiff.results_folder import reference_minima  # noqa: E402

AXIS_LABELS = {
    "n_train": "training-set size N (images)",
    "batch_size": "batch size B",
    "lr": "learning rate η",
    "params": "parameters P",
}
T_LABEL = "normalized time  T = step·(N_min/N)·(B/B_min)·(η/η_min)"
MAX_LEGEND = 10  # more trials than this: colour by an axis with a colour bar instead of a legend

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 8, "figure.dpi": 100})


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def trial_label(s: TrialStats, axes: list[str]) -> str:
    if s.state == "running" and s.n_train is None:
        return f"{s.trial_id} (running)"
    parts = [f"{SYMBOLS[a]}={fmt_value(a, s.value(a))}" for a in axes if s.value(a) is not None]
    return " ".join(parts) or s.trial_id


def _plain_log(ax, which: str = "y") -> None:
    """A log axis with plain numbers (400, not 4×10²); minor labels only when it spans < 1 decade."""
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    lim = ax.get_ylim() if which == "y" else ax.get_xlim()
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    span = np.ptp(np.log10(np.maximum(lim, 1e-300)))
    if span < 2.5:  # 1-2-5 ticks: a short log axis still gets a few labelled numbers
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(fmt if span < 0.7 else matplotlib.ticker.NullFormatter())


def _colorbar(fig, ax, norm, cmap, axis: str, values) -> None:
    """A colour bar for an axis's values, ticked at the values the sweep used."""
    cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=AXIS_LABELS.get(axis, axis), shrink=0.8)
    vals = sorted({v for v in values if v})
    if 1 < len(vals) <= 8:
        cb.set_ticks(vals)
        cb.set_ticklabels([fmt_value(axis, v) for v in vals])
        cb.ax.minorticks_off()


def _log_ticks(ax, axis: str, values) -> None:
    """Ticks at the sweep's own values: a grid of 4 sizes reads better than 10^2 and 10^3."""
    vals = sorted(set(values))
    if 1 < len(vals) <= 8:
        ax.set_xticks(vals)
        ax.set_xticklabels([fmt_value(axis, v) for v in vals])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


# ----------------------------------------------------------------------------- τ vs axis


def tau_vs_axis(
    an: Analysis, axis: str, path: Path, fit: PowerLawFit | None = None, stats: list[TrialStats] | None = None,
    title: str | None = None,
) -> Path:
    """τ_mem against one axis (log-log): trials as points coloured by the other axes' values,
    censored trials as ▲ at the last step they trained (τ_mem lies above), the fit's line per
    combination of the other axes (one line for a one-axis fit) and its bootstrap band."""
    fit = fit if fit is not None else an.joint
    pts = [s for s in (stats if stats is not None else an.stats) if s.state in ("onset", "censored")]
    others = [a for a in an.axes if a != axis]
    combos = sorted({tuple(s.value(o) for o in others) for s in pts})
    ref = tuple(an.reference.get(o) for o in others)
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    many = len(combos) > MAX_LEGEND
    if many:  # colour by the first other axis on a colour bar
        o = others[0]
        vals = [s.value(o) for s in pts]
        norm = LogNorm(min(vals), max(vals)) if min(vals) > 0 and max(vals) > min(vals) else Normalize()
        cmap = plt.get_cmap("viridis")
        color = {c: cmap(norm(c[0])) for c in combos}
    else:
        cmap = plt.get_cmap("tab10")
        color = {c: cmap(i % 10) for i, c in enumerate(combos)}
    label = {c: ", ".join(f"{SYMBOLS[o]}={fmt_value(o, v)}" for o, v in zip(others, c)) for c in combos}

    xs = np.array([s.value(axis) for s in pts], dtype=float)
    if fit is not None and axis in fit.axes and len(xs):
        grid = np.geomspace(xs.min() / 1.2, xs.max() * 1.2, 80)
        lines = [ref] if many else combos
        line_color = dict(color)
        if fit.axes == [axis]:  # a one-axis fit: one line, whatever the other axes
            lines, line_color = [ref], {ref: "0.25"}
        for c in lines:
            if None in c:
                continue
            vals = {axis: grid, **{o: np.full_like(grid, v) for o, v in zip(others, c)}}
            ax.plot(grid, np.exp(fit.log_predict(vals)), color=line_color.get(c, "k"), lw=1.6, zorder=2)
            if (c == ref or len(lines) <= 3) and fit.n_boot > 0:
                draws = fit.log_predict(vals, draws=True)
                a = (1 - fit.level) / 2
                lo, hi = np.nanquantile(draws, [a, 1 - a], axis=0)
                ax.fill_between(grid, np.exp(lo), np.exp(hi), color=line_color.get(c, "k"), alpha=0.15, lw=0, zorder=1)
    for c in combos:
        on = [s for s in pts if tuple(s.value(o) for o in others) == c and s.state == "onset"]
        ce = [s for s in pts if tuple(s.value(o) for o in others) == c and s.state == "censored"]
        kw = {"color": color[c], "s": 36, "zorder": 3, "edgecolors": "k", "linewidths": 0.5}
        if on:
            ax.scatter([s.value(axis) for s in on], [s.tau for s in on], label=None if many else label[c] or "trials", **kw)
        if ce:
            ax.scatter([s.value(axis) for s in ce], [s.censor_step for s in ce], marker="^", facecolors="white",
                       s=64, zorder=4, edgecolors=color[c], linewidths=1.6)  # fmt: skip
    ax.set_xscale("log")
    _plain_log(ax, "y")
    _log_ticks(ax, axis, xs)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel("τ_mem (optimizer steps)")
    ax.grid(True, which="both", alpha=0.25)
    handles, labels = ax.get_legend_handles_labels()
    if any(s.state == "censored" for s in pts):
        handles.append(Line2D([], [], marker="^", ls="", mfc="none", mec="0.3", label="no onset by this step"))
    if fit is not None and axis in fit.axes:
        at = f" at {label[ref]}" if many and len(fit.axes) > 1 and ref in label else ""
        handles.append(Line2D([], [], color="0.3", lw=1.6, label=f"fit{at}, {int(round(fit.level * 100))}% band"))
    if handles and many:  # below: the colour bar holds the right side
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    elif handles:  # outside, right: points and lines stay visible
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if many:
        _colorbar(fig, ax, norm, cmap, others[0], [s.value(others[0]) for s in pts])
    if title is None and fit is not None and axis in fit.axes:
        c = fit.coef(axis)
        cens = f", {fit.n_censored} censored" if fit.n_censored else ""
        title = (
            f"τ_mem ∝ {SYMBOLS[axis]}^{c.symbol},  {c.symbol} = {c.value:.2f} [{c.lo:.2f}, {c.hi:.2f}]\n"
            f"{'joint ' if len(fit.axes) > 1 else ''}{fit.method} fit on {fit.n_trials} trials{cens}, R² = {fit.r2:.2f}"
        )
    elif title is None:
        note = an.joint_note if fit is None else f"the fit does not vary {SYMBOLS[axis]}"
        title = f"τ_mem against {SYMBOLS[axis]}" + (f"\n({note})" if note else "")
    if title:
        ax.set_title(title)
    ax.margins(0.08)
    return _save(fig, path)


# ------------------------------------------------------------------------------ curves


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    if not pts:
        return np.empty(0), np.empty(0)
    s, v = np.array(pts, dtype=float).T
    return s, v


def _colours(an: Analysis, stats: list[TrialStats], by: str | None = None):
    """(colour per trial, legend?) : a colour per trial when few, else by one axis with a colour bar."""
    axis = by or (an.axes[0] if an.axes else "n_train")
    if len(stats) <= MAX_LEGEND:
        cmap = plt.get_cmap("viridis")
        n = max(1, len(stats) - 1)
        return {s.trial_id: ("0.55" if s.state == "running" and s.n_train is None else cmap(0.9 * i / n))
                for i, s in enumerate(stats)}, None  # fmt: skip
    vals = [s.value(axis) for s in stats if s.value(axis)]
    norm = LogNorm(min(vals), max(vals)) if vals and max(vals) > min(vals) else Normalize(0, 1)
    cmap = plt.get_cmap("viridis")
    col = {s.trial_id: (cmap(norm(s.value(axis))) if s.value(axis) else "0.55") for s in stats}
    return col, (norm, cmap, axis, [s.value(axis) for s in stats])


def curves(an: Analysis, path: Path, x: str = "step", stats: list[TrialStats] | None = None, title: str = "") -> Path | None:
    """mem_frac (with its bootstrap band), fidelity (FID or FD, fidelity_label) and the train/test
    loss probes against step or normalized time, one colour per trial; ● marks each trial's τ_mem."""
    minima = reference_minima(an.sweep)
    stats = [s for s in (stats if stats is not None else an.stats) if an.sweep.evals.get(s.trial_id)]
    if x == "normalized":
        stats = [s for s in stats if normalized_steps(np.ones(1), s, minima) is not None]
    if not stats:
        return None
    colour, bar = _colours(an, stats)
    fig, axs = plt.subplots(3, 1, figsize=(7.2, 9.0), sharex=True)
    threshold = stop_rule(an.sweep.trials[0] if an.sweep.trials else None, an.sweep).mem_frac_threshold
    has_fid = False
    for s in stats:
        rows = an.sweep.evals[s.trial_id]
        c = colour[s.trial_id]

        def tx(steps, s=s):
            return normalized_steps(steps, s, minima) if x == "normalized" else steps

        st, m = _series(rows, "mem_frac")
        if len(st):
            axs[0].plot(tx(st), m, color=c, lw=1.5, label=trial_label(s, an.axes) + (" (running)" if s.state == "running" else ""))
            lo = np.array([r.get("mem_frac_lo") if r.get("mem_frac_lo") is not None else np.nan for r in rows if r.get("mem_frac") is not None])
            hi = np.array([r.get("mem_frac_hi") if r.get("mem_frac_hi") is not None else np.nan for r in rows if r.get("mem_frac") is not None])
            if len(lo) == len(st) and bar is None:  # bands only while they stay legible
                axs[0].fill_between(tx(st), lo, hi, color=c, alpha=0.15, lw=0)
        if s.tau is not None and s.state in ("onset", "running"):
            at = np.interp(s.tau, st, m) if len(st) else threshold
            axs[0].plot(tx(np.array([s.tau])), [at], "o", color=c, mec="k", mew=0.7, ms=6, zorder=4)
        sf, f = _series(rows, "fid")
        if len(sf):
            has_fid = True
            axs[1].plot(tx(sf), f, "-o", color=c, lw=1.2, ms=3)
        for key, ls in (("train_loss", "-"), ("test_loss", "--")):
            sl, v = _series(rows, key)
            if len(sl):
                axs[2].plot(tx(sl), v, ls, color=c, lw=1.2)
    axs[0].axhline(threshold, color="0.4", ls=":", lw=1)
    axs[0].text(0.01, threshold, f" onset threshold {threshold:g}", transform=axs[0].get_yaxis_transform(),
                va="bottom", fontsize=8, color="0.3")  # fmt: skip
    axs[0].set_ylabel("memorized fraction")
    top = max([threshold * 2.5] + [np.nanmax(_series(an.sweep.evals[s.trial_id], "mem_frac")[1], initial=0) for s in stats])
    axs[0].set_ylim(-0.02 * top, min(1.02, 1.1 * top))
    metric = fidelity_label(an.sweep)
    axs[1].set_ylabel(metric)
    if has_fid:
        _plain_log(axs[1])
    else:
        axs[1].text(0.5, 0.5, f"no {metric} recorded", transform=axs[1].transAxes, ha="center", color="0.4")
    axs[2].set_ylabel("denoising loss (probe)")
    _plain_log(axs[2])
    axs[2].legend(handles=[Line2D([], [], color="0.3", ls="-", label="train images"),
                           Line2D([], [], color="0.3", ls="--", label="held-out images")], loc="best")  # fmt: skip
    _plain_log(axs[2], "x")
    axs[2].set_xlabel(T_LABEL if x == "normalized" else "optimizer step")
    for a in axs:
        a.grid(True, which="both", alpha=0.25)
    if bar is None:
        axs[0].legend(loc="upper left", ncol=1 if len(stats) <= 5 else 2)
    else:
        _colorbar(fig, axs, *bar)
    # which τ_mem the ● marks: the space's headline definition (stop.headline)
    marks = f"● τ_mem, headline {an.headline}: {an.definition_label.split(';')[0]}"
    axs[0].set_title(f"{title}\n{marks}" if title else marks, fontsize=9)
    return _save(fig, path)


def axis_slice(an: Analysis, axis: str) -> list[TrialStats]:
    """The trials at the reference value of every axis but `axis` (a one-factor slice)."""
    others = [o for o in an.axes if o != axis]
    return [
        s for s in an.stats
        if s.state != "excluded" and all(s.value(o) is not None and np.isclose(s.value(o), an.reference[o]) for o in others)
    ]  # fmt: skip


def axis_curves(an: Analysis, axis: str, path: Path) -> Path | None:
    """Marion & Wu's view of one axis: mem_frac and the test−train loss gap of the one-factor
    slice, against optimizer step (left) and normalized time (right)."""
    minima = reference_minima(an.sweep)
    stats = [s for s in axis_slice(an, axis) if an.sweep.evals.get(s.trial_id) and s.value(axis)]
    if not stats:
        return None
    vals = sorted({s.value(axis) for s in stats})
    cmap = plt.get_cmap("viridis")
    col = {v: cmap(0.9 * i / max(1, len(vals) - 1)) for i, v in enumerate(vals)}
    fig, axs = plt.subplots(2, 2, figsize=(10, 6.4), sharey="row")
    for s in stats:
        rows = an.sweep.evals[s.trial_id]
        c = col[s.value(axis)]
        st, m = _series(rows, "mem_frac")
        tr = {r["step"]: r.get("train_loss") for r in rows}
        gap = [(r["step"], (r["test_loss"] - tr[r["step"]]) / tr[r["step"]]) for r in rows
               if r.get("test_loss") is not None and tr.get(r["step"])]  # fmt: skip
        sg, g = np.array(gap, dtype=float).T if gap else (np.empty(0), np.empty(0))
        lab = f"{SYMBOLS[axis]}={fmt_value(axis, s.value(axis))}"
        for j, tx in enumerate((lambda v: v, lambda v, s=s: normalized_steps(v, s, minima))):
            if len(st):
                axs[0, j].plot(tx(st), m, color=c, lw=1.5, label=lab if j == 0 else None)
            if len(sg):
                axs[1, j].plot(tx(sg), g, color=c, lw=1.3)
            if s.tau is not None and s.state == "onset":
                axs[0, j].plot(tx(np.array([s.tau])), [np.interp(s.tau, st, m)], "o", color=c, mec="k", ms=5, zorder=4)
    axs[0, 0].set_ylabel("memorized fraction")
    axs[1, 0].set_ylabel("(test − train) / train loss")
    for j, xl in enumerate(("optimizer step", "normalized time T")):
        axs[1, j].set_xlabel(xl)
        for i in range(2):
            _plain_log(axs[i, j], "x")
            axs[i, j].grid(True, which="both", alpha=0.25)
        axs[1, j].axhline(0, color="0.5", lw=0.8)
    axs[0, 0].legend(loc="upper left")
    where = ", ".join(f"{SYMBOLS[o]}={fmt_value(o, an.reference[o])}" for o in an.axes if o != axis)
    fig.suptitle(f"varying {AXIS_LABELS.get(axis, axis)}" + (f" ({where})" if where else "") + ": raw vs normalized time"
                 + f"\nτ_mem, headline {an.headline}: {an.definition_label.split(';')[0]}")
    return _save(fig, path)


# --------------------------------------------------------------------------- fidelity


def fidelity_vs_n(an: Analysis, path: Path) -> Path | None:
    """The paper's other finding. Left: each trial's fidelity (FID or FD, fidelity_label) against
    step, only the evaluations at or before its onset (│ marks the onset, ★ the lowest value),
    one colour per N. Right: that lowest value, the peak fidelity before onset, against N, each
    point with the number of fidelity values it is the lowest of. None without any value."""
    f = an.fidelity
    if f is None or not f.measured:
        return None
    stats = {s.trial_id: s for s in an.stats}
    ns = sorted({p.n_train for p in f.points})
    cmap = plt.get_cmap("viridis")
    col = {n: cmap(0.9 * i / max(1, len(ns) - 1)) for i, n in enumerate(ns)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    labelled: set[int] = set()
    for p in f.points:
        pts = before_onset(an.sweep.evals.get(p.trial_id, []), stats[p.trial_id])
        if not pts:
            continue
        st, v = np.array(pts, dtype=float).T
        c = col[p.n_train]
        left.plot(st, v, "-o", color=c, lw=1.3, ms=3, label=None if p.n_train in labelled else f"N={p.n_train}")
        labelled.add(p.n_train)
        if p.peak_step is not None:
            left.plot([p.peak_step], [p.peak], "*", color=c, mec="k", mew=0.6, ms=11, zorder=4)
        if p.state == "onset" and p.tau is not None:
            left.axvline(p.tau, color=c, ls=":", lw=1.2)
            left.plot([p.tau], [v[-1]], "|", color=c, ms=14, mew=2.2, zorder=4)
    _plain_log(left, "x")
    _plain_log(left)
    left.set_xlabel("optimizer step")
    left.set_ylabel(f"{f.label} (lower is better)")
    handles, _ = left.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", ls=":", marker="|", ms=10, mew=2, label="onset τ_mem"),
                Line2D([], [], color="0.3", ls="", marker="*", mec="k", ms=10, label="lowest before onset")]  # fmt: skip
    left.legend(handles=handles, loc="best", ncol=2 if len(ns) > 5 else 1)
    left.set_title(f"{f.label} up to each trial's onset")

    meas = f.measured
    xs = np.array([p.n_train for p in meas], dtype=float)
    med = [(n, float(np.median([p.peak for p in meas if p.n_train == n]))) for n in sorted({p.n_train for p in meas})]
    if len(med) > 1:
        right.plot(*np.array(med).T, "-", color="0.5", lw=1.2, zorder=1)
    for p in meas:
        cens = p.state == "censored"
        right.scatter([p.n_train], [p.peak], s=48, zorder=3, edgecolors=col[p.n_train] if cens else "k", linewidths=1.4 if cens else 0.6,
                      facecolors="white" if cens else col[p.n_train], marker="^" if cens else "o")  # fmt: skip
        right.annotate(f"{p.count}", (p.n_train, p.peak), textcoords="offset points", xytext=(6, 5), fontsize=8,
                       color="crimson" if p.count < MIN_BEFORE_ONSET else "0.2")  # fmt: skip
    right.set_xscale("log")
    _plain_log(right)
    _log_ticks(right, "n_train", xs)
    right.set_xlabel(AXIS_LABELS["n_train"])
    right.set_ylabel(f"peak {f.label} before onset")
    right.grid(True, which="both", alpha=0.25)
    left.grid(True, which="both", alpha=0.25)
    right.margins(0.12)
    if f.improves is None:
        verdict = f"cannot tell: {f.note}"
    elif f.method == "spearman":
        verdict = f"improves with N: {'yes' if f.improves else 'no'} (Spearman ρ = {f.rho:+.2f})"
    else:
        verdict = f"improves with N: {'yes' if f.improves else 'no'} (2 trials)"
    right.set_title(f"peak (lowest) {f.label} before onset against N\n{verdict}")
    right.text(0.02, 0.02, "number: values at or before the onset"
               + ("\n▲ no onset: over every evaluation" if any(p.state == "censored" for p in meas) else ""),
               transform=right.transAxes, fontsize=8, color="0.3", va="bottom")  # fmt: skip
    if f.where:
        fig.suptitle(f"along N at {f.where}", y=1.02)
    return _save(fig, path)


# ------------------------------------------------------------------------------ copies


def samples_per_evaluation(an: Analysis, path: Path) -> Path | None:
    """Samples the memorization test used at each evaluation against step (│ marks each trial's
    onset): the sequential test's savings, few samples while a model generalizes, the full
    count near onset. None unless some evaluation used fewer samples than another."""
    used = [(s, _series(an.sweep.evals.get(s.trial_id, []), "mem_samples")) for s in an.stats]
    if len({v for _, (_, vs) in used for v in vs}) < 2:
        return None
    col, bar = _colours(an, an.stats)
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for s, (steps, n) in used:
        if len(steps):
            ax.plot(steps, n, "o-", ms=3, lw=1, color=col[s.trial_id], label=None if bar else trial_label(s, an.axes))
            if s.tau is not None:
                ax.axvline(s.tau, color=col[s.trial_id], lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("samples generated for the memorization test")
    total = sum(v.sum() for _, (_, v) in used)
    full = sum(len(v) for _, (_, v) in used) * max(v.max() for _, (_, v) in used if len(v))
    ax.set_title(f"sequential memorization test: {total:,.0f} samples of {full:,.0f} at the full count")
    if bar:
        _colorbar(fig, ax, *bar)
    else:
        ax.legend(fontsize=7)
    return _save(fig, path)


def training_images(trial: dict) -> np.ndarray:
    """The trial's training images, uint8 [N, C, H, W], reloaded from its recorded config."""
    from raydiff.data import load  # torch: imported only when a copies figure is drawn

    if not trial.get("config"):
        raise UserError(f"{trial['trial_id']} has no recorded config to reload its training images from")
    cfg = experiment_from_dict(json.loads(trial["config"]))
    return load(cfg.data).x_train.numpy()


def _show(ax, img: np.ndarray) -> None:
    """uint8 [C, H, W] → an image axis without ticks."""
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def copy_rows(rows: list[dict], tau: float | None) -> list[tuple[str, dict]]:
    """The evaluations to show: the last before the onset, the onset, and the last one after."""
    have = [r for r in rows if r.get("samples") and r.get("samples_nn_index")]
    if not have:
        return []
    if tau is None:
        return [("last evaluation", have[-1])]
    before = [r for r in have if r["step"] < tau]
    at = [r for r in have if r["step"] >= tau]
    out = []
    if before:
        out.append(("before onset", before[-1]))
    if at:
        out.append(("at onset", at[0]))
        if at[-1] is not at[0]:
            out.append(("after onset", at[-1]))
    return out


def copies(an: Analysis, s: TrialStats, train_x: np.ndarray, path: Path, k: int = 8) -> Path | None:
    """Generated samples (top of each pair) beside their nearest training image (below), with
    the distance ratio ‖x−a₁‖/‖x−a₂‖; red marks a copy (ratio under the memorization cut)."""
    from raydiff.evaluation import decode_array  # torch: imported only when a copies figure is drawn

    trial = an.sweep.trial(s.trial_id) or {}
    cut = 1.0 / 3.0
    if trial.get("config"):
        cut = json.loads(trial["config"]).get("eval", {}).get("mem_ratio", cut)
    shown = copy_rows(an.sweep.evals.get(s.trial_id, []), s.tau)
    if not shown:
        return None
    k = min(k, min(len(r["samples_nn_index"]) for _, r in shown))
    fig = plt.figure(figsize=(1.1 * k + 1.4, 2.45 * len(shown) + 0.9))
    subs = np.atleast_1d(fig.subfigures(len(shown), 1, hspace=0.04))
    for sub, (what, r) in zip(subs, shown):
        x = decode_array(r["samples"])  # uint8 [k, C, H, W]
        idx, ratio = r["samples_nn_index"], r.get("samples_nn_ratio") or [None] * len(r["samples_nn_index"])
        axs = sub.subplots(2, k, squeeze=False, gridspec_kw={"hspace": 0.08, "wspace": 0.08})
        for j in range(k):
            top, bot = axs[0, j], axs[1, j]
            _show(top, x[j])
            _show(bot, train_x[idx[j]])
            rj = ratio[j] if ratio[j] is not None else float("nan")
            copy = bool(np.isfinite(rj) and rj < cut)
            bot.set_xlabel(f"{rj:.2f}", color="crimson" if copy else "0.2", fontsize=9, fontweight="bold" if copy else "normal")
            for ax in (top, bot):
                for sp in ax.spines.values():
                    sp.set_edgecolor("crimson" if copy else "0.75")
                    sp.set_linewidth(2.2 if copy else 0.6)
        mf = r.get("mem_frac")
        n_copy = sum(1 for v in ratio[:k] if v is not None and np.isfinite(v) and v < cut)
        sub.suptitle(
            f"{what}: step {r['step']}" + (f", mem_frac {mf:.2f}" if mf is not None else "") + f"  ({n_copy}/{k} shown are copies)",
            fontsize=10, x=0.02, ha="left",
        )  # fmt: skip
        axs[0, 0].set_ylabel("generated", fontsize=9)
        axs[1, 0].set_ylabel("nearest\ntraining", fontsize=9)
    label = trial_label(s, an.axes) or s.trial_id
    fig.suptitle(
        f"{s.trial_id} ({label}): each sample above its nearest training image, number ‖x − a₁‖/‖x − a₂‖,\n"
        f"red = copy (< {cut:.2g}); a column keeps the same initial noise at every evaluation",
        fontsize=10, y=1.0 + 0.3 / (2.45 * len(shown) + 0.9),
    )  # fmt: skip
    return _save(fig, path)


def pick_copy_trials(an: Analysis) -> list[TrialStats]:
    """Default trials for the copies figure: the smallest- and largest-N trials with an onset and
    stored samples, on the reference slice when there is one."""
    def has_samples(s):
        return any(r.get("samples") for r in an.sweep.evals.get(s.trial_id, []))

    cand = [s for s in an.stats if s.state == "onset" and has_samples(s)]
    on_slice = [s for s in axis_slice(an, "n_train") if s in cand] if "n_train" in an.axes else []
    cand = on_slice or cand
    if not cand:
        return []
    cand = sorted(cand, key=lambda s: (s.n_train or 0, s.trial_id))
    return [cand[0]] if len(cand) == 1 else [cand[0], cand[-1]]


# ------------------------------------------------------------------------------- all


def standard_figures(an: Analysis, out: Path, copies: list[str] | None = None) -> tuple[list[tuple[str, Path]], list[str]]:
    """Every figure `raydiff analyze` writes: (caption, path) pairs, and notes on what was skipped."""
    figs: list[tuple[str, Path]] = []
    notes: list[str] = []
    axes = sorted(an.axes, key=lambda a: a != "n_train")  # τ vs N first
    for a in axes:
        p = tau_vs_axis(an, a, out / f"tau_vs_{a}.png")
        figs.append((f"τ_mem against {AXIS_LABELS[a]} (log-log) with the joint fit and its bootstrap band", p))
    if not axes and an.by_state("onset"):
        notes.append("no τ_mem figure: the trials vary no axis")
    metric = fidelity_label(an.sweep)
    for x, name, cap in (
        ("step", "curves_step.png", f"memorized fraction, {metric} and train/test loss against optimizer step"),
        ("normalized", "curves_normalized.png", "the same against normalized time (tau_mem_normalized units)"),
    ):
        p = curves(an, out / name, x=x)
        if p is not None:
            figs.append((cap, p))
    p = fidelity_vs_n(an, out / "fidelity_vs_n.png")  # none without fidelity values: the report text says so
    if p is not None:
        figs.append((f"before memorization: each trial's {metric} up to its onset (left) and its peak (lowest) {metric}"
                     " before onset against N, numbered with the values it is taken over (right)", p))  # fmt: skip
    p = samples_per_evaluation(an, out / "samples_per_evaluation.png")
    if p is not None:
        figs.append(("samples the memorization test used at each evaluation (the sequential test, eval.sequential_round)", p))
    notes += copy_figures(an, out, copies, figs)
    return figs, notes


def copy_figures(an: Analysis, out: Path, ids: list[str] | None, figs: list) -> list[str]:
    notes = []
    if ids:
        known = {s.trial_id: s for s in an.stats}
        missing = [i for i in ids if i not in known]
        if missing:
            raise UserError(f"--copies: no trial {', '.join(missing)} in this sweep (trials: {', '.join(known)})")
        chosen = [known[i] for i in ids]
    else:
        chosen = pick_copy_trials(an)
        if not chosen and an.sweep.evals:
            notes.append("no copies figure: no trial with an onset has stored samples (eval.save_samples)")
    cache: dict[str, np.ndarray] = {}
    for s in chosen:
        trial = an.sweep.trial(s.trial_id)
        if trial is None:
            notes.append(f"no copies figure for {s.trial_id}: still running, its config is not recorded yet")
            continue
        key = json.dumps(json.loads(trial["config"]).get("data"), sort_keys=True) if trial.get("config") else s.trial_id
        try:
            if key not in cache:
                cache[key] = training_images(trial)
        except (UserError, OSError) as e:
            notes.append(f"no copies figure for {s.trial_id}: cannot reload its training images ({e})")
            continue
        p = copies(an, s, cache[key], out / f"copies_{s.trial_id}.png")
        if p is None:
            notes.append(f"no copies figure for {s.trial_id}: no stored samples")
        else:
            figs.append((f"copies you can see: {s.trial_id} ({trial_label(s, an.axes)}) before, at and after onset", p))
    return notes
