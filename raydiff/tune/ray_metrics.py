"""raydiff's own numbers in Ray's metrics: one gauge per quantity, tagged by sweep and trial.

Ray exports application metrics from every node in Prometheus format; the dashboard's Metrics
view shows them once Prometheus (and Grafana) scrape the cluster:

    ray metrics launch-prometheus            # scrapes the local cluster's metrics endpoints
    # then, in Prometheus (http://localhost:9090) or a Grafana panel:
    ray_raydiff_mem_frac{sweep="default"}    ray_raydiff_fid    ray_raydiff_step

Each gauge keeps the trial's latest value. Setting a gauge is a local call (the node's metrics
agent exports in the background), so this costs nothing measurable per evaluation. Set
RAYDIFF_RAY_METRICS=0 to turn it off.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

log = logging.getLogger(__name__)

# result key → (gauge name, description)
GAUGES = {
    "mem_frac": ("raydiff_mem_frac", "fraction of generated samples that are memorized copies"),
    "fid": ("raydiff_fid", "FID of generated samples (latest evaluation that measured it)"),
    "step": ("raydiff_step", "optimizer steps done"),
}
TAG_KEYS = ("sweep", "trial_id")

_gauges: dict[str, Any] | None = None  # one set per worker process


def enabled() -> bool:
    return os.environ.get("RAYDIFF_RAY_METRICS", "1") != "0"


def _make() -> dict[str, Any]:
    from ray.util.metrics import Gauge

    return {k: Gauge(name, description=desc, tag_keys=TAG_KEYS) for k, (name, desc) in GAUGES.items()}


def record(metrics: dict[str, Any], trial_id: str, sweep: str) -> None:
    """Set each gauge whose value this report carries (FID is absent on most evaluations)."""
    global _gauges
    if not enabled():
        return
    try:
        if _gauges is None:
            _gauges = _make()
        tags = {"sweep": sweep, "trial_id": trial_id}
        for k, gauge in _gauges.items():
            v = metrics.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                gauge.set(float(v), tags=tags)
    except Exception as e:  # noqa: BLE001 - metrics are a convenience; never fail a trial for them
        log.warning("raydiff: Ray metrics disabled in this worker: %s", e)
        os.environ["RAYDIFF_RAY_METRICS"] = "0"
