"""Measures: what raydiff can measure of a model, one class each behind one registry (base.py).

Importing this package registers the built-in measures. Ask the registry (`names`, `get`,
`definitions`, `iter_columns`) rather than listing measure names anywhere else.
"""

# registration order is the order of columns and definitions: the pixel test first (the primary)
from raydiff.measures import pixel, cosine, networks, loss, fidelity  # noqa: F401, I001  (registers the built-in measures)
from raydiff.measures.base import (
    KINDS, ONSET_RULES, RAW, REGISTRY, Column, Definition, Measure, definition, definition_names, definitions, get,
    iter_columns, names, raw_column, register, series_of,
)  # fmt: skip
from raydiff.measures.memorization import MemorizationTest, Verdicts
from raydiff.measures.plugins import load_plugins

load_plugins()  # measures registered by modules outside the package (RAYDIFF_MEASURES)

__all__ = [
    "KINDS", "ONSET_RULES", "RAW", "REGISTRY", "Column", "Definition", "Measure", "MemorizationTest", "Verdicts",
    "definition", "definition_names", "definitions", "get", "iter_columns", "names", "raw_column", "register",
    "series_of",
]  # fmt: skip
