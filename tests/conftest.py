"""Shared test setup: a private cache per session (no network, nothing in the user's home)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _raydiff_cache(tmp_path_factory):
    os.environ.setdefault("RAYDIFF_CACHE", str(tmp_path_factory.mktemp("raydiff-cache")))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    yield
