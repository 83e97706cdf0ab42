"""report.html: one self-contained page (figures embedded as base64 data URIs, no scripts, no
server) with the fits, every trial by name, the figures, the sweep's config and versions. Every
section is a table or a figure that fits the page's width (cells wrap; no fixed-width text but the
folded plain-text copy, which wraps too); a value that could not be measured says why."""

from __future__ import annotations

import base64
import datetime
import json
from html import escape
from pathlib import Path

from raydiff.analysis.fits import SYMBOLS, PowerLawFit
from raydiff.analysis.scaling import Analysis
from raydiff.analysis.fidelity import MIN_BEFORE_ONSET, fidelity_label
from raydiff.analysis.text import exponent_label, fidelity_verdict, fmt_num, summary_line

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
 overflow-wrap:break-word}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;max-width:100%} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} tr.censored td{color:#8a5a00} tr.excluded td,tr.running td{color:#777}
.v{white-space:nowrap} .ci{white-space:nowrap;color:#555}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:.4em .8em;margin:.3em 0}
figure{margin:1.2em 0} figure img{max-width:100%;height:auto;box-sizing:border-box;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;font-size:.82em;white-space:pre-wrap;overflow-wrap:anywhere} .muted{color:#666}
code{overflow-wrap:anywhere}
@media (max-width:900px){body{padding:0 .5em} table{font-size:.85em} td,th{padding:2px 4px}}
"""


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _id(trial_id: str) -> str:
    """A trial id that may wrap after its underscores in a narrow column."""
    return escape(trial_id).replace("_", "_<wbr>")


def _coef(c) -> str:
    """One coefficient with its interval, in one cell that may wrap between the two."""
    return f"<span class=v>{c.value:+.3f}</span> <span class=ci>[{c.lo:+.3f}, {c.hi:+.3f}]</span>"


def _coef_cells(f: PowerLawFit) -> str:
    return "".join(f"<td>{_coef(c)}</td>" for c in [f.intercept, *f.coefficients])


def _axis_cells(f: PowerLawFit | None, axes: list[str], why: str = "") -> str:
    """A fit's exponents in the columns of `axes` ("–" where it did not fit that axis), or one cell
    saying why there is no fit."""
    if f is None:
        return f"<td class=l colspan={len(axes) + 1}>no fit: {escape(why.removeprefix('no joint fit: ') or 'too few trials')}</td>"
    by_axis = {c.axis: c for c in f.coefficients}
    cells = "".join(f"<td>{_coef(by_axis[a])}</td>" if a in by_axis else "<td>–</td>" for a in axes)
    cens = f", {f.n_censored} censored" if f.n_censored else ""
    return cells + f"<td class=l>{escape(f.method)}, {f.n_trials} trials{cens}</td>"


def _axis_head(axes: list[str]) -> str:
    return "".join(f"<th>{escape(exponent_label(a))}</th>" for a in axes) + "<th class=l>fit</th>"


def _fit_table(an: Analysis) -> str:
    f = an.joint
    if f is None:
        return f"<p>{escape(an.joint_note)}</p>"
    names = "".join(
        f"<th>{escape(c.symbol)}{' (' + SYMBOLS[c.axis] + ')' if c.axis in SYMBOLS else ''}</th>"
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
            rows.append(f"<tr><td class=l>{SYMBOLS[a]}</td><td class=l colspan=4>{escape(f)}</td><td class=l>{where}</td></tr>")
            continue
        c = f.coefficients[0]
        rows.append(
            f"<tr><td class=l>{SYMBOLS[a]}</td><td>{escape(c.symbol)} = {_coef(c)}</td>"
            f"<td>{fmt_num(f.r2, '.3f')}</td><td>{f.n_trials}</td><td>{f.n_censored}</td><td class=l>{where}</td></tr>"
        )
    return (
        "<h3>Marginal fits</h3><p>One axis alone: in a one-factor sweep over the trials on that axis's line"
        " through the default point, in a full grid over every trial.</p>"
        "<table><tr><th class=l>axis</th><th>exponent [interval]</th><th>R²</th><th>trials</th><th>censored</th>"
        "<th class=l>trials used</th></tr>" + "".join(rows) + "</table>"
    )


def _sensitivity_table(an: Analysis) -> str:
    if not an.sensitivity:
        return ""
    rows = "".join(
        f"<tr><td class=l>{escape(r.definition)}</td><td>{r.n_onset}</td><td>{r.n_censored}</td>"
        f"{_axis_cells(r.fit, an.axes, r.note)}</tr>"
        for r in an.sensitivity
    )
    return (
        f"<h3>Sensitivity to the onset definition</h3><p>The joint fit again ({escape(an.censored_mode)}) with τ<sub>mem</sub>"
        " re-read from the metrics under each definition. A trial stopped at the sweep's own onset has no later"
        " evaluations, so a higher threshold often finds it censored.</p>"
        f"<table><tr><th class=l>definition</th><th>onsets</th><th>censored</th>{_axis_head(an.axes)}</tr>{rows}</table>"
    )


def _censored_words(mode: str) -> str:
    return {
        "auto": "auto — fitted as lower bounds (tobit) wherever a fit has one, least squares otherwise",
        "tobit": "tobit — fitted as lower bounds (right-censored maximum likelihood)",
        "ols": "ols — dropped from the fits, which biases the exponents toward 0",
    }.get(mode, mode)


def _fidelity_table(an: Analysis) -> str:
    """The peak fidelity before onset against N: one row per trial on the N slice, the verdict."""
    f = an.fidelity
    if f is None:
        return ""
    label = escape(f.label)
    title = f"<h3>{label} before memorization: peak against N</h3>"
    if not f.measured:
        return (f"{title}<p>No {label} measured at or before any trial's onset (eval.fid_every, eval.fid_every_steps):"
                " no fidelity_vs_n.png.</p>")  # fmt: skip
    where = f" Trials: {escape(f.where)}." if f.where else ""
    rows = "".join(
        f"<tr class={p.state}><td class=l>{_id(p.trial_id)}</td><td>{fmt_num(p.n_train)}</td>"
        f"<td>{fmt_num(p.peak, '.4g') if p.peak is not None else 'none measured'}</td><td>{fmt_num(p.peak_step)}</td>"
        f"<td>{p.count}</td><td class=l>{'onset' if p.state == 'onset' else 'no onset: lowest over every evaluation'}</td></tr>"
        for p in f.points
    )
    few = (f"<p class=muted>Fewer than {MIN_BEFORE_ONSET} values before onset: "
           + escape(", ".join(f"{p.trial_id} (N={p.n_train}, {p.count})" for p in f.few)) + ".</p>") if f.few else ""  # fmt: skip
    return (
        f"{title}<p>The lowest {label} at or before each trial's onset.{where} Improves with N:"
        f" <b>{escape(fidelity_verdict(f))}</b>.</p>"
        f"<table><tr><th class=l>trial</th><th>N</th><th>peak {label}</th><th>at step</th>"
        f"<th>values before onset</th><th class=l>onset</th></tr>{rows}</table>{few}"
    )


def _generation_table(an: Analysis) -> str:
    """τ_gen beside τ_mem: each one's exponents, and the ratio's (Bonnaire et al.: τ_gen ≈ constant)."""
    g = an.generation
    if g is None:
        return ""
    title = "<h3>τ<sub>gen</sub> beside τ<sub>mem</sub></h3>"
    if not g.n:
        return f"{title}<p>{escape(g.note)}</p>"
    rows = "".join(
        f"<tr><td class=l>{name}</td>{_axis_cells(f, an.axes, why)}</tr>"
        for name, f, why in (
            ("τ<sub>mem</sub>", an.joint, an.joint_note),
            ("τ<sub>gen</sub>", g.fit, g.note),
            ("τ<sub>mem</sub>/τ<sub>gen</sub>", g.ratio_fit, g.ratio_note),
        )
    )
    ratio = ""
    if g.ratio_median is not None:
        lo, hi = g.ratio_range
        ratio = (f"<p>τ<sub>mem</sub>/τ<sub>gen</sub> per trial (onset and τ<sub>gen</sub> observed): median"
                 f" {g.ratio_median:.3g}, range {lo:.3g} to {hi:.3g}.</p>")  # fmt: skip
    return (
        f"{title}<p>τ<sub>gen</sub>: {escape(g.definition)}; {g.n} trial(s) with {escape(fidelity_label(an.sweep))}.</p>"
        f"<table><tr><th class=l>time</th>{_axis_head(an.axes)}</tr>{rows}</table>{ratio}"
    )


def _replicates_table(an: Analysis) -> str:
    """τ_mem over the replicate seeds of each grid point."""
    if not an.replicates:
        return ""
    rows = "".join(
        f"<tr><td class=l>{escape(r.label)}</td><td>{r.n}</td><td>{r.n_onset}</td><td>{r.n_censored}</td>"
        f"<td>{'–' if r.mean is None else ('≥' if r.n_censored else '') + format(r.mean, '.4g')}</td>"
        f"<td>{fmt_num(r.sd, '.4g')}</td><td>{fmt_num(r.sd_log, '.3f')}</td>"
        f"<td class=l>{escape(', '.join('–' if x is None else str(x) for x in r.seeds))}</td></tr>"
        for r in an.replicates
    )
    pooled = ""
    if an.replicate_sigma is not None:
        sig = f"; the joint fit's σ = {an.joint.sigma:.3f}" if an.joint else ""
        pooled = f" Pooled sd of log τ within points: {an.replicate_sigma:.3f}{sig}."
    return (
        "<h3>Replicate seeds</h3><p>Trials sharing every setting but train.seed; each is one observation in the fits."
        " The mean is over every replicate, a censored one at its last step (≥: a lower bound); the sd over the"
        f" onsets.{pooled}</p><table><tr><th class=l>grid point</th><th>n</th><th>onsets</th><th>censored</th>"
        f"<th>mean τ<sub>mem</sub></th><th>sd</th><th>sd of log</th><th class=l>seeds</th></tr>{rows}</table>"
    )


def _definitions_table(an: Analysis) -> str:
    """The fit per onset definition recorded in trials.parquet, and each trial's τ by each."""
    if len(an.definitions) < 2:  # the stop rule's alone is the joint fit above
        return ""
    rows = "".join(
        f"<tr><td class=l>{escape(d.definition)}</td><td>{d.n_onset}</td><td>{d.n_censored}</td>"
        f"{_axis_cells(d.fit, an.axes, d.note)}</tr>"
        for d in an.definitions
    )
    out = (
        f"<h3>Onset definitions recorded by the sweep</h3><p>Each definition's column of trials.parquet, fitted"
        f" ({escape(an.censored_mode)}).</p><table><tr><th class=l>definition</th><th>onsets</th><th>censored</th>"
        f"{_axis_head(an.axes)}</tr>{rows}</table>"
    )
    ids = [s.trial_id for s in an.stats if any(s.trial_id in d.onsets or s.trial_id in d.censored for d in an.definitions)]
    if ids:
        cols = ["stop rule" if d.column == "tau_mem_step" else d.column.removeprefix("tau_mem_").removesuffix("_step")
                for d in an.definitions]  # fmt: skip
        head = "".join(f"<th>{escape(c)}</th>" for c in cols)
        body = "".join(
            f"<tr><td class=l>{_id(i)}</td>" + "".join(f"<td>{escape(d.cell(i))}</td>" for d in an.definitions) + "</tr>"
            for i in ids
        )
        out += (
            "<p>τ<sub>mem</sub> by definition, in steps (≥: measured but not fired by the trial's last step, a lower"
            f" bound; -: not measured).</p><table><tr><th class=l>trial</th>{head}</tr>{body}</table>"
        )
    return out


def _config_table(search_space: dict | None) -> str:
    """The sweep's search space as a table of dotted keys and their values (JSON)."""
    if not search_space:
        return "<p>(not recorded)</p>"
    rows = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k in sorted(value):
                walk(f"{prefix}.{k}" if prefix else str(k), value[k])
        else:
            rows.append(f"<tr><td class=l><code>{escape(prefix)}</code></td><td class=l>{escape(json.dumps(value))}</td></tr>")

    walk("", search_space)
    return "<table><tr><th class=l>key</th><th class=l>value</th></tr>" + "".join(rows) + "</table>"


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
    label = escape(fidelity_label(an.sweep))
    head = ("<tr><th class=l>trial</th><th>N</th><th>params</th><th>B</th><th>η</th><th class=l>status</th>"
            f"<th>τ<sub>mem</sub></th><th>T (normalized)</th><th>mem rate /1k steps</th><th>peak {label} @ step</th>"
            "<th>τ<sub>gen</sub></th></tr>")  # fmt: skip
    rows = []
    for s in an.stats:
        tau = f"&gt;{s.censor_step}" if s.state == "censored" else fmt_num(s.tau, ".4g")
        if s.mem_rate is not None:
            rate = fmt_num(s.mem_rate * 1000, ".3f")
        else:
            rate = f"<span class=muted>{escape(s.mem_rate_note)}</span>" if s.mem_rate_note else "-"
        peak = "-" if s.peak_fid is None else f"{fmt_num(s.peak_fid, '.2f')} <span class=muted>@&nbsp;{fmt_num(s.peak_fid_step)}</span>"
        gen = ("≥" if s.tau_gen_censored else "") + fmt_num(s.tau_gen)
        note = f"<br><span class=muted>{escape(s.reason)}</span>" if s.reason else ""
        rows.append(
            f"<tr class={s.state}><td class=l>{_id(s.trial_id)}</td><td>{fmt_num(s.n_train)}</td><td>{fmt_num(s.params)}</td>"
            f"<td>{fmt_num(s.batch_size)}</td><td class=v>{fmt_num(s.lr, '.1e')}</td><td class=l>{escape(s.status)}{note}</td>"
            f"<td>{tau}</td><td>{fmt_num(s.tau_normalized, '.4g')}</td><td>{rate}</td><td>{peak}</td><td>{gen}</td></tr>"
        )
    return "<table>" + head + "".join(rows) + "</table>"


def write_report(
    an: Analysis, figs: list[tuple[str, Path]], path: Path, text: str = "", notes: list[str] = (), sections: str = ""
) -> Path:
    """The page; `sections`: more HTML sections after the figures (analysis/images.py's)."""
    sw = an.sweep
    warn = "".join(f"<div class=warn>{escape(w)}</div>" for w in [*an.warnings, *notes])
    if sw.running:
        warn = f"<div class=warn>still running (not fitted): {escape(', '.join(sw.running))}</div>" + warn
    fig_html = "".join(
        f"<figure><img alt='{escape(p.name)}' src='{_img(p)}'><figcaption>{escape(p.name)}: {escape(cap)}</figcaption></figure>"
        for cap, p in figs
    )
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
{_fidelity_table(an)}
{_generation_table(an)}
{_replicates_table(an)}
{_definitions_table(an)}
{findings_section(an)}
<h2>Trials</h2>
{_trials_table(an)}
<h2>Figures</h2>
{fig_html or '<p>No figures: nothing to draw yet.</p>'}
{sections}
<h2>Sweep configuration</h2>
{_config_table(sw.search_space)}
<h2>Versions</h2>
<table>{versions or '<tr><td>(not recorded)</td></tr>'}<tr><td class=l>git commit</td><td class=l>{escape(sw.git_commit)}</td></tr></table>
<details><summary>Plain-text report</summary><pre>{escape(text)}</pre></details>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
