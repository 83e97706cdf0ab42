"""What a cluster can become, and how many trials it holds at once: pure, no Ray.

A cluster is a set of node types, each with its resources and how many nodes of it may exist
(alive nodes count as types with their own count). The node types come from a cluster file —
Ray's cluster launcher YAML (cluster/aws.yaml), a KubeRay RayCluster (cluster/kuberay.yaml) or a
SLURM batch script (cluster/slurm.sbatch) — or from a running cluster's autoscaler. Trials are
placed first-fit, largest request first, onto every node the cluster may have: the count that
fits is the sweep's concurrency ("up to K trials at once"), for grids, the budget planner and
Optuna searches alike, and the dry run prints it from the file alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raydiff.errors import UserError

# nodes of one type that are counted when a file gives no bound (a SLURM allocation always does)
MAX_NODES_COUNTED = 10_000


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]  # CPU, GPU, memory, custom
    max_nodes: int  # how many such nodes the cluster may have at once (alive ones included)


@dataclass(frozen=True)
class Request:
    """What one trial asks Ray for: CPUs, GPUs (a fraction packs trials), custom resources."""

    cpu: float
    gpu: float = 0.0
    custom: tuple[tuple[str, float], ...] = ()  # (name, amount), sorted

    def as_ray(self) -> dict[str, Any]:
        """As Ray Tune's resource dicts spell it (custom resources by name)."""
        return {"cpu": self.cpu, "gpu": self.gpu, **({"custom_resources": dict(self.custom)} if self.custom else {})}

    def need(self) -> dict[str, float]:
        return {"CPU": self.cpu, "GPU": self.gpu, **dict(self.custom)}

    def text(self) -> str:
        extra = "".join(f", {v:g} {k}" for k, v in self.custom)
        return f"{self.cpu:g} CPU, {self.gpu:g} GPU{extra}"


def fits(req: Request, node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v - 1e-9 for k, v in req.need().items() if v > 0)


def where(req: Request, types: list[NodeType]) -> list[str]:
    """The node types one trial with this request can run on."""
    return [t.name for t in types if t.max_nodes > 0 and fits(req, t.resources)]


def concurrency(requests: list[Request], types: list[NodeType], limit: int = 100_000) -> int:
    """How many of these trials run at once when every node the cluster may have exists: first-fit
    decreasing (GPU, then CPU) onto the nodes, each trial on one node. 0: none fits anywhere."""
    nodes = [dict(t.resources) for t in types for _ in range(min(t.max_nodes, limit))]
    placed = 0
    for req in sorted(requests, key=lambda r: (r.gpu, r.cpu), reverse=True):
        for node in nodes:
            if fits(req, node):
                for k, v in req.need().items():
                    node[k] = node.get(k, 0.0) - v
                placed += 1
                break
    return placed


def slots(req: Request, types: list[NodeType]) -> int:
    """How many trials of one request the cluster holds at once (a grid's repeated request)."""
    total = 0
    for t in types:
        per_node = [t.resources.get("CPU", 0.0) / req.cpu if req.cpu else math.inf]
        if req.gpu:
            per_node.append(t.resources.get("GPU", 0.0) / req.gpu)
        per_node += [t.resources.get(k, 0.0) / v for k, v in req.custom if v]
        n = min(per_node)
        total += int(math.floor(n + 1e-9)) * t.max_nodes if math.isfinite(n) else t.max_nodes
    return total


# ------------------------------------------------------------------------- cluster files


def node_types_of_file(path: str | Path) -> list[NodeType]:
    """The worker node types a cluster file describes (the head runs no trial in raydiff's files
    unless it offers CPUs). One UserError line for a file that is none of the three kinds."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the cluster file: {e}", where=str(path)) from None
    if path.suffix in (".sbatch", ".sh") or text.startswith("#!"):
        return node_types_of_sbatch(text)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"not YAML: {e}", where=str(path)) from None
    if isinstance(raw, dict) and raw.get("kind") == "RayCluster":
        return node_types_of_kuberay(raw)
    if isinstance(raw, dict) and "available_node_types" in raw:
        return node_types_of_launcher(raw)
    raise UserError(
        "not a cluster file raydiff knows (a Ray cluster-launcher YAML, a KubeRay RayCluster, or a SLURM .sbatch)",
        where=str(path),
    )


def node_types_of_launcher(config: dict[str, Any]) -> list[NodeType]:
    """Ray's cluster launcher: every node type with its `resources` and `max_workers` (the head's
    own `resources`, with one node, if it offers any CPU or GPU)."""
    out = []
    default_max = int(config.get("max_workers", 2))
    for name, t in (config.get("available_node_types") or {}).items():
        resources = {k: float(v) for k, v in (t.get("resources") or {}).items()}
        if name == config.get("head_node_type"):
            if resources.get("CPU", 0) or resources.get("GPU", 0):
                out.append(NodeType(name, resources, 1))
            continue
        out.append(NodeType(name, resources, min(int(t.get("max_workers", default_max)), default_max)))
    return out


def _quantity(v: Any) -> float:
    """A Kubernetes quantity as a number: "4", "500m", 2."""
    s = str(v).strip()
    if s.endswith("m"):
        return float(s[:-1]) / 1000.0
    return float(s)


def node_types_of_kuberay(raw: dict[str, Any]) -> list[NodeType]:
    """KubeRay: each worker group's pod (its Ray container's CPU and nvidia.com/gpu limits, or the
    group's rayStartParams num-cpus / num-gpus) × maxReplicas; the head when it offers CPUs."""
    spec = raw.get("spec") or {}

    def group(name: str, g: dict, count: int) -> NodeType:
        containers = (((g.get("template") or {}).get("spec") or {}).get("containers")) or [{}]
        limits = ((containers[0].get("resources") or {}).get("limits")) or {}
        params = g.get("rayStartParams") or {}
        cpu = _quantity(params.get("num-cpus", limits.get("cpu", 0)))
        gpu = _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        return NodeType(name, {"CPU": cpu, "GPU": gpu}, count)

    out = []
    head = group("head", spec.get("headGroupSpec") or {}, 1)
    if head.resources["CPU"] or head.resources["GPU"]:
        out.append(head)
    for g in spec.get("workerGroupSpecs") or []:
        count = int(g.get("maxReplicas", g.get("replicas", 0)) or 0)
        out.append(group(str(g.get("groupName", "workers")), g, count))
    return out


def _sbatch(text: str, *names: str) -> str | None:
    for line in text.splitlines():
        if not line.startswith("#SBATCH"):
            continue
        for opt in re.findall(r"--([\w-]+)(?:[= ](\S+))?", line):
            if opt[0] in names:
                return opt[1]
    return None


def node_types_of_sbatch(text: str) -> list[NodeType]:
    """A SLURM allocation: `--nodes` nodes, each with `--cpus-per-task` CPUs (one task a node: the
    Ray head or a worker) and `--gpus-per-node` (or `--gres=gpu:N`) GPUs."""
    nodes = int((_sbatch(text, "nodes", "N") or "1").split("-")[-1])
    cpus = float(_sbatch(text, "cpus-per-task", "c") or 1)
    gpus_text = _sbatch(text, "gpus-per-node") or (_sbatch(text, "gres") or "")
    gpus = float(gpus_text.rsplit(":", 1)[-1]) if re.search(r"\d$", gpus_text or "") else 0.0
    return [NodeType("slurm-node", {"CPU": cpus, "GPU": gpus}, nodes)]


def request_for(sweep: Any, preset: str | None, params: int) -> Request:
    """A trial's request: the first `sweep.resources_by` rule its model matches, else
    `sweep.resources` (`sweep` is a SweepConfig)."""
    for rule in sweep.resources_by:
        if (rule.preset is None or rule.preset == preset) and (rule.max_params is None or params <= rule.max_params):
            return Request(rule.cpu, rule.gpu, tuple(sorted(rule.custom)))
    r = sweep.resources
    return Request(r.cpu, r.gpu, tuple(sorted(r.custom)))
