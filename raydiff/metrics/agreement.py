"""Agreement between memorization tests on the same samples: Cohen's κ of their verdicts.

Pure numpy, so the evaluation can record κ per evaluation (`pairwise_kappa` of its tests'
`Verdicts.copied`) and the analysis can recompute it from the ledger (analysis/images.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cohen_kappa", "pairwise_kappa"]


def cohen_kappa(a: Any, b: Any) -> float:
    """Cohen's κ of two tests' verdicts on the same samples (bool [S]): (p_o − p_e) / (1 − p_e),
    p_o the observed agreement, p_e the agreement expected from each test's own rate. 1 when they
    agree on every sample; NaN when p_e = 1 (both call every sample the same), where κ is undefined."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two verdict vectors of one length (got {a.shape} and {b.shape})")
    if len(a) == 0:
        return float("nan")
    po = float((a == b).mean())
    pa, pb = a.mean(), b.mean()
    pe = float(pa * pb + (1 - pa) * (1 - pb))
    return float("nan") if pe >= 1.0 else (po - pe) / (1.0 - pe)


def pairwise_kappa(copied: dict[str, Any]) -> dict[tuple[str, str], float]:
    """κ for every pair of tests run on one evaluation's samples ({test: bool [S]})."""
    names = list(copied)
    return {(x, y): cohen_kappa(copied[x], copied[y]) for i, x in enumerate(names) for y in names[i + 1 :]}
