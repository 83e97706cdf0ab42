"""Measures from outside the package: `RAYDIFF_MEASURES` names modules (comma-separated, importable
on every node) whose `@register`ed classes join the registry in every process that loads it — the
driver, each Ray worker, `raydiff analyze` — so a new measure needs no edit of raydiff itself."""

from __future__ import annotations

import importlib
import os

ENV = "RAYDIFF_MEASURES"


def load_plugins() -> tuple[str, ...]:
    """Import the modules `RAYDIFF_MEASURES` names; an import that fails is one clear error."""
    names = tuple(n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure of someone else's module is theirs, said in one line
            from raydiff.errors import UserError

            raise UserError(f"{ENV}: cannot import {name!r} ({type(e).__name__}: {e})") from None
    return names
