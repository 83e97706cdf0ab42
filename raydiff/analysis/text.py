"""The plain text of `raydiff analyze`: the trial table, the fits and the summary line, τ_gen
beside τ_mem, the spread over replicate seeds and the fits per recorded onset definition, as
printed on stdout and embedded in report.html (html.py), and the peak fidelity before onset
against N (fidelity.py), named for the features it is measured in (`fidelity_label`: "FID" only
for Inception). Pure formatting: nothing is read, fitted or written here."""

from __future__ import annotations

import math

import numpy as np

from raydiff.analysis import budgets, pareto
from raydiff.analysis.fidelity import MIN_BEFORE_ONSET, fidelity_label
from raydiff.analysis.fits import AXES, GREEK, SYMBOLS, PowerLawFit
from raydiff.analysis.scaling import Analysis


def fmt_num(v, spec: str = ".3g") -> str:
    """A table cell: "-" for a missing or non-finite value, whole numbers without a fraction."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)) and spec == ".3g":
        return str(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e7 and spec == ".3g":
        return str(int(v))
    return format(v, spec)


def trial_table(an: Analysis) -> str:
    """One line per trial that landed: its axes (and seed, when some points have replicates),
    state, τ_mem and the per-trial quantities."""
    seeded = bool(an.replicates)
    seed_head = f" {'seed':>5}" if seeded else ""
    head = (
        f"{'trial':<16} {'N':>6} {'params':>9} {'B':>4} {'lr':>8}{seed_head} {'status':>10} {'tau_mem':>8} {'T_norm':>8}"
        f" {'rate/1k':>7} {'peak_fid':>8} {'@step':>6} {'tau_gen':>8}  note"
    )
    lines = [head]
    for s in an.stats:
        tau = fmt_num(s.tau, ".1f" if an.definition.interpolate and s.tau else ".3g")
        if s.state == "censored":
            tau = f">{s.censor_step}"
        note = s.reason if s.state != "onset" else (f"mem rate {s.mem_rate_note}" if s.mem_rate_note else "")
        gen = ("≥" if s.tau_gen_censored else "") + fmt_num(s.tau_gen)
        seed = f" {fmt_num(s.seed):>5}" if seeded else ""
        lines.append(
            f"{s.trial_id:<16} {fmt_num(s.n_train):>6} {fmt_num(s.params):>9} {fmt_num(s.batch_size):>4}"
            f" {fmt_num(s.lr, '.1e'):>8}{seed} {s.status:>10} {tau:>8} {fmt_num(s.tau_normalized, '.4g'):>8}"
            f" {fmt_num(None if s.mem_rate is None else s.mem_rate * 1000, '.3f'):>7} {fmt_num(s.peak_fid, '.2f'):>8}"
            f" {fmt_num(s.peak_fid_step):>6} {gen:>8}  {note}".rstrip()
        )
    return "\n".join(lines)


def summary_line(an: Analysis) -> str:
    sw = an.sweep
    counts = {}
    for t in sw.trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    parts = [f"{v} {k}" for k, v in sorted(counts.items())]
    parts.append(f"{len(sw.running)} running")
    if sw.not_started:
        parts.append(f"{sw.not_started} not started")
    planned = f" of {sw.planned} planned" if sw.planned is not None else ""
    return f"sweep {sw.name!r} ({sw.uri}): {len(sw.trials) + len(sw.running)} trial(s) landed{planned}: {', '.join(parts)}"


def format_fit(fit: PowerLawFit, title: str = "joint fit") -> str:
    rhs = " + ".join(f"{c.symbol}·log {SYMBOLS.get(c.axis, c.axis)}" for c in fit.coefficients)
    how = "least squares" if fit.method == "ols" else "tobit (right-censored maximum likelihood)"
    cens = f", {fit.n_censored} censored" if fit.n_censored else ""
    lines = [
        f"{title}: log tau_mem = c + {rhs}",
        f"  {how} in log space on {fit.n_trials} trials{cens}; R² = {fmt_num(fit.r2, '.3f')}, σ = {fit.sigma:.3f};"
        f" {int(round(fit.level * 100))}% bootstrap intervals from {fit.n_boot} resamples of {fit.n_points or fit.n_trials}"
        f" grid points ({fmt_num(fit.usable * 100, '.0f')}% of {fit.n_boot_requested} usable)",
    ]
    for c in [fit.intercept, *fit.coefficients]:
        sym = f"{c.symbol} ({SYMBOLS[c.axis]})" if c.axis in SYMBOLS else c.symbol
        lines.append(f"  {sym:>7} = {c.value:+8.3f}   [{c.lo:+8.3f}, {c.hi:+8.3f}]")
    if fit.boot_unreliable:
        lines.append(
            f"  warning: only {fit.n_boot} of {fit.n_boot_requested} resamples could be fitted (too few trials"
            " for the bootstrap): no interval is given (below 80% usable)"
        )
    return "\n".join(lines)


def marginal_text(an: Analysis) -> str:
    if not an.marginal:
        return ""
    lines = ["marginal fits (one axis alone):"]
    for axis, f in an.marginal.items():
        where = an.marginal_where.get(axis, "")
        if isinstance(f, str):
            lines.append(f"  {SYMBOLS[axis]}: {f} ({where})")
            continue
        c = f.coefficients[0]
        rough = "; few trials: a rough interval" if f.n_trials < 8 or f.boot_unreliable else ""
        lines.append(
            f"  {SYMBOLS[axis]}: {c.symbol} = {c.value:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}]  R² = {fmt_num(f.r2, '.3f')},"
            f" {f.n_trials} trials ({where}{rough})"
        )
    return "\n".join(lines)


def sensitivity_text(an: Analysis) -> str:
    if not an.sensitivity:
        return ""
    axes = an.axes
    head = f"{'onset definition':<40} {'onsets':>6} {'cens.':>5}  " + "  ".join(
        f"{exponent_label(a):<22}" for a in axes
    )
    lines = [f"sensitivity of the exponents to the onset definition ({an.censored_mode}):", head.rstrip()]
    for r in an.sensitivity:
        if r.fit is None:
            cells = f"no fit: {r.note}"
        else:
            cells = "  ".join(f"{c.value:+.2f} [{c.lo:+.2f}, {c.hi:+.2f}]".ljust(22) for c in r.fit.coefficients)
        lines.append(f"{r.definition:<40} {r.n_onset:>6} {r.n_censored:>5}  {cells}".rstrip())
    boots = next((r.fit.n_boot_requested for r in an.sensitivity if r.fit), None)
    lines.append(
        "  (a trial stops at the sweep's own onset, so a stricter definition often finds it censored"
        + (f"; {boots} resamples per row)" if boots else ")")
    )
    return "\n".join(lines)


def _cells(f: PowerLawFit) -> str:
    return "  ".join(f"{c.symbol} ({SYMBOLS.get(c.axis, c.axis)}) = {c.value:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}]" for c in f.coefficients)


def _how(f: PowerLawFit) -> str:
    cens = f", {f.n_censored} censored" if f.n_censored else ""
    return f"({f.method}, {f.n_trials} trials{cens})"


def generation_text(an: Analysis) -> str:
    """τ_gen beside τ_mem: both exponents and the ratio's (Bonnaire et al.: τ_gen ≈ constant, τ_mem ∝ n)."""
    g = an.generation
    if g is None:
        return ""
    if not g.n:
        return f"tau_gen: {g.note}"
    lines = [f"tau_gen beside tau_mem (tau_gen: {g.definition}; {g.n} trial(s) with {fidelity_label(an.sweep)}):"]
    rows = [("tau_mem", an.joint, an.joint_note), ("tau_gen", g.fit, g.note), ("tau_mem/tau_gen", g.ratio_fit, g.ratio_note)]
    for name, f, why in rows:
        lines.append(f"  {name:<16} " + (f"{_cells(f)}  {_how(f)}" if f else (why or "no fit")).removeprefix("no joint fit: "))
    if g.ratio_median is not None:
        lo, hi = g.ratio_range
        lines.append(f"  tau_mem/tau_gen per trial (onset and tau_gen observed): median {g.ratio_median:.3g}, range {lo:.3g} to {hi:.3g}")
    return "\n".join(lines)


def fidelity_text(an: Analysis) -> str:
    """The paper's other finding, in two lines: each N's peak fidelity before onset (the lowest
    value at or before the onset), whether it improves with N (Spearman ρ < 0; a monotone check
    over 2 trials), and how many values each peak is taken over. One line without any value."""
    f = an.fidelity
    if f is None:
        return ""
    if not f.measured:
        return (f"peak {f.label} before onset vs N: no {f.label} measured at or before any trial's onset"
                " (eval.fid_every, eval.fid_every_steps): no fidelity_vs_n.png")  # fmt: skip
    by_n: dict[int, list[str]] = {}
    for p in f.measured:
        by_n.setdefault(p.n_train, []).append(f"{p.peak:.4g}" + ("*" if p.state == "censored" else ""))
    values = ", ".join(f"N={n}: {'/'.join(v)}" for n, v in sorted(by_n.items()))
    where = f" ({f.where})" if f.where else ""
    verdict = fidelity_verdict(f)
    star = "; *: no onset, lowest over every evaluation" if any(p.state == "censored" for p in f.measured) else ""
    counts = [p.count for p in f.points]
    few = f.few
    enough = (f"fewer than {MIN_BEFORE_ONSET} in {len(few)}: " + ", ".join(f"{p.trial_id} (N={p.n_train}, {p.count})" for p in few)
              if few else f"every trial has ≥ {MIN_BEFORE_ONSET}")  # fmt: skip
    return (
        f"peak {f.label} before onset vs N{where}: {values}; improves with N: {verdict}{star}\n"
        f"  fidelity values before onset per trial: min {min(counts)}, median {float(np.median(counts)):g},"
        f" max {max(counts)} over {len(counts)} trials ({enough})"
    )


def fidelity_verdict(f) -> str:
    """Whether the peak fidelity before onset improves with N, and by which test."""
    if f.improves is None:
        return f"cannot tell ({f.note})"
    if f.method == "spearman":
        pv = "" if f.p is None else f", p = {f.p:.2g}"
        return f"{'yes' if f.improves else 'no'} (Spearman ρ = {f.rho:+.2f}{pv}, {len(f.measured)} trials)"
    return f"{'yes' if f.improves else 'no'} (monotone check over {len(f.measured)} trials; Spearman needs ≥ 3)"


def replicates_text(an: Analysis) -> str:
    """τ_mem over replicate seeds at each grid point: n, onsets, mean, sd."""
    if not an.replicates:
        return ""
    width = max(len("grid point"), *(len(r.label) for r in an.replicates))
    lines = [
        "replicates (trials sharing every setting but train.seed; each is one observation in the fits):",
        f"  {'grid point':<{width}} {'n':>3} {'onsets':>6} {'cens.':>5} {'mean tau':>10} {'sd':>9} {'sd log':>7}  seeds",
    ]
    for r in an.replicates:
        mean = "-" if r.mean is None else ("≥" if r.n_censored else "") + f"{r.mean:.4g}"
        seeds = ",".join("-" if s is None else str(s) for s in r.seeds)
        lines.append(
            f"  {r.label:<{width}} {r.n:>3} {r.n_onset:>6} {r.n_censored:>5} {mean:>10} {fmt_num(r.sd, '.4g'):>9}"
            f" {fmt_num(r.sd_log, '.3f'):>7}  {seeds}"
        )
    notes = ["mean over every replicate, a censored one at its last step (≥: a lower bound); sd over the onsets"]
    if an.replicate_sigma is not None:
        sig = f"; the joint fit's σ = {an.joint.sigma:.3f}" if an.joint else ""
        notes.append(f"pooled sd of log tau within points = {an.replicate_sigma:.3f}{sig}")
    lines.append("  (" + "; ".join(notes) + ")")
    return "\n".join(lines)


def definitions_text(an: Analysis) -> str:
    """The fit per onset definition recorded in trials.parquet, and each trial's τ by each."""
    if len(an.definitions) < 2:  # the stop rule's alone is the joint fit above
        return ""
    width = max(len("definition"), *(len(d.definition) for d in an.definitions))
    lines = [
        f"onset definitions recorded in trials.parquet, each fitted ({an.censored_mode}):",
        f"  {'definition':<{width}} {'onsets':>6} {'cens.':>5}  exponents",
    ]
    for d in an.definitions:
        cells = f"{_cells(d.fit)}  {_how(d.fit)}" if d.fit else f"no fit: {d.note}"
        lines.append(f"  {d.definition:<{width}} {d.n_onset:>6} {d.n_censored:>5}  {cells}")
    ids = [s.trial_id for s in an.stats if any(s.trial_id in d.onsets or s.trial_id in d.censored for d in an.definitions)]
    if ids:
        cols = ["stop" if d.column == "tau_mem_step" else d.column.removeprefix("tau_mem_").removesuffix("_step") for d in an.definitions]
        w = max(len("trial"), *(len(i) for i in ids))
        lines.append("  tau by definition (steps; ≥: measured, not fired by the trial's last step, a lower bound;"
                     " -: not measured):")  # fmt: skip
        lines.append(f"  {'trial':<{w}} " + " ".join(f"{c:>10}" for c in cols))
        for i in ids:
            lines.append(f"  {i:<{w}} " + " ".join(f"{d.cell(i):>10}" for d in an.definitions))
    return "\n".join(lines)


def exponent_label(axis: str) -> str:
    """An axis's exponent with the axis it belongs to: "α (N)"."""
    return f"{GREEK[AXES[axis]]} ({SYMBOLS[axis]})"


def report_text(an: Analysis) -> str:
    """Everything `raydiff analyze` prints before the files it writes."""
    parts = [summary_line(an), f"onset: {an.definition_label} (each trial's stop rule; metrics re-read)", trial_table(an)]
    if an.sweep.running:
        parts.append(f"still running: {len(an.sweep.running)} trial(s): {', '.join(an.sweep.running)} (not fitted)")
    parts += [f"warning: {w}" for w in an.warnings]
    parts.append(format_fit(an.joint) if an.joint else an.joint_note)
    parts += [p for p in (marginal_text(an), fidelity_text(an), generation_text(an), replicates_text(an), sensitivity_text(an)) if p]
    parts += [p for p in (definitions_text(an), findings_text(an)) if p]
    # an Optuna search's best trials or front; the budget planner's predictions against the onsets
    parts += [p for p in (pareto.section(an.sweep), budgets.section(an.sweep)) if p]
    return "\n".join(parts)


def findings_text(an: Analysis) -> str:
    """The papers' findings on this sweep (analysis/findings.py): claim, statistic with its
    interval, verdict and what it rests on."""
    if not an.findings:
        return ""
    lines = [f"findings (τ_mem: {an.headline}; each claim's statistic, 95% interval, verdict):"]
    for f in an.findings:
        val = "" if f.value is None else f" = {f.value:+.3g}"
        ci = "" if f.lo is None or f.hi is None else f" [{f.lo:+.3g}, {f.hi:+.3g}]"
        lines.append(f"  {f.verdict.upper():<13} {f.paper}: {f.claim}")
        lines.append(f"  {'':<13} {f.statistic}{val}{ci}; {f.why}")
    return "\n".join(lines)
