"""`raydiff analyze`: the trial table, the scaling-law fits, the figures and report.html.

Writes into the output folder:
    fits.json          everything below, machine readable (fits, per-trial values, warnings, τ_gen
                       and τ_mem/τ_gen, replicate spread, the fit per recorded onset definition)
    fits.parquet       one row per fitted coefficient: joint, marginal, sensitivity, definition,
                       tau_gen and tau_ratio fits
    trial_stats.parquet  one row per trial: τ_mem re-read, state, memorization rate, peak fidelity,
                       τ_gen, seed and grid point
    *.png              the figures (figures.py): tau_vs_<axis>, curves_step, curves_normalized,
                       fidelity_vs_n (peak fidelity before onset against N), copies_<trial>
    report.html        all of it in one self-contained page (html.py)
and prints the tables on stdout (text.py). This module only runs those steps: read the results
folder, fit, print, write the tables, draw, write the page.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from raydiff import results
from raydiff.analysis import figures, html, images
from raydiff.analysis.fidelity import fidelity_label
from raydiff.analysis.fits import PowerLawFit
from raydiff.analysis.scaling import Analysis, analyze_sweep
from raydiff.analysis.text import report_text
from raydiff.errors import UserError
from raydiff.results_folder import Sweep, load_sweep
from raydiff.trackers import fit_metrics, log_analysis

FITS_SCHEMA = pa.schema(
    [
        ("fit", pa.string()),  # joint | marginal | sensitivity | definition | tau_gen | tau_ratio
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
        "tau_gen": an.generation.to_dict() if an.generation else None,
        "replicates": [r.to_dict() for r in an.replicates],
        "replicate_sigma": an.replicate_sigma,
        "definitions": [d.to_dict() for d in an.definitions],
        "fidelity": an.fidelity.to_dict() if an.fidelity else None,
        "headline": an.headline,
        "findings": [f.to_dict() for f in an.findings],
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
    for d in an.definitions:
        add("definition", f"{d.column} [{d.definition}]", d.fit)
    if an.generation:
        add("tau_gen", an.generation.definition, an.generation.fit)
        add("tau_ratio", f"tau_mem / tau_gen [{an.generation.definition}]", an.generation.ratio_fit)
    return rows


STATS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()), ("status", pa.string()), ("state", pa.string()), ("reason", pa.string()),
        ("n_train", pa.int64()), ("batch_size", pa.int64()), ("lr", pa.float64()), ("params", pa.int64()),
        ("model", pa.string()), ("steps_done", pa.int64()), ("n_evals", pa.int64()), ("tau", pa.float64()),
        ("tau_recorded", pa.int64()), ("tau_normalized", pa.float64()), ("censor_step", pa.int64()),
        ("mem_rate", pa.float64()), ("peak_fid", pa.float64()), ("peak_fid_step", pa.int64()),
        ("seed", pa.int64()), ("point", pa.string()), ("tau_gen", pa.int64()), ("tau_gen_censored", pa.bool_()),
        ("mem_rate_note", pa.string()),
    ]
)  # fmt: skip


def write_tables(an: Analysis, out: Path) -> list[Path]:
    fs = pafs.LocalFileSystem()
    meta = {"raydiff.git_commit": an.sweep.git_commit, "raydiff.versions": json.dumps(an.sweep.versions),
            "raydiff.analysis.onset": an.definition_label, "raydiff.analysis.censored": an.censored_mode,
            "raydiff.analysis.fidelity": fidelity_label(an.sweep)}  # what peak_fid is: FID (Inception) or FD (…)  # fmt: skip
    paths = [out / "fits.json", out / "fits.parquet", out / "trial_stats.parquet"]
    paths[0].write_text(json.dumps(fits_dict(an), indent=1, default=_json_default))
    results.write_atomic(results.table(fits_rows(an), FITS_SCHEMA, meta), fs, str(paths[1]))
    results.write_atomic(results.table([s.to_dict() for s in an.stats], STATS_SCHEMA, meta), fs, str(paths[2]))
    return paths


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


FIGURE_PATTERNS = ("tau_vs_*.png", "curves_*.png", "fidelity_vs_n.png", "copies_*.png", "images_vs_typicality.png")


def default_out(uri: str) -> Path:
    if "://" in uri:  # a remote results folder: write locally, named after the sweep
        return Path("analysis-" + uri.rstrip("/").rsplit("/", 1)[-1])
    return Path(uri).expanduser() / "analysis"


# bootstrap resamples: 0 (no intervals), or enough that the 2.5% and 97.5% percentiles are two
# different resamples (1 gives a zero-width "interval"), and few enough that the fits end (each
# resample is one fit, a tobit one too: 20,000 take minutes)
BOOT_MIN, BOOT_MAX = 10, 20_000


def check_boot(n_boot: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not (n_boot == 0 or BOOT_MIN <= n_boot <= BOOT_MAX):
        raise UserError(f"must be 0 (no intervals) or {BOOT_MIN}..{BOOT_MAX:,} resamples (got {n_boot!r})", key="--boot")


def check_out(out: Path, uri: str) -> None:
    """The output folder must not be a results folder, nor a folder of one holding other files:
    analyze writes fits, figures and report.html there, and clears its own earlier figures."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the figures and fits", key="--out")
    local = pafs.LocalFileSystem()
    for d in [out, *out.parents]:
        if d.is_dir() and results.is_results_dir(local, str(d)):
            inside = d != out
            earlier = (out / "fits.json").exists() or not out.exists() or not any(out.iterdir())
            if not inside or not earlier:
                what = "is the results folder" if not inside else "is a folder of the results folder"
                raise UserError(
                    f"{out} {what} {d}, whose files analyze would overwrite; give a new folder"
                    " (default: RESULTS/analysis)",
                    key="--out",
                )  # fmt: skip
            return


def analyze(
    uri: str,
    out_dir: str | None = None,
    *,
    censored: str = "auto",
    interpolate: bool = False,
    n_boot: int = 2000,
    copies: list[str] | None = None,
    out: TextIO | None = None,
    trackers: tuple[str, ...] = (),
) -> Path:
    """Load, fit, print, and write fits, figures and report.html into `out_dir`; with `trackers`
    (mlflow, wandb), also log them as one run of the sweep there (raydiff.trackers)."""
    out = out or sys.stdout  # looked up now, not at import: a redirected stdout is honoured
    check_boot(n_boot)
    out_path = Path(out_dir).expanduser() if out_dir else default_out(uri)
    check_out(out_path, uri)
    sweep: Sweep = load_sweep(uri)
    if not sweep.trials and not sweep.running:  # no fit, no figure: refuse rather than write empty files
        planned = f" of {sweep.planned} planned" if sweep.planned is not None else ""
        raise UserError(f"{uri}: 0 trial(s) landed{planned} and none running: nothing to analyze yet (raydiff status follows a sweep)")
    if copies:
        known = {t["trial_id"] for t in sweep.trials} | set(sweep.running)
        missing = [c for c in copies if c not in known]
        if missing:
            raise UserError(f"--copies: no trial {', '.join(missing)} in this sweep (trials: {', '.join(sorted(known))})")
    an = analyze_sweep(sweep, censored=censored, interpolate=interpolate, n_boot=n_boot)
    try:
        out_path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder {out_path}: {e}") from None
    print(report_text(an), file=out, flush=True)
    if (out_path / "fits.json").exists():  # a folder this command wrote before: no stale figures left in it
        for old in [p for pat in FIGURE_PATTERNS for p in out_path.glob(pat)]:
            old.unlink()
    written = write_tables(an, out_path)
    figs, fig_notes = figures.standard_figures(an, out_path, copies=copies)
    for note in fig_notes:
        print(f"note: {note}", file=out)
    written += [p for _, p in figs]
    # the ledger (samples/): which images were copied first, by each test (None: no ledger kept)
    ledger_report = images.images_report(sweep, out_path, n_boot=min(n_boot, 1000))
    if ledger_report is not None:
        for line in ledger_report.findings:
            print(f"finding: {line}", file=out)
        for note in ledger_report.notes:
            print(f"note: {note}", file=out)
        written += ledger_report.files
    sections = ledger_report.html if ledger_report is not None else ""
    written.append(html.write_report(an, figs, out_path / "report.html", text=report_text(an), notes=fig_notes, sections=sections))
    for p in written:
        print(f"wrote {p}", file=out)
    if trackers:
        params = {"onset": an.definition_label, "censored": an.censored_mode, "interpolate": interpolate, "n_boot": n_boot,
                  "results": uri, "git_commit": an.sweep.git_commit or ""}  # fmt: skip
        name = uri.rstrip("/").rsplit("/", 1)[-1]  # the sweep folder: its trials' MLflow experiment, W&B project
        findings = "\n".join([report_text(an), *(f"note: {n}" for n in fig_notes)])
        for line in log_analysis(trackers, name, out_path, fit_metrics(fits_rows(an)), params, findings):
            print(f"logged {line}", file=out, flush=True)
    return out_path
