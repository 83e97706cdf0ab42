"""report.html: one self-contained page (figures embedded as base64 data URIs, no scripts, no
server) with the fits, every trial by name, the figures, the sweep's config and versions."""

from __future__ import annotations

import base64
import datetime
import json
from html import escape
from pathlib import Path

from raydiff.analysis.fits import SYMBOLS, PowerLawFit
from raydiff.analysis.scaling import Analysis
from raydiff.analysis.fidelity import fidelity_label
from raydiff.analysis.text import (
    definitions_text, exponent_label, fidelity_text, fmt_num, generation_text, replicates_text, summary_line,
)  # fmt: skip

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} tr.censored td{color:#8a5a00} tr.excluded td,tr.running td{color:#777}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:.4em .8em;margin:.3em 0}
figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.82em} .muted{color:#666}
"""


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _coef_cells(f: PowerLawFit) -> str:
    return "".join(f"<td>{c.value:+.3f}</td><td>[{c.lo:+.3f}, {c.hi:+.3f}]</td>" for c in [f.intercept, *f.coefficients])


def _fit_table(an: Analysis) -> str:
    f = an.joint
    if f is None:
        return f"<p>{escape(an.joint_note)}</p>"
    names = "".join(
        f"<th colspan=2>{escape(c.symbol)}{' (' + SYMBOLS[c.axis] + ')' if c.axis in SYMBOLS else ''}</th>"
        for c in [f.intercept, *f.coefficients]
    )
    how = "least squares" if f.method == "ols" else "tobit: maximum likelihood, right-censored at log(steps_done)"
    return (
        f"<p>log τ<sub>mem</sub> = c + {' + '.join(escape(c.symbol) + '·log ' + SYMBOLS[c.axis] for c in f.coefficients)}"
        f" &nbsp;— {how} in log space; {int(round(f.level * 100))}% percentile bootstrap intervals"
        f" ({f.n_boot} resamples of grid points, {f.usable:.0%} usable).</p>"
        f"<table><tr>{names}<th>R²</th><th>σ</th><th>trials</th><th>censored</th></tr>"
        f"<tr>{_coef_cells(f)}<td>{fmt_num(f.r2, '.3f')}</td><td>{f.sigma:.3f}</td><td>{f.n_trials}</td>"
        f"<td>{f.n_censored}</td></tr></table>"
        + (f"<div class=warn>only {f.n_boot} of {f.n_boot_requested} bootstrap resamples could be fitted:"
           " no interval is given</div>" if f.boot_unreliable else "")
    )  # fmt: skip


def _marginal_table(an: Analysis) -> str:
    if not an.marginal:
        return ""
    rows = []
    for a, f in an.marginal.items():
        where = escape(an.marginal_where.get(a, ""))
        if isinstance(f, str):
            rows.append(f"<tr><td class=l>{SYMBOLS[a]}</td><td class=l colspan=5>{escape(f)}</td><td class=l>{where}</td></tr>")
            continue
        c = f.coefficients[0]
        rows.append(
            f"<tr><td class=l>{SYMBOLS[a]}</td><td>{escape(c.symbol)} = {c.value:+.3f}</td><td>[{c.lo:+.3f}, {c.hi:+.3f}]</td>"
            f"<td>{fmt_num(f.r2, '.3f')}</td><td>{f.n_trials}</td><td>{f.n_censored}</td><td class=l>{where}</td></tr>"
        )
    return (
        "<h3>Marginal fits</h3><p>One axis alone: in a one-factor sweep over the trials on that axis's line"
        " through the default point, in a full grid over every trial.</p>"
        "<table><tr><th class=l>axis</th><th>exponent</th><th>interval</th><th>R²</th><th>trials</th><th>censored</th>"
        "<th class=l>trials used</th></tr>" + "".join(rows) + "</table>"
    )


def _sensitivity_table(an: Analysis) -> str:
    if not an.sensitivity:
        return ""
    head = "".join(f"<th colspan=2>{escape(exponent_label(a))}</th>" for a in an.axes)
    rows = []
    for r in an.sensitivity:
        cells = (
            "".join(f"<td>{c.value:+.3f}</td><td>[{c.lo:+.3f}, {c.hi:+.3f}]</td>" for c in r.fit.coefficients)
            if r.fit else f"<td class=l colspan={2 * len(an.axes)}>no fit: {escape(r.note)}</td>"
        )  # fmt: skip
        rows.append(f"<tr><td class=l>{escape(r.definition)}</td><td>{r.n_onset}</td><td>{r.n_censored}</td>{cells}</tr>")
    return (
        f"<h3>Sensitivity to the onset definition</h3><p>The joint fit again ({escape(an.censored_mode)}) with τ<sub>mem</sub>"
        " re-read from the metrics under each definition. A trial stopped at the sweep's own onset has no later"
        " evaluations, so a higher threshold often finds it censored.</p>"
        f"<table><tr><th class=l>definition</th><th>onsets</th><th>censored</th>{head}</tr>" + "".join(rows) + "</table>"
    )


def _censored_words(mode: str) -> str:
    return {
        "auto": "auto — fitted as lower bounds (tobit) wherever a fit has one, least squares otherwise",
        "tobit": "tobit — fitted as lower bounds (right-censored maximum likelihood)",
        "ols": "ols — dropped from the fits, which biases the exponents toward 0",
    }.get(mode, mode)


def _text_sections(an: Analysis) -> str:
    """The peak fidelity before onset against N, τ_gen beside τ_mem, the replicate spread and the
    fit per recorded onset definition, as the plain text prints them (fixed-width tables)."""
    parts = [
        (f"{escape(fidelity_label(an.sweep))} before memorization: peak against N", fidelity_text(an)),
        ("τ<sub>gen</sub> beside τ<sub>mem</sub>", generation_text(an)),
        ("Replicate seeds", replicates_text(an)),
        ("Onset definitions recorded by the sweep", definitions_text(an)),
    ]
    return "".join(f"<h3>{title}</h3><pre>{escape(body)}</pre>" for title, body in parts if body)


def findings_section(an: Analysis) -> str:
    """The papers' findings on this sweep (analysis/findings.py): one row per claim, its
    statistic, value, 95% interval, verdict and what the verdict rests on."""
    if not an.findings:
        return ""
    head = ("<tr><th class=l>paper</th><th class=l>finding</th><th class=l>statistic</th><th>value</th>"
            "<th>95% interval</th><th class=l>verdict</th><th class=l>why</th></tr>")  # fmt: skip
    rows = "".join(
        f"<tr class='finding {f.verdict.replace(' ', '-')}'><td class=l>{escape(f.paper)}</td><td class=l>{escape(f.claim)}</td>"
        f"<td class=l>{escape(f.statistic)}</td><td>{fmt_num(f.value, '+.3g')}</td>"
        f"<td>{'' if f.lo is None else f'[{f.lo:+.3g}, {f.hi:+.3g}]'}</td><td class=l><b>{escape(f.verdict)}</b></td>"
        f"<td class=l>{escape(f.why)}</td></tr>"
        for f in an.findings
    )
    return (f"<h2>Findings</h2><p>The papers' published findings, tested on this sweep (τ<sub>mem</sub>: "
            f"{escape(an.headline)}).</p><table>{head}{rows}</table>")  # fmt: skip


def _trials_table(an: Analysis) -> str:
    head = ("<tr><th class=l>trial</th><th>N</th><th>params</th><th>B</th><th>η</th><th class=l>status</th>"
            f"<th>τ<sub>mem</sub></th><th>T (normalized)</th><th>mem rate /1k steps</th><th>peak {escape(fidelity_label(an.sweep))}"
            "</th><th>@ step</th><th class=l>note</th></tr>")  # fmt: skip
    rows = []
    for s in an.stats:
        tau = f"&gt;{s.censor_step}" if s.state == "censored" else fmt_num(s.tau, ".4g")
        rate = None if s.mem_rate is None else s.mem_rate * 1000
        rows.append(
            f"<tr class={s.state}><td class=l>{escape(s.trial_id)}</td><td>{fmt_num(s.n_train)}</td><td>{fmt_num(s.params)}</td>"
            f"<td>{fmt_num(s.batch_size)}</td><td>{fmt_num(s.lr, '.1e')}</td><td class=l>{escape(s.status)}</td><td>{tau}</td>"
            f"<td>{fmt_num(s.tau_normalized, '.4g')}</td><td>{fmt_num(rate, '.3f')}</td><td>{fmt_num(s.peak_fid, '.2f')}</td>"
            f"<td>{fmt_num(s.peak_fid_step)}</td><td class=l>{escape(s.reason)}</td></tr>"
        )
    return "<table>" + head + "".join(rows) + "</table>"


def write_report(an: Analysis, figs: list[tuple[str, Path]], path: Path, text: str = "", notes: list[str] = ()) -> Path:
    sw = an.sweep
    warn = "".join(f"<div class=warn>{escape(w)}</div>" for w in [*an.warnings, *notes])
    if sw.running:
        warn = f"<div class=warn>still running (not fitted): {escape(', '.join(sw.running))}</div>" + warn
    fig_html = "".join(
        f"<figure><img alt='{escape(p.name)}' src='{_img(p)}'><figcaption>{escape(p.name)}: {escape(cap)}</figcaption></figure>"
        for cap, p in figs
    )
    space = json.dumps(sw.search_space, indent=1, sort_keys=True) if sw.search_space else "(not recorded)"
    versions = "".join(f"<tr><td class=l>{escape(k)}</td><td class=l>{escape(str(v))}</td></tr>" for k, v in sw.versions.items())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>raydiff analysis: {escape(sw.name)}</title><style>{CSS}</style></head>
<body>
<h1>Memorization onset: sweep <code>{escape(sw.name)}</code></h1>
<p class=muted>{escape(summary_line(an))}<br>analyzed {now}; git commit <code>{escape(sw.git_commit)}</code></p>
<p>τ<sub>mem</sub>: {escape(an.definition_label)} — read from each trial's evaluation series with the onset rule the
stopper uses. Censored trials (no onset within their budget): {escape(_censored_words(an.censored_mode))}.</p>
{warn}
<h2>Scaling law</h2>
{_fit_table(an)}
{_marginal_table(an)}
{_sensitivity_table(an)}
{_text_sections(an)}
{findings_section(an)}
<h2>Trials</h2>
{_trials_table(an)}
<h2>Figures</h2>
{fig_html or '<p>No figures: nothing to draw yet.</p>'}
<h2>Sweep configuration</h2>
<pre>{escape(space)}</pre>
<h2>Versions</h2>
<table>{versions or '<tr><td>(not recorded)</td></tr>'}<tr><td class=l>git commit</td><td class=l>{escape(sw.git_commit)}</td></tr></table>
<details><summary>Plain-text report</summary><pre>{escape(text)}</pre></details>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
