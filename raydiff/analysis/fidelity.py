"""Sample fidelity before memorization: what the `fid` column measures, and the paper's second
finding, that the best fidelity a trial reaches before its onset improves as N grows.

The `fid` column is a Fréchet distance in some extractor's features (the metrics rows'
`fid_extractor`, `<name>/<mode>`). Only in Inception features is it an FID, comparable with
published ones; on the digits it is the distance in a small digits classifier's features.
`fidelity_label` names it for what it is: "FID" for Inception, "FD (<extractor>)" otherwise,
e.g. "FD (digits classifier)". A folder that recorded no extractor keeps the column's name, "FID".

`fidelity_vs_n` takes, per finished trial on the N slice (the other varied axes at the sweep's
default point), the fidelity values at or before its onset (every value when it has none), their
lowest (TrialStats.peak_fid: lower is better) and their count, and asks whether the peak improves
with N: Spearman's ρ between N and the peak (negative: improves) over ≥ 3 trials (its p exact,
by permutations, up to 8 trials), a plain monotone check over 2. Pure computation; text.py prints it, figures.py draws it.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from raydiff.analysis.fits import SYMBOLS
from raydiff.analysis.trials import TrialStats, fmt_value
from raydiff.results_folder import Sweep

MIN_BEFORE_ONSET = 4  # fidelity values a trial should have before its onset for its peak to mean much


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def extractor_names(sweep: Sweep) -> list[str]:
    """The feature extractors (the name part of `fid_extractor`) of the rows that have a fidelity value."""
    names = set()
    for rows in sweep.evals.values():
        for r in rows:
            if _finite(r.get("fid")) and r.get("fid_extractor"):
                names.add(str(r["fid_extractor"]).split("/", 1)[0])
    return sorted(names)


def extractor_label(name: str | None) -> str:
    """"FID" for Inception features (or an unrecorded extractor), "FD (<name>)" for any other."""
    if not name or name.lower().startswith("inception"):
        return "FID"
    return f"FD ({name.replace('_', ' ')})"


def fidelity_label(sweep: Sweep) -> str:
    """What the sweep's `fid` values are, for axis labels, legends, headings and report text:
    "FID" (Inception), "FD (digits classifier)", …; several extractors: "FD (a / b)"."""
    names = extractor_names(sweep)
    if len(names) <= 1:
        return extractor_label(names[0] if names else None)
    if all(extractor_label(n) == "FID" for n in names):
        return "FID"
    return "FD (" + " / ".join(n.replace("_", " ") for n in names) + ")"


def before_onset(rows: list[dict], s: TrialStats) -> list[tuple[int, float]]:
    """(step, value) of the trial's fidelity values at or before its onset (all of them without
    one): the same evaluations TrialStats.peak_fid is the lowest of."""
    onset = s.tau if s.state in ("onset", "running") else None
    return [(int(r["step"]), float(r["fid"])) for r in rows
            if _finite(r.get("fid")) and (onset is None or r["step"] <= onset)]  # fmt: skip


@dataclass(frozen=True)
class FidelityPoint:
    trial_id: str
    n_train: int
    state: str  # onset | censored (censored: no onset, the values are every evaluation's)
    tau: float | None
    count: int  # fidelity values at or before the onset
    peak: float | None  # the lowest of them (TrialStats.peak_fid)
    peak_step: int | None


@dataclass(frozen=True)
class FidelityVsN:
    label: str  # fidelity_label: "FID", "FD (digits classifier)", …
    points: list[FidelityPoint]  # the trials on the N slice, in order of N
    where: str  # the slice: the other axes' values ("" when N is the only axis varied)
    rho: float | None  # Spearman ρ(N, peak); negative: lower (better) peaks at larger N
    p: float | None
    method: str  # spearman | monotone | "" (no verdict)
    improves: bool | None  # None: cannot tell (note says why)
    note: str = ""
    extractors: list[str] = field(default_factory=list)

    @property
    def measured(self) -> list[FidelityPoint]:
        return [p for p in self.points if p.peak is not None]

    @property
    def few(self) -> list[FidelityPoint]:
        """Trials with fewer than MIN_BEFORE_ONSET fidelity values before their onset."""
        return [p for p in self.points if p.count < MIN_BEFORE_ONSET]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["min_before_onset"] = min((p.count for p in self.points), default=None)
        return d


def n_slice(stats: list[TrialStats], axes: list[str], reference: dict[str, float]) -> tuple[list[TrialStats], str]:
    """The finished trials along N: the other varied axes at the default point when that leaves
    two or more N, else every finished trial (and a word on which)."""
    done = [s for s in stats if s.state in ("onset", "censored") and s.n_train]
    others = [o for o in axes if o != "n_train"]
    if not others:
        return done, ""
    ref = {o: reference.get(o) for o in others}
    sl = [s for s in done if all(ref[o] is not None and s.value(o) is not None and np.isclose(s.value(o), ref[o]) for o in others)]
    if len({s.n_train for s in sl}) >= 2:
        return sl, ", ".join(f"{SYMBOLS[o]}={fmt_value(o, ref[o])}" for o in others)
    return done, "all finished trials, the other axes mixed"


EXACT_P_MAX = 8  # up to this many trials, Spearman's p by enumerating every permutation (8! = 40320)


def exact_p(x: list[float], y: list[float], rho: float) -> float:
    """Two-sided permutation p of Spearman's ρ: the share of orderings of y whose |ρ| is at least
    the observed one (ties take average ranks)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    perms = np.array(list(itertools.permutations(ry - ry.mean())))  # [n!, n]
    r = perms @ rx / np.linalg.norm(ry - ry.mean())
    return float(np.mean(np.abs(r) >= abs(rho) - 1e-9))


def fidelity_vs_n(sweep: Sweep, stats: list[TrialStats], axes: list[str], reference: dict[str, float]) -> FidelityVsN:
    label = fidelity_label(sweep)
    trials, where = n_slice(stats, axes, reference)
    points = []
    for s in sorted(trials, key=lambda s: (s.n_train, s.trial_id)):
        vals = before_onset(sweep.evals.get(s.trial_id, []), s)
        points.append(FidelityPoint(s.trial_id, int(s.n_train), s.state, s.tau, len(vals), s.peak_fid, s.peak_fid_step))
    measured = [p for p in points if p.peak is not None]
    rho = pval = None
    method, improves, note = "", None, ""
    n_vals = {p.n_train for p in measured}
    if not measured:
        note = f"no {label} measured before any onset"
    elif len(n_vals) < 2:
        note = "N does not vary among the trials with a value"
    elif len(measured) >= 3:
        from scipy.stats import spearmanr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant input: ρ is undefined (NaN), said below
            res = spearmanr([p.n_train for p in measured], [p.peak for p in measured])
        r, pv = float(res[0]), float(res[1])
        if math.isfinite(r) and len(measured) <= EXACT_P_MAX:  # the t approximation says p = 0 at |ρ| = 1
            pv = exact_p([p.n_train for p in measured], [p.peak for p in measured], r)
        if math.isfinite(r):
            rho, pval, method, improves = r, (pv if math.isfinite(pv) else None), "spearman", r < 0
        else:
            note = f"every trial's peak {label} is the same"
    else:  # two trials at two N: does the larger N have the lower (better) peak?
        a, b = sorted(measured, key=lambda p: p.n_train)
        method, improves = "monotone", b.peak < a.peak
    return FidelityVsN(label, points, where, rho, pval, method, improves, note, extractor_names(sweep))
