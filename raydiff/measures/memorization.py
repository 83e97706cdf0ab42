"""Memorization tests as measures: per generated sample, a verdict (copy or not), its nearest
training image and the score the verdict thresholds. The evaluation runs every memorization test
of a trial on the same samples, in the sequential test's rounds (raydiff/evaluation.py), and
writes each test's fraction with its exact 95% interval as `<prefix>`, `<prefix>_lo`, `<prefix>_hi`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from raydiff.measures.base import Column, Measure


@dataclass(frozen=True)
class Verdicts:
    """One test's answer on S samples (torch tensors on the CPU)."""

    copied: Any  # bool [S]: the sample is a copy by this test
    nearest: Any  # int64 [S]: index of its nearest training image in this test's space
    score: Any  # float [S]: what the verdict thresholds (a distance ratio, a cosine similarity)


class MemorizationTest(Measure):
    """A per-sample copy test. Subclasses set `name`, `prefix`, `needs`, `threshold` (+ source)
    and implement `verdicts(ctx, samples)`; the fraction columns and the onset follow."""

    kind: ClassVar[str] = "memorization"
    onset: ClassVar[str | None] = "ratio"
    prefix: ClassVar[str]  # the metric columns' stem: mem_frac, mem_frac_features, …
    score_name: ClassVar[str]  # the per-sample score, as the ledger names it

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "prefix" in cls.__dict__:
            cls.columns = tuple(Column(cls.prefix + s) for s in ("", "_lo", "_hi"))
            cls.history = (cls.prefix,)

    def verdicts(self, ctx: Any, samples: Any) -> Verdicts:  # pragma: no cover - each test implements it
        raise NotImplementedError(type(self).__name__)

    def compute(self, ctx: Any) -> dict[str, Any]:
        """The fraction of copies among the context's samples, with its Clopper–Pearson interval."""
        from raydiff.metrics.memorization import fraction_with_interval

        frac = fraction_with_interval(self.verdicts(ctx, ctx.samples).copied)
        return {self.prefix: frac.value, f"{self.prefix}_lo": frac.lo, f"{self.prefix}_hi": frac.hi}
