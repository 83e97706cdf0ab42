"""Test helper: where the repository is, for test files at any depth under tests/ (`from paths import ROOT`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # tests/.. : the repository root
