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


from raydiff.config import ExperimentConfig, SearchSpace
from raydiff.errors import UserError
from raydiff.models import param_count
from raydiff.tune.capacity import NodeType, Request, concurrency, fits, node_types_of_launcher, read_cluster_file, request_for, slots

AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the autoscaler's config
AUTOSCALING_CONFIG_ENV = "RAYDIFF_AUTOSCALING_CONFIG"  # another path to read it from
AUTOSCALING_ENV = "RAYDIFF_AUTOSCALING"


def node_capacities() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def node_types_from_config(config: dict[str, Any]) -> list[dict[str, float]]:
    """Resources of the worker node types a cluster-launcher config may still start (max_workers > 0)."""
    return [t.resources for t in node_types_of_launcher(config, head=False) if t.max_nodes > 0]


def request_of(space: SearchSpace, exp: ExperimentConfig) -> Request:
    """One trial's request, by its model (sweep.resources_by), else sweep.resources."""
    return request_for(space.sweep, exp.model.preset, param_count(exp.model, exp.data))


def space_requests(space: SearchSpace) -> list[Request]:
    """The request of every trial of a grid (an Optuna search: of its corners and base)."""
    exps = space.experiments() + (space.extremes() if space.search is not None else [])
    return [request_of(space, e) for e in exps]


def launchable_types() -> list[NodeType]:
    """The node types the autoscaler may start, with their bounds: from what it publishes to the
    GCS, else from the launcher's file on the head (read as `--cluster` reads one). The one road:
    the feasibility check and the concurrency both ask here."""
    try:
        import ray._private.state as state

        cfg = state.state.get_cluster_config()
        groups = cfg.node_group_configs if cfg is not None else []
    except Exception:  # noqa: BLE001 - private API: absent or changed means "not known here"
        groups = []
    if groups:
        return [
            NodeType(g.name or f"group-{i}", {k: float(v) for k, v in g.resources.items()}, g.max_count if g.max_count >= 0 else MAX_PER_TYPE)
            for i, g in enumerate(groups) if g.max_count != 0
        ]  # fmt: skip
    path = Path(os.environ.get(AUTOSCALING_CONFIG_ENV) or AUTOSCALING_CONFIG).expanduser()
    if not path.is_file():
        return []
    try:
        return [t for t in read_cluster_file(path, head=False) if t.max_nodes > 0]
    except UserError:  # the autoscaler's own file, unreadable: nothing known to be startable
        return []


def cluster_node_types(nodes: list[dict[str, float]] | None = None, types: list[NodeType] | None = None) -> list[NodeType]:
    """What the connected cluster can become: the node types the autoscaler may start, each up to
    its bound, and every alive node that is none of them (the head, static workers)."""
    nodes = node_capacities() if nodes is None else nodes
    launch = list(launchable_types() if types is None else types)
    out = list(launch)
    for i, n in enumerate(nodes):  # an alive node of an autoscaled type is within that type's bound
        res = {k: v for k, v in n.items() if not k.startswith(("node:", "accelerator_type", "object_store"))}
        if (res.get("CPU", 0.0) or res.get("GPU", 0.0)) and not any(_same_shape(res, t.resources) for t in launch):
            out.append(NodeType(f"node-{i}", res, 1))
    return out


MAX_PER_TYPE = 100  # a node type whose bound the cluster does not publish


def _same_shape(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.get("CPU", 0.0) == b.get("CPU", 0.0) and a.get("GPU", 0.0) == b.get("GPU", 0.0)


def cluster_concurrency(space: SearchSpace, types: list[NodeType] | None = None) -> int:
    """Trials of this space the cluster holds at once when it has grown to its bounds (≥ 1)."""
    types = cluster_node_types() if types is None else types
    reqs = space_requests(space)
    if space.search is not None:  # an Optuna search repeats its base trial's request
        return max(1, slots(reqs[0], types))
    return max(1, concurrency(reqs, types))


def check_resources(
    requests: list[Request] | Request | Any,  # or a config's Resources
    nodes: list[dict[str, float]] | None = None,
    node_types: list[dict[str, float]] | None = None,
) -> None:
    """Raise a one-line UserError if no alive node, and no node the autoscaler may add, fits one of
    the requests (a trial Ray could never place would wait forever)."""
    if not isinstance(requests, (list, tuple)):
        requests = [requests]
    requests = [r if isinstance(r, Request) else Request(r.cpu, r.gpu, tuple(sorted(r.custom))) for r in requests]
    nodes = node_capacities() if nodes is None else nodes
    for req in dict.fromkeys(requests):
        if any(fits(req, n) for n in nodes):
            continue
        types = [t.resources for t in launchable_types()] if node_types is None else node_types
        if any(fits(req, t) for t in types) or os.environ.get(AUTOSCALING_ENV) == "1":
            continue  # the autoscaler will start such a node when the trial asks for it
        biggest = max(nodes + types, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
        scaling = f", {len(types)} autoscaling node type(s)" if types else ", no autoscaling node types"
        raise UserError(
            f"no node can host a trial asking for {req.cpu:g} CPU and {req.gpu:g} GPU "
            f"(largest node: {biggest.get('CPU', 0.0):g} CPU, {biggest.get('GPU', 0.0):g} GPU{scaling}); "
            "lower sweep.resources or add such a node",
            key="sweep.resources",
        )


SHARED_STORAGE_ENV = "RAYDIFF_SHARED_STORAGE"  # "1": a local path every node sees (NFS, a SLURM scratch)


def check_storage_reach(storage: str, types: list[NodeType]) -> None:
    """A local results folder serves one machine: on a cluster that has or may start other nodes,
    their trials could not write their checkpoints there (Ray Tune fails each at its first one).
    Refused before any trial is scheduled, unless the folder is declared shared."""
    if "://" in storage or os.environ.get(SHARED_STORAGE_ENV) == "1":
        return
    nodes = sum(t.max_nodes for t in types)
    if nodes > 1:
        raise UserError(
            f"storage {storage} is a local folder, but this cluster has or may start {nodes} nodes: trials on the"
            f" others could not write there; use --storage s3://… (or gs://…), or a folder every node mounts with"
            f" {SHARED_STORAGE_ENV}=1",
            key="--storage",
        )
