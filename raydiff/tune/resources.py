"""Check a trial's resource request against the cluster before any trial starts.

Ray Tune would otherwise queue a trial that no node can ever host and wait forever. A request is
feasible when one alive node has that many CPUs and GPUs (a trial runs on one node, so the
cluster's total does not count), or when the autoscaler may still add a node type that has them.
The node types are read from what the autoscaler publishes to the GCS, else from the cluster
launcher's config on the head (`ray up` writes it to ~/ray_bootstrap_config.yaml). Where neither
is readable (e.g. a KubeRay cluster whose autoscaler does not publish its config),
`RAYDIFF_AUTOSCALING=1` says "trust the autoscaler" and skips the check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from raydiff.config import Resources
from raydiff.errors import UserError

AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the autoscaler's config
AUTOSCALING_CONFIG_ENV = "RAYDIFF_AUTOSCALING_CONFIG"  # another path to read it from
AUTOSCALING_ENV = "RAYDIFF_AUTOSCALING"


def node_capacities() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def node_types_from_config(config: dict[str, Any]) -> list[dict[str, float]]:
    """Resources of the worker node types a cluster-launcher config may still start (max_workers > 0)."""
    types = config.get("available_node_types") or {}
    default_max = config.get("max_workers", 2)
    return [
        {k: float(v) for k, v in (t.get("resources") or {}).items()}
        for name, t in types.items()
        if name != config.get("head_node_type") and t.get("max_workers", default_max) > 0
    ]


def _node_types_from_gcs() -> list[dict[str, float]] | None:
    """Node groups of the cluster config the autoscaler reports to the GCS (None: not reported)."""
    try:
        import ray._private.state as state

        cfg = state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - private API: absent or changed means "not known here"
        return None
    if cfg is None or not cfg.node_group_configs:
        return None
    return [{k: float(v) for k, v in g.resources.items()} for g in cfg.node_group_configs if g.max_count != 0]


def _node_types_from_file() -> list[dict[str, float]] | None:
    path = Path(os.environ.get(AUTOSCALING_CONFIG_ENV) or AUTOSCALING_CONFIG).expanduser()
    if not path.is_file():
        return None
    import yaml  # the launcher writes JSON, which YAML reads too

    try:
        return node_types_from_config(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return None


def launchable_node_types() -> list[dict[str, float]]:
    types = _node_types_from_gcs()
    return types if types is not None else (_node_types_from_file() or [])


def _fits(req: Resources, node: dict[str, float]) -> bool:
    return node.get("CPU", 0.0) >= req.cpu and node.get("GPU", 0.0) >= req.gpu


def check_resources(
    req: Resources,
    nodes: list[dict[str, float]] | None = None,
    node_types: list[dict[str, float]] | None = None,
) -> None:
    """Raise a one-line UserError if no alive node, and no node the autoscaler may add, fits `req`."""
    nodes = node_capacities() if nodes is None else nodes
    if any(_fits(req, n) for n in nodes):
        return
    node_types = launchable_node_types() if node_types is None else node_types
    if any(_fits(req, t) for t in node_types):
        return  # the autoscaler will start such a node when the trial asks for it
    if os.environ.get(AUTOSCALING_ENV) == "1":
        return
    biggest = max(nodes + node_types, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    scaling = f", {len(node_types)} autoscaling node type(s)" if node_types else ", no autoscaling node types"
    raise UserError(
        f"no node can host a trial asking for {req.cpu:g} CPU and {req.gpu:g} GPU "
        f"(largest node: {biggest.get('CPU', 0.0):g} CPU, {biggest.get('GPU', 0.0):g} GPU{scaling}); "
        "lower sweep.resources or add such a node",
        key="sweep.resources",
    )
