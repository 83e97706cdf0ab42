"""The papers' published findings, each stated for one sweep: its statistic, interval and verdict.

One small function per finding, registered in FINDINGS with the paper and the claim; `evaluate`
runs them on an analysis and says, for each, whether the sweep reproduces it, contradicts it, is
inconclusive (the interval reaches both sides) or cannot test it (and why: an axis not varied, a
quantity not measured, too few trials). Pure computation over the analysis's fits and per-trial
statistics; text.py, report.py and html.py print it.

Marion & Wu (2026): the curves collapse under normalized time for N and for B but not for η; the
memorization rate (the SSCD score's slope after onset) falls with N and is flat in B; peak
fidelity (the lowest SWD before τ_mem, FID where no SWD is measured) improves with N, with P,
with smaller B and with larger η; larger models memorize sooner; train and test distributional
distances are nearly equal; SWD and FID descend, rise and descend again (double descent). Each
statistic names the fidelity metric as analysis.fidelity.fidelity_label does (FID only in
Inception features).
Bonnaire et al. (2025): τ_mem ∝ n, τ_gen ≈ constant in n, τ_mem falls with the U-Net's width.

Collapse along an axis a is measured by r = |s − e| / |s|: s is τ_mem's exponent on a (the joint
fit's), e the normalized time's (T = τ·(N_min/N)·(B/B_min)·(η/η_min): e = 1 for N, −1 for B and η).
r is the spread of log T over log τ along a: 0 when T is flat (full collapse), 1 when normalizing
removes nothing. Collapse is read as r < ½ (normalizing removes more than half the spread),
no collapse as r > ½, each with the bootstrap interval wholly on its side.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from raydiff.analysis.fidelity import fidelity_label
from raydiff.analysis.fits import SYMBOLS, PowerLawFit, fit_power_law
from raydiff.analysis.trials import TrialStats
from raydiff.metrics.memorization import clopper_pearson

if typing.TYPE_CHECKING:  # annotations only: scaling imports this module
    from raydiff.analysis.scaling import Analysis

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not testable")
MARION, BONNAIRE = "Marion & Wu (2026)", "Bonnaire et al. (2025)"
PAPER_SPACES = {"marion2026_cifar10": MARION, "bonnaire2025": BONNAIRE}  # a paper's space shows all its rows
COLLAPSE_EXPONENT = {"n_train": 1.0, "batch_size": -1.0, "lr": -1.0}  # τ's exponent at which T is flat
COLLAPSE_R = 0.5
NEARLY_EQUAL = 0.10  # train and test distances within 10% of each other
BUMP_SIGMAS = 3.0  # a rise beyond the noise: 3 noise sds above the minimum before it and the one after it
MIN_CURVE = 6  # fidelity values a trial needs for the double-descent test


@dataclass(frozen=True)
class Finding:
    paper: str
    claim: str
    statistic: str  # what was measured
    value: float | None
    lo: float | None
    hi: float | None
    verdict: str  # one of VERDICTS
    why: str  # what the verdict rests on

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    statistic: str
    value: float | None = None
    lo: float | None = None
    hi: float | None = None
    verdict: str = "not testable"
    why: str = ""


def untestable(statistic: str, why: str) -> Outcome:
    return Outcome(statistic, verdict="not testable", why=why)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def side(statistic: str, value: float, lo: float, hi: float, *, below: float | None = None, above: float | None = None) -> Outcome:
    """The claim is `statistic < below` (or `> above`): reproduced when the interval lies wholly on
    the claim's side, contradicted when wholly on the other, inconclusive when it reaches both."""
    if not (_finite(lo) and _finite(hi)):
        return Outcome(statistic, value, None, None, "not testable", "no interval (too few usable bootstrap resamples)")
    bound, want_below = (below, True) if below is not None else (above, False)
    inside = hi < bound if want_below else lo > bound
    outside = lo > bound if want_below else hi < bound
    rel = "<" if want_below else ">"
    if inside:
        return Outcome(statistic, value, lo, hi, "reproduced", f"the interval lies wholly {rel} {bound:g}")
    if outside:
        return Outcome(statistic, value, lo, hi, "contradicted", f"the interval lies wholly on the other side of {bound:g}")
    return Outcome(statistic, value, lo, hi, "inconclusive", f"the interval reaches both sides of {bound:g}")


def covers(statistic: str, value: float, lo: float, hi: float, target: float) -> Outcome:
    """The claim is `statistic = target`: reproduced when the interval covers it."""
    if not (_finite(lo) and _finite(hi)):
        return Outcome(statistic, value, None, None, "not testable", "no interval (too few usable bootstrap resamples)")
    if lo <= target <= hi:
        return Outcome(statistic, value, lo, hi, "reproduced", f"the interval covers {target:g} (width {hi - lo:.2g})")
    return Outcome(statistic, value, lo, hi, "contradicted", f"the interval excludes {target:g}")


def _coef(fit: PowerLawFit | None, axis: str) -> tuple[float, float, float] | None:
    if fit is None or axis not in fit.axes:
        return None
    c = fit.coef(axis)
    return c.value, c.lo, c.hi


def _exponent_claim(an: "Analysis", axis: str, sym: str, *, below: float | None = None, equals: float | None = None) -> Outcome:
    """A claim on τ_mem's exponent on `axis` in the joint fit: below a bound, or equal to a value."""
    stat = f"{sym} ({SYMBOLS[axis]}) of τ_mem [{an.headline}]"
    if axis not in an.axes:
        return untestable(stat, f"the sweep does not vary {SYMBOLS[axis]}")
    c = _coef(an.joint, axis)
    if c is None:
        return untestable(stat, an.joint_note or "no joint fit")
    return covers(stat, *c, equals) if equals is not None else side(stat, *c, below=below)


# --------------------------------------------------------------------------- Marion & Wu


def collapse(axis: str, collapses: bool) -> Callable[["Analysis", int], Outcome]:
    def run(an: "Analysis", n_boot: int) -> Outcome:
        stat = f"r = |s − e|/|s| along {SYMBOLS[axis]} (spread of log T over log τ)"
        if axis not in an.axes:
            return untestable(stat, f"the sweep does not vary {SYMBOLS[axis]}")
        if an.joint is None:
            return untestable(stat, an.joint_note or "no joint fit")
        e = COLLAPSE_EXPONENT[axis]
        j = 1 + an.joint.axes.index(axis)
        s = an.joint.coef(axis).value
        draws = an.joint.boot[:, j]
        r = abs(s - e) / max(abs(s), 1e-12)
        if an.joint.boot_unreliable or not np.isfinite(draws).all():
            return Outcome(stat, r, None, None, "not testable", "no interval (too few usable bootstrap resamples)")
        rd = np.abs(draws - e) / np.maximum(np.abs(draws), 1e-12)
        lo, hi = (float(v) for v in np.quantile(rd, [0.025, 0.975]))
        return side(stat, r, lo, hi, below=COLLAPSE_R) if collapses else side(stat, r, lo, hi, above=COLLAPSE_R)

    return run


def _axis_fit(an: "Analysis", value: Callable[[TrialStats], float | None], axis: str, n_boot: int, what: str) -> tuple[PowerLawFit | None, str]:
    """log(value) on the joint fit's axes, over the trials that have a positive value (least
    squares, replicates resampled together)."""
    rows = [s for s in an.stats if s.state in ("onset", "censored") and _finite(value(s)) and value(s) > 0]
    axes = [a for a in an.axes if len({s.value(a) for s in rows}) > 1]
    if axis not in axes:
        return None, f"the trials with a {what} do not vary {SYMBOLS[axis]} ({len(rows)} trials)"
    try:
        fit = fit_power_law(
            {a: np.array([s.value(a) for s in rows], float) for a in axes}, np.array([value(s) for s in rows], float),
            target=what, n_boot=n_boot, trials=[s.trial_id for s in rows], groups=[s.point or s.trial_id for s in rows],
        )  # fmt: skip
    except ValueError as e:
        return None, str(e)
    return fit, ""


def _rate(s: TrialStats) -> float | None:
    return s.mem_rate


def _peak(s: TrialStats) -> float | None:
    return s.peak_swd if s.peak_swd is not None else s.peak_fid


def rate_claim(axis: str, flat: bool) -> Callable[["Analysis", int], Outcome]:
    def run(an: "Analysis", n_boot: int) -> Outcome:
        series = {s.mem_rate_series for s in an.stats if s.mem_rate is not None}
        name = "SSCD score" if series == {"mem_frac_features"} else "mem_frac"
        stat = f"exponent of the memorization rate ({name}'s slope after onset) on {SYMBOLS[axis]}"
        fit, why = _axis_fit(an, _rate, axis, n_boot, "memorization rate")
        if fit is None:
            return untestable(stat, why)
        c = _coef(fit, axis)
        return covers(stat, *c, 0.0) if flat else side(stat, *c, below=0.0)

    return run


def peak_claim(axis: str, sign: str) -> Callable[["Analysis", int], Outcome]:
    """Peak fidelity improves (its distance falls) with the axis (sign "-") or against it ("+")."""

    def run(an: "Analysis", n_boot: int) -> Outcome:
        swd = any(s.peak_swd is not None for s in an.stats)
        stat = f"exponent of peak fidelity (lowest {'SWD' if swd else fidelity_label(an.sweep)} before τ_mem) on {SYMBOLS[axis]}"
        fit, why = _axis_fit(an, _peak, axis, n_boot, "peak fidelity")
        if fit is None:
            return untestable(stat, why)
        c = _coef(fit, axis)
        return side(stat, *c, below=0.0) if sign == "-" else side(stat, *c, above=0.0)

    return run


def larger_memorize_sooner(an: "Analysis", n_boot: int) -> Outcome:
    return _exponent_claim(an, "params", "δ", below=0.0)


def train_test_equal(an: "Analysis", n_boot: int) -> Outcome:
    """Median over trials of the median relative gap |FID_train − FID_test| / FID_test over the
    evaluations before onset; interval: a percentile bootstrap over the trials."""
    fd = fidelity_label(an.sweep)
    stat = f"median |{fd}_train − {fd}_test| / {fd}_test before τ_mem"
    refs = {str(r.get("fid_reference") or "") for rows in an.sweep.evals.values() for r in rows if _finite(r.get("fid_train"))}
    if any("cleanfid:" in ref.split("train=")[-1].split(";")[0] for ref in refs if "train=" in ref):
        return untestable(stat, "fid_train compares with clean-fid's statistics of the whole training split, not the N training images")
    gaps = []
    for s in an.stats:
        rows = an.sweep.evals.get(s.trial_id, [])
        g = [abs(r["fid_train"] - r["fid"]) / r["fid"] for r in rows
             if _finite(r.get("fid_train")) and _finite(r.get("fid")) and r["fid"] > 0 and (s.tau is None or r["step"] <= s.tau)]  # fmt: skip
        if g:
            gaps.append(float(np.median(g)))
    if len(gaps) < 3:
        return untestable(stat, f"{len(gaps)} trial(s) measured {fd} on both splits: at least 3 are needed")
    rng = np.random.default_rng(0)
    boots = [np.median(rng.choice(gaps, len(gaps))) for _ in range(1000)]
    lo, hi = (float(v) for v in np.quantile(boots, [0.025, 0.975]))
    return side(stat, float(np.median(gaps)), lo, hi, below=NEARLY_EQUAL)


def has_double_descent(values: list[float]) -> bool:
    """A fall, a rise and a fall again, each beyond the noise: some value stands BUMP_SIGMAS noise
    sds above both the lowest value before it and the lowest after it. The noise sd is the
    residuals' from a running median of 3 (MAD, scaled), at least 1% of the median value."""
    f = np.asarray(values, float)
    if len(f) < MIN_CURVE:
        return False
    med3 = np.array([np.median(f[max(0, i - 1) : i + 2]) for i in range(len(f))])
    sd = max(1.4826 * float(np.median(np.abs(f - med3))), 0.01 * float(np.median(np.abs(f))))
    for j in range(1, len(f) - 1):
        if f[j] - f[:j].min() > BUMP_SIGMAS * sd and f[j] - f[j + 1 :].min() > BUMP_SIGMAS * sd:
            return True
    return False


def double_descent(an: "Analysis", n_boot: int) -> Outcome:
    stat = "fraction of trials whose fidelity curve falls, rises and falls again beyond its noise"
    curves = []
    for s in an.stats:
        rows = sorted(an.sweep.evals.get(s.trial_id, []), key=lambda r: r["step"])
        col = "sliced_wasserstein" if any(_finite(r.get("sliced_wasserstein")) for r in rows) else "fid"
        vals = [r[col] for r in rows if _finite(r.get(col))]
        if len(vals) >= MIN_CURVE:
            curves.append(has_double_descent(vals))
    if len(curves) < 3:
        return untestable(stat, f"{len(curves)} trial(s) with ≥ {MIN_CURVE} fidelity values: at least 3 are needed")
    k = sum(curves)
    lo, hi = clopper_pearson(k, len(curves))
    out = side(stat, k / len(curves), lo, hi, above=0.5)
    return Outcome(out.statistic, out.value, out.lo, out.hi, out.verdict, f"{k} of {len(curves)} trials; {out.why}")


# ---------------------------------------------------------------------------- Bonnaire


def tau_mem_linear_in_n(an: "Analysis", n_boot: int) -> Outcome:
    return _exponent_claim(an, "n_train", "α", equals=1.0)


def tau_gen_constant(an: "Analysis", n_boot: int) -> Outcome:
    stat = "α_gen (N) of τ_gen"
    if "n_train" not in an.axes:
        return untestable(stat, "the sweep does not vary N")
    gen = an.generation
    if gen is None or gen.fit is None:
        return untestable(stat, (gen.note if gen else "") or "no τ_gen fit (no fidelity measured)")
    c = _coef(gen.fit, "n_train")
    if c is None:
        return untestable(stat, "the trials with a τ_gen do not vary N")
    return covers(stat, *c, 0.0)


def tau_mem_falls_with_width(an: "Analysis", n_boot: int) -> Outcome:
    return _exponent_claim(an, "params", "δ", below=0.0)


# the registry: (paper, claim, function); `evaluate` runs them in this order
FINDINGS: list[tuple[str, str, Callable[["Analysis", int], Outcome]]] = [
    (MARION, "curves collapse under normalized time for N", collapse("n_train", True)),
    (MARION, "curves collapse under normalized time for B", collapse("batch_size", True)),
    (MARION, "curves do not collapse under normalized time for η", collapse("lr", False)),
    (MARION, "the memorization rate falls with N", rate_claim("n_train", flat=False)),
    (MARION, "the memorization rate is flat in B", rate_claim("batch_size", flat=True)),
    (MARION, "peak fidelity improves with N", peak_claim("n_train", "-")),
    (MARION, "peak fidelity improves with P", peak_claim("params", "-")),
    (MARION, "peak fidelity improves with smaller B", peak_claim("batch_size", "+")),
    (MARION, "peak fidelity improves with larger η", peak_claim("lr", "-")),
    (MARION, "larger models memorize sooner", larger_memorize_sooner),
    (MARION, "train and test distributional distances are nearly equal", train_test_equal),
    (MARION, "the fidelity distances (SWD, Fréchet) descend, rise and descend again in training", double_descent),
    (BONNAIRE, "τ_mem ∝ n", tau_mem_linear_in_n),
    (BONNAIRE, "τ_gen ≈ constant in n", tau_gen_constant),
    (BONNAIRE, "τ_mem falls with the U-Net's width", tau_mem_falls_with_width),
]


def space_paper(an: "Analysis") -> str | None:
    """The paper whose space the sweep ran (by the space's name), None for any other space."""
    name = ((an.sweep.search_space or {}).get("sweep") or {}).get("name")
    return PAPER_SPACES.get(str(name)) if name else None


def evaluate(an: "Analysis", n_boot: int = 500) -> list[Finding]:
    """Every finding on this sweep. A paper's own space shows all of its rows (the untestable
    ones with the reason); any other sweep, the rows of either paper it can test."""
    paper = space_paper(an)
    out = []
    for who, claim, run in FINDINGS:
        if paper is not None and who != paper:
            continue
        o = run(an, n_boot)
        if paper is None and o.verdict == "not testable":
            continue
        out.append(Finding(who, claim, o.statistic, o.value, o.lo, o.hi, o.verdict, o.why))
    return out


__all__ = ["FINDINGS", "Finding", "VERDICTS", "evaluate", "has_double_descent"]
