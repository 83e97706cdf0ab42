"""`raydiff analyze`: the trial table, the scaling-law fits, the figures and report.html.

Writes into the output folder:
    fits.json          everything below, machine readable (fits, per-trial values, warnings)
    fits.parquet       one row per fitted coefficient: joint, marginal and sensitivity fits
    trial_stats.parquet  one row per trial: τ_mem re-read, state, memorization rate, peak fidelity
    *.png              the figures (figures.py)
    report.html        all of it in one self-contained page (html.py)
and prints the tables on stdout.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from raydiff import results
from raydiff.analysis.fits import SYMBOLS, PowerLawFit
from raydiff.analysis.load import Sweep, load_sweep
from raydiff.analysis.scaling import Analysis, analyze_sweep
from raydiff.errors import UserError

FITS_SCHEMA = pa.schema(
    [
        ("fit", pa.string()),  # joint | marginal | sensitivity
        ("definition", pa.string()),  # the onset definition τ_mem was read with
        ("method", pa.string()),  # ols | tobit
        ("axis", pa.string()),  # const | n_train | batch_size | lr | params
        ("name", pa.string()),  # c | alpha | beta | gamma | delta
        ("value", pa.float64()),
        ("lo", pa.float64()),
        ("hi", pa.float64()),
        ("level", pa.float64()),
        ("r2", pa.float64()),
        ("sigma", pa.float64()),
        ("n_trials", pa.int64()),
        ("n_censored", pa.int64()),
        ("n_boot", pa.int64()),
        ("slice", pa.string()),  # marginal fits: the other axes' values
    ]
)


# ------------------------------------------------------------------------------ text


def _num(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)) and spec == ".3g":
        return str(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e7 and spec == ".3g":
        return str(int(v))
    return format(v, spec)


def trial_table(an: Analysis) -> str:
    """One line per trial that landed: its axes, state, τ_mem and the per-trial quantities."""
    head = (
        f"{'trial':<16} {'N':>6} {'params':>9} {'B':>4} {'lr':>8} {'status':>10} {'tau_mem':>8} {'T_norm':>8}"
        f" {'rate/1k':>7} {'peak_fid':>8} {'@step':>6}  note"
    )
    lines = [head]
    for s in an.stats:
        tau = _num(s.tau, ".1f" if an.definition.interpolate and s.tau else ".3g")
        if s.state == "censored":
            tau = f">{s.censor_step}"
        note = s.reason if s.state != "onset" else ""
        lines.append(
            f"{s.trial_id:<16} {_num(s.n_train):>6} {_num(s.params):>9} {_num(s.batch_size):>4}"
            f" {_num(s.lr, '.1e'):>8} {s.status:>10} {tau:>8} {_num(s.tau_normalized, '.4g'):>8}"
            f" {_num(None if s.mem_rate is None else s.mem_rate * 1000, '.3f'):>7} {_num(s.peak_fid, '.2f'):>8}"
            f" {_num(s.peak_fid_step):>6}  {note}".rstrip()
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
        f"  {how} in log space on {fit.n_trials} trials{cens}; R² = {_num(fit.r2, '.3f')}, σ = {fit.sigma:.3f};"
        f" {int(round(fit.level * 100))}% bootstrap intervals from {fit.n_boot} resamples of trials",
    ]
    for c in [fit.intercept, *fit.coefficients]:
        sym = f"{c.symbol} ({SYMBOLS[c.axis]})" if c.axis in SYMBOLS else c.symbol
        lines.append(f"  {sym:>7} = {c.value:+8.3f}   [{c.lo:+8.3f}, {c.hi:+8.3f}]")
    if fit.boot_unreliable:
        lines.append(
            f"  warning: only {fit.n_boot} of {fit.n_boot_requested} resamples could be fitted (too few trials"
            " for the bootstrap): the intervals are too narrow"
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
            f"  {SYMBOLS[axis]}: {c.symbol} = {c.value:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}]  R² = {_num(f.r2, '.3f')},"
            f" {f.n_trials} trials ({where}{rough})"
        )
    return "\n".join(lines)


def sensitivity_text(an: Analysis) -> str:
    if not an.sensitivity:
        return ""
    axes = an.axes
    head = f"{'onset definition':<40} {'onsets':>6} {'cens.':>5}  " + "  ".join(
        f"{_sym(a):<22}" for a in axes
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


def _sym(axis: str) -> str:
    from raydiff.analysis.fits import AXES, GREEK

    return f"{GREEK[AXES[axis]]} ({SYMBOLS[axis]})"


def report_text(an: Analysis) -> str:
    parts = [summary_line(an), f"onset: {an.definition_label} (each trial's stop rule; metrics re-read)", trial_table(an)]
    if an.sweep.running:
        parts.append(f"still running: {len(an.sweep.running)} trial(s): {', '.join(an.sweep.running)} (not fitted)")
    parts += [f"warning: {w}" for w in an.warnings]
    parts.append(format_fit(an.joint) if an.joint else an.joint_note)
    parts += [p for p in (marginal_text(an), sensitivity_text(an)) if p]
    from raydiff.analysis import budgets, pareto  # an Optuna search's front; the planner's predictions

    parts += [p for p in (pareto.section(an.sweep), budgets.section(an.sweep)) if p]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- files


def fits_dict(an: Analysis) -> dict:
    sw = an.sweep
    return {
        "sweep": {"uri": sw.uri, "name": sw.name, "planned": sw.planned, "running": sw.running,
                  "not_started": sw.not_started, "git_commit": sw.git_commit, "versions": sw.versions},
        "onset": an.definition_label,
        "censored": an.censored_mode,
        "axes": an.axes,
        "joint": an.joint.to_dict() if an.joint else None,
        "joint_note": an.joint_note,
        "reference": an.reference,
        "marginal_trials": an.marginal_where,
        "marginal": {a: (f.to_dict() if isinstance(f, PowerLawFit) else f) for a, f in an.marginal.items()},
        "sensitivity": [
            {"definition": r.definition, "n_onset": r.n_onset, "n_censored": r.n_censored,
             "fit": r.fit.to_dict() if r.fit else None, "note": r.note}
            for r in an.sensitivity
        ],
        "trials": [s.to_dict() for s in an.stats],
        "warnings": an.warnings,
    }  # fmt: skip


def fits_rows(an: Analysis) -> list[dict]:
    rows = []

    def add(kind: str, definition: str, f: PowerLawFit | None, sl: str = ""):
        if f is None:
            return
        for c in [f.intercept, *f.coefficients]:
            rows.append(
                {"fit": kind, "definition": definition, "method": f.method, "axis": c.axis, "name": c.name,
                 "value": c.value, "lo": c.lo, "hi": c.hi, "level": f.level, "r2": f.r2, "sigma": f.sigma,
                 "n_trials": f.n_trials, "n_censored": f.n_censored, "n_boot": f.n_boot, "slice": sl}
            )  # fmt: skip

    add("joint", an.definition_label, an.joint)
    for a, f in an.marginal.items():
        if isinstance(f, PowerLawFit):
            add("marginal", an.definition_label, f, an.marginal_where.get(a, ""))
    for r in an.sensitivity:
        add("sensitivity", r.definition, r.fit)
    return rows


STATS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()), ("status", pa.string()), ("state", pa.string()), ("reason", pa.string()),
        ("n_train", pa.int64()), ("batch_size", pa.int64()), ("lr", pa.float64()), ("params", pa.int64()),
        ("model", pa.string()), ("steps_done", pa.int64()), ("n_evals", pa.int64()), ("tau", pa.float64()),
        ("tau_recorded", pa.int64()), ("tau_normalized", pa.float64()), ("censor_step", pa.int64()),
        ("mem_rate", pa.float64()), ("peak_fid", pa.float64()), ("peak_fid_step", pa.int64()),
    ]
)  # fmt: skip


def write_tables(an: Analysis, out: Path) -> list[Path]:
    fs = pafs.LocalFileSystem()
    meta = {"raydiff.git_commit": an.sweep.git_commit, "raydiff.versions": json.dumps(an.sweep.versions),
            "raydiff.analysis.onset": an.definition_label, "raydiff.analysis.censored": an.censored_mode}  # fmt: skip
    paths = [out / "fits.json", out / "fits.parquet", out / "trial_stats.parquet"]
    paths[0].write_text(json.dumps(fits_dict(an), indent=1, default=_json_default))
    results.write_atomic(results.table(fits_rows(an), FITS_SCHEMA, meta), fs, str(paths[1]))
    results.write_atomic(results.table([s.to_dict() for s in an.stats], STATS_SCHEMA, meta), fs, str(paths[2]))
    return paths


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


FIGURE_PATTERNS = ("tau_vs_*.png", "curves_*.png", "copies_*.png")


def default_out(uri: str) -> Path:
    if "://" in uri:  # a remote results folder: write locally, named after the sweep
        return Path("analysis-" + uri.rstrip("/").rsplit("/", 1)[-1])
    return Path(uri).expanduser() / "analysis"


def analyze(
    uri: str,
    out_dir: str | None = None,
    *,
    censored: str = "exclude",
    interpolate: bool = False,
    n_boot: int = 2000,
    copies: list[str] | None = None,
    out: TextIO | None = None,
) -> Path:
    """Load, fit, print, and write fits, figures and report.html into `out_dir`."""
    out = out or sys.stdout  # looked up now, not at import: a redirected stdout is honoured
    if n_boot < 0:
        raise UserError(f"--boot must be ≥ 0 (got {n_boot})")
    sweep: Sweep = load_sweep(uri)
    if copies:
        known = {t["trial_id"] for t in sweep.trials} | set(sweep.running)
        missing = [c for c in copies if c not in known]
        if missing:
            raise UserError(f"--copies: no trial {', '.join(missing)} in this sweep (trials: {', '.join(sorted(known))})")
    an = analyze_sweep(sweep, censored=censored, interpolate=interpolate, n_boot=n_boot)
    out_path = Path(out_dir).expanduser() if out_dir else default_out(uri)
    try:
        out_path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder {out_path}: {e}") from None
    print(report_text(an), file=out, flush=True)

    from raydiff.analysis import figures, html

    if (out_path / "fits.json").exists():  # a folder this command wrote before: no stale figures left in it
        for old in [p for pat in FIGURE_PATTERNS for p in out_path.glob(pat)]:
            old.unlink()
    written = write_tables(an, out_path)
    figs, fig_notes = figures.standard_figures(an, out_path, copies=copies)
    for note in fig_notes:
        print(f"note: {note}", file=out)
    written += [p for _, p in figs]
    written.append(html.write_report(an, figs, out_path / "report.html", text=report_text(an), notes=fig_notes))
    for p in written:
        print(f"wrote {p}", file=out)
    return out_path
