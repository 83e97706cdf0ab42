"""Check a trial's resource request against the cluster before any trial starts.

Ray Tune would otherwise queue a trial that no node can ever host and wait forever. A request is
feasible when some alive node has that many CPUs and GPUs, or when the cluster autoscales
(`RAYDIFF_AUTOSCALING=1`, set by cluster/aws.yaml) and may yet add a node type that has them.
"""

from __future__ import annotations

import os

from raydiff.config import Resources
from raydiff.errors import UserError


def node_capacities() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def check_resources(req: Resources, nodes: list[dict[str, float]] | None = None) -> None:
    nodes = node_capacities() if nodes is None else nodes
    if os.environ.get("RAYDIFF_AUTOSCALING") == "1":
        return
    fits = [n for n in nodes if n.get("CPU", 0.0) >= req.cpu and n.get("GPU", 0.0) >= req.gpu]
    if fits:
        return
    best_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    best_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    raise UserError(
        f"no node can host a trial asking for {req.cpu:g} CPU and {req.gpu:g} GPU "
        f"(largest node: {best_cpu:g} CPU, {best_gpu:g} GPU); lower sweep.resources or add such a node",
        key="sweep.resources",
    )
