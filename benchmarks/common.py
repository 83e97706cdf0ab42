"""What every benchmark shares: the machine's description, side-by-side timing, configs, results.

This machine may be shared with other jobs, so absolute times mean little: every figure that
matters is a ratio of two things measured in the same run, their repetitions alternated (A B B A
A B ...) so that a change of load hits both sides alike, and each side summarised by its median.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from raydiff.config import ExperimentConfig, SearchSpace, apply_overrides, load_search_space, packaged_search_space

# The embedded default's evaluation settings before this benchmark suite's speed-ups (commit
# fbb2353's default.yaml plus the then defaults): what the "before" columns run. The "after"
# columns run the packaged default as it is now.
BEFORE_EVAL = {
    "eval.every_steps": 50,
    "eval.cadence": "geometric",
    "eval.geometric_ratio": 1.2,
    "eval.refine_snapshots": 0,
    "eval.mem_sample_steps": None,  # = diffusion.sample_steps (25)
    "eval.fid_every": 4,
    "eval.approach_fraction": None,  # issue 15's: evaluations every 100 steps once an onset is in sight
    "eval.sequential_round": None,  # issue 15's: the sequential memorization test
}


@dataclass
class Section:
    """One benchmark's outcome: a headline ratio against its goal, a table, notes."""

    key: str  # "1" … "7"
    title: str
    goal: str  # e.g. "≥ 0.97"
    headline: str  # the measured figure, in words
    met: bool | None  # None: not judged (e.g. --quick sizes)
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average before and after
    data: dict[str, Any] = field(default_factory=dict)  # raw figures, for the JSON dump


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def alternate(sides: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[Any]]:
    """Run each side `reps` times, alternating the order every round (A B, B A, A B, …) so a
    trend in the machine's load is shared; returns each side's results in run order."""
    out: dict[str, list[Any]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(sides[name]())
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def default_space() -> SearchSpace:
    return load_search_space(packaged_search_space("default"))


def smoke_space() -> SearchSpace:
    return load_search_space(packaged_search_space("smoke"))


def config(space: SearchSpace, overrides: dict[str, Any]) -> ExperimentConfig:
    return apply_overrides(space.base, overrides)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)
