"""The registry of measures: one small class per thing raydiff can measure of a model.

A measure says what it is (`name`, `kind`), what it needs (generated samples, the probes, a
feature network to prestage), the metric columns it writes, what one generated sample costs it
in FLOPs (the dry run's cost model reads this), and whether — and by which rule — it defines a
memorization onset. Everything else (config checks, the stop rule's series, the history the
onset rules read, the Parquet columns, τ per definition in trials.parquet, the analysis's fits per
definition, preflight's prestaging) asks this registry; no other module lists measure names.

This module and the measure modules import only the standard library at module level (the config
layer reads the registry, and `import raydiff.config` loads no torch); what a measure computes
with torch is imported inside `compute`.

Adding a measure is one module with one `@register`ed class (see `pixel.py` for a memorization
test, `loss.py` for a loss onset, `fidelity.py` for a figure), imported by `raydiff/measures/__init__`
— or, from outside the package, by the code that uses it (a test registers its own).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

KINDS = ("memorization", "loss", "fidelity")  # a per-sample copy test | a denoising-loss probe | a figure of fidelity
ONSET_RULES = ("ratio", "loss_divergence")  # metrics/onset.mem_onset | metrics/onset.loss_divergence_onset
RAW = "_raw"  # a memorization test on the raw (non-EMA) weights is the definition "<name>_raw"


@dataclass(frozen=True)
class Column:
    """One metric column a measure writes: its name and its Arrow type's name (pyarrow's)."""

    name: str
    type: str = "float64"  # float64 | int64 | string


class Measure:
    """One measure. Subclasses set the class attributes and implement `compute`.

    `compute(ctx)` is called once per evaluation that runs the measure, with an evaluation
    context (raydiff/evaluation.py: `MeasureContext`) that holds the evaluated network's samples,
    their pixel neighbours, the probes and the loaded feature networks; it returns the metric
    columns it names (a memorization test returns its per-sample verdicts too, see `Verdicts`).
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # one of KINDS
    description: ClassVar[str]
    label: ClassVar[str] = ""  # a short name for tables ("pixel ratio test"); empty: the name
    fraction_label: ClassVar[str] = ""  # a memorization test's fraction in tables ("SSCD mem_frac"); empty: from label
    columns: ClassVar[tuple[Column, ...]] = ()
    # what a trial must hold for it: "samples" (generated images), "probes" (fixed train/test
    # images at fixed noise), or a feature network's name (FEATURE_NETWORKS in metrics/features.py)
    needs: ClassVar[tuple[str, ...]] = ()
    onset: ClassVar[str | None] = None  # one of ONSET_RULES, or None: it defines no onset
    # the history field(s) per evaluation the onset rule reads (a ratio test: its mem_frac column)
    history: ClassVar[tuple[str, ...]] = ()
    threshold: ClassVar[float | None] = None  # a memorization test's conventional threshold
    threshold_source: ClassVar[str] = ""  # where that convention comes from
    flops_per_sample: ClassVar[float] = 0.0  # feature network FLOPs per generated image (cost model)
    raw_variant: ClassVar[bool] = False  # "<name>_raw" tests the raw weights when the EMA is evaluated

    def compute(self, ctx: Any) -> dict[str, Any]:  # pragma: no cover - every measure implements it
        raise NotImplementedError(type(self).__name__)

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        return tuple(c.name for c in cls.columns)


REGISTRY: dict[str, type[Measure]] = {}


def register(cls: type[Measure]) -> type[Measure]:
    """Class decorator: add a measure to the registry (its name must be new and well formed)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or name.endswith(RAW):
        raise ValueError(f"a measure's name must be an identifier not ending in {RAW!r} (got {name!r})")
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise ValueError(f"a measure named {name!r} is registered already ({REGISTRY[name].__module__})")
    if cls.kind not in KINDS:
        raise ValueError(f"{name}: kind must be one of {', '.join(KINDS)} (got {cls.kind!r})")
    if cls.onset is not None and (cls.onset not in ONSET_RULES or not cls.history):
        raise ValueError(f"{name}: an onset rule must be one of {', '.join(ONSET_RULES)} and name its history fields")
    REGISTRY[name] = cls
    return cls


def get(name: str) -> type[Measure]:
    return REGISTRY[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered measures (of one kind), in registration order."""
    return tuple(n for n, m in REGISTRY.items() if kind is None or m.kind == kind)


@dataclass(frozen=True)
class Definition:
    """An onset definition: a measure with an onset rule, on the evaluated or the raw weights."""

    name: str  # the measure's name, or "<name>_raw"
    measure: str
    raw: bool

    @property
    def series(self) -> tuple[str, ...]:
        """The report's history list(s) the rule reads: one per history field."""
        if self.raw:
            return (f"history_{self.name}",)
        m = REGISTRY[self.measure]
        return (f"history_{self.name}",) if m.onset == "ratio" else tuple(f"history_{h}" for h in m.history)

    @property
    def rule(self) -> str:
        return REGISTRY[self.measure].onset

    @property
    def tau_column(self) -> str:
        return f"tau_mem_{self.name}_step"

    @property
    def field(self) -> str:
        """The history field a ratio rule reads (a raw variant's column for the raw weights)."""
        m = REGISTRY[self.measure]
        return raw_column(m.history[0]) if self.raw else m.history[0]

    @property
    def label(self) -> str:
        m = REGISTRY[self.measure]
        return (m.label or m.name) + (", raw weights" if self.raw else "")


def definitions() -> tuple[Definition, ...]:
    """Every onset definition the registry offers: the memorization tests, then the raw-weights
    variants of those that have one, then the other onset rules (the loss divergence)."""
    tests = [n for n, m in REGISTRY.items() if m.onset and m.kind == "memorization"]
    out = [Definition(n, n, False) for n in tests]
    out += [Definition(n + RAW, n, True) for n in tests if REGISTRY[n].raw_variant]
    out += [Definition(n, n, False) for n, m in REGISTRY.items() if m.onset and m.kind != "memorization"]
    return tuple(out)


def definition(name: str) -> Definition:
    for d in definitions():
        if d.name == name:
            return d
    raise KeyError(name)


def definition_names() -> tuple[str, ...]:
    return tuple(d.name for d in definitions())


def iter_columns() -> Iterator[Column]:
    """Every metric column of every registered measure (a raw variant's too), in order."""
    for m in REGISTRY.values():
        yield from m.columns
        if m.raw_variant:
            yield from (Column(raw_column(c.name), c.type) for c in m.columns if c.name.startswith("mem_frac"))


def raw_column(column: str) -> str:
    """A memorization column's name for the raw weights: mem_frac → mem_frac_raw, mem_frac_x_lo → mem_frac_x_raw_lo."""
    for tail in ("_lo", "_hi"):
        if column.endswith(tail):
            return column[: -len(tail)] + RAW + tail
    return column + RAW


def series_of(history: list[Mapping[str, Any]], d: Definition) -> dict[str, list]:
    """A definition's history lists, keyed as the report carries them."""
    if d.raw:
        return {d.series[0]: [h.get(raw_column(REGISTRY[d.measure].history[0])) for h in history]}
    fields = REGISTRY[d.measure].history
    return {key: [h.get(f) for h in history] for key, f in zip(d.series, fields)}
