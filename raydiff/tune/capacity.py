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
#
# One reader per kind of file, each with the discipline of the search spaces: every value is
# checked for its type and range where it is read, and a wrong one is one UserError line naming
# the file, the key and what it may be. `read_cluster_file` is the only road from a file to node
# types (the dry run's --cluster and the launcher's file on a running head both take it).

MAX_RESOURCE = 1e6  # CPUs, GPUs or a custom resource on one node: more is a typo
CLUSTER_FILE_MAX_BYTES = 1 << 20  # a cluster file is a page of YAML, not a data set


class ClusterFileError(UserError):
    """A cluster file that cannot be read as the kind it claims to be."""


def _where_is(where: str, key: str) -> dict:
    return {"where": where, "key": key}


def _mapping(v: Any, where: str, key: str, allow_none: bool = True) -> dict:
    if v is None and allow_none:
        return {}
    if not isinstance(v, dict):
        raise ClusterFileError(f"must be a mapping (got {_kind(v)})", **_where_is(where, key))
    return v


def _kind(v: Any) -> str:
    return "nothing" if v is None else f"{type(v).__name__} {v!r}"[:80]


def _number(v: Any, where: str, key: str, *, integer: bool = False, hi: float = MAX_RESOURCE) -> float:
    """A count or an amount: a plain number (or its digits in a string), finite, 0 … hi."""
    if isinstance(v, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", v):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        want = "a whole number" if integer else "a number"
        raise ClusterFileError(f"must be {want} in 0..{hi:g} (got {_kind(v)})", **_where_is(where, key))
    if not 0 <= v <= hi or (integer and v != int(v)):
        want = "a whole number" if integer else "a number"
        raise ClusterFileError(f"must be {want} in 0..{hi:g} (got {v:g})", **_where_is(where, key))
    return float(v)


def _count(v: Any, where: str, key: str) -> int:
    return int(_number(v, where, key, integer=True, hi=MAX_NODES_COUNTED))


def read_cluster_file(path: str | Path, head: bool = True) -> list[NodeType]:
    """The node types a cluster file describes (the head counts, with `head`, when it offers CPUs
    or GPUs; a launcher's file on its running head leaves it out: it is an alive node).
    One UserError line for a file that is none of the three kinds, or a value that is wrong."""
    path = Path(path)
    where = str(path)
    try:
        if not path.is_file():  # a folder, a device or a pipe would be read forever or not at all
            raise ClusterFileError("no such cluster file (a launcher YAML, a KubeRay manifest or an .sbatch script)", where=where)
        if path.stat().st_size > CLUSTER_FILE_MAX_BYTES:
            raise ClusterFileError(f"is {path.stat().st_size:,} bytes; a cluster file is under {CLUSTER_FILE_MAX_BYTES:,}", where=where)
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ClusterFileError(f"cannot read the cluster file: {e}", where=where) from None
    if path.suffix in (".sbatch", ".sh") or text.startswith("#!"):
        return node_types_of_sbatch(text, where)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ClusterFileError(f"not YAML: {' '.join(str(e).split())}", where=where) from None
    except RecursionError:
        raise ClusterFileError("nested deeper than YAML can be read", where=where) from None
    if isinstance(raw, dict) and raw.get("kind") == "RayCluster":
        return node_types_of_kuberay(raw, where)
    if isinstance(raw, dict) and "available_node_types" in raw:
        return node_types_of_launcher(raw, where, head)
    raise ClusterFileError(
        "not a cluster file raydiff knows (a Ray cluster-launcher YAML with available_node_types, a KubeRay"
        " RayCluster, or a SLURM .sbatch)",
        where=where,
    )


node_types_of_file = read_cluster_file  # the name the dry run and tests know


def node_types_of_launcher(config: dict[str, Any], where: str = "cluster config", head: bool = True) -> list[NodeType]:
    """Ray's cluster launcher: every node type with its `resources` and `max_workers` (the head's
    own `resources`, with one node, if it offers any CPU or GPU and `head` is asked for)."""
    config = _mapping(config, where, "(top level)", allow_none=False)
    out = []
    default_max = _count(config.get("max_workers", 2), where, "max_workers")
    types = _mapping(config.get("available_node_types"), where, "available_node_types")
    head_name = config.get("head_node_type")
    if head_name is not None and head_name not in types:
        raise ClusterFileError(f"names no node type of available_node_types ({', '.join(map(str, types)) or 'none'})",
                               **_where_is(where, "head_node_type"))  # fmt: skip
    for name, t in types.items():
        key = f"available_node_types.{name}"
        t = _mapping(t, where, key)
        raw_res = _mapping(t.get("resources"), where, f"{key}.resources")
        resources = {str(k): _number(v, where, f"{key}.resources.{k}", hi=MAX_RESOURCE if k in ("CPU", "GPU") else 1e18) for k, v in raw_res.items()}
        if name == head_name:
            if head and (resources.get("CPU", 0) or resources.get("GPU", 0)):
                out.append(NodeType(str(name), resources, 1))
            continue
        out.append(NodeType(str(name), resources, min(_count(t.get("max_workers", default_max), where, f"{key}.max_workers"), default_max)))
    return out


QUANTITY_SUFFIXES = {"m": 1e-3, "": 1.0, "k": 1e3}  # CPU-like quantities; Ki/Mi/Gi are bytes, not counts


def _quantity(v: Any, where: str = "cluster file", key: str = "quantity") -> float:
    """A Kubernetes CPU/GPU quantity as a number: 4, "4", "500m", "1.5"."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _number(v, where, key)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(m|k|)\s*", v) if isinstance(v, str) else None
    if not m:
        raise ClusterFileError(f"must be a CPU/GPU quantity such as 4, \"4\" or \"500m\" (got {_kind(v)})", **_where_is(where, key))
    return _number(float(m.group(1)) * QUANTITY_SUFFIXES[m.group(2)], where, key)


def node_types_of_kuberay(raw: dict[str, Any], where: str = "cluster file") -> list[NodeType]:
    """KubeRay: each worker group's pod (its Ray container's CPU and nvidia.com/gpu limits, or the
    group's rayStartParams num-cpus / num-gpus) × maxReplicas; the head when it offers CPUs."""
    spec = _mapping(raw.get("spec"), where, "spec")

    def group(name: str, g: Any, count: int, key: str) -> NodeType:
        g = _mapping(g, where, key)
        pod = _mapping(_mapping(g.get("template"), where, f"{key}.template").get("spec"), where, f"{key}.template.spec")
        containers = pod.get("containers") or [{}]
        if not isinstance(containers, list):
            raise ClusterFileError(f"must be a list (got {_kind(containers)})", **_where_is(where, f"{key}.template.spec.containers"))
        ckey = f"{key}.template.spec.containers[0]"
        res = _mapping(_mapping(containers[0], where, ckey).get("resources"), where, f"{ckey}.resources")
        limits = _mapping(res.get("limits"), where, f"{ckey}.resources.limits")
        params = _mapping(g.get("rayStartParams"), where, f"{key}.rayStartParams")
        if "num-cpus" in params:
            cpu = _quantity(params["num-cpus"], where, f"{key}.rayStartParams.num-cpus")
        else:
            cpu = _quantity(limits.get("cpu", 0), where, f"{ckey}.resources.limits.cpu")
        if "num-gpus" in params:
            gpu = _quantity(params["num-gpus"], where, f"{key}.rayStartParams.num-gpus")
        else:
            gpu = _quantity(limits.get("nvidia.com/gpu", 0), where, f"{ckey}.resources.limits.nvidia.com/gpu")
        return NodeType(name, {"CPU": cpu, "GPU": gpu}, count)

    out = []
    head = group("head", spec.get("headGroupSpec"), 1, "spec.headGroupSpec")
    if head.resources["CPU"] or head.resources["GPU"]:
        out.append(head)
    groups = spec.get("workerGroupSpecs") or []
    if not isinstance(groups, list):
        raise ClusterFileError(f"must be a list of worker groups (got {_kind(groups)})", **_where_is(where, "spec.workerGroupSpecs"))
    for i, g in enumerate(groups):
        key = f"spec.workerGroupSpecs[{i}]"
        g = _mapping(g, where, key)
        n = g.get("maxReplicas", g.get("replicas", 0))
        count = _count(0 if n is None else n, where, f"{key}.maxReplicas")
        out.append(group(str(g.get("groupName", "workers")), g, count, key))
    return out


def _sbatch(text: str, *names: str) -> str | None:
    for line in text.splitlines():
        if not line.startswith("#SBATCH"):
            continue
        for opt in re.findall(r"(?:--([\w-]+)|-([A-Za-z]))(?:[= ]+(\S+))?", line[len("#SBATCH"):]):
            if (opt[0] or opt[1]) in names:
                return opt[2]
    return None


def _sbatch_int(text: str, where: str, names: tuple[str, ...], default: int, pattern: str, form: str) -> int:
    """One #SBATCH option's whole number, by `pattern` (its group 1), else one line naming it."""
    v = _sbatch(text, *names)
    if v is None:
        return default
    m = re.fullmatch(pattern, v)
    if not m:
        raise ClusterFileError(f"must be {form} (got {v!r})", where=where, key=f"#SBATCH --{names[0]}")
    return _count(m.group(1) or 1, where, f"#SBATCH --{names[0]}")


def node_types_of_sbatch(text: str, where: str = "sbatch script") -> list[NodeType]:
    """A SLURM allocation: `--nodes` nodes (of N or MIN-MAX, the most), each with `--cpus-per-task`
    CPUs (one task a node: the Ray head or a worker) and `--gpus-per-node` (or `--gres=gpu:N`) GPUs."""
    nodes = _sbatch_int(text, where, ("nodes", "N"), 1, r"(?:\d+-)?(\d+)", "N or MIN-MAX nodes, e.g. 4 or 2-4")
    cpus = _sbatch_int(text, where, ("cpus-per-task", "c"), 1, r"(\d+)", "a whole number of CPUs")
    gpus = _sbatch_int(text, where, ("gpus-per-node",), -1, r"(?:[\w.-]+:)?(\d+)", "N or TYPE:N GPUs, e.g. 2 or a100:2")
    if gpus < 0:  # --gres=gpu[:TYPE][:N] (a bare gpu is one); other generic resources hold no GPU
        gres = _sbatch(text, "gres") or ""
        gpus = _sbatch_int(text, where, ("gres",), 0, r"gpu(?::[A-Za-z][\w.-]*)?(?::(\d+))?", "gpu, gpu:N or gpu:TYPE:N") if gres.startswith("gpu") else 0
    if nodes < 1 or cpus < 1:
        raise ClusterFileError(f"an allocation needs ≥ 1 node with ≥ 1 CPU (got {nodes} nodes, {cpus} CPUs)", where=where, key="#SBATCH")
    return [NodeType("slurm-node", {"CPU": float(cpus), "GPU": float(gpus)}, nodes)]


def rule_of(sweep: Any, preset: str | None, params: int) -> int | None:
    """Which `sweep.resources_by` rule a model matches first (None: no rule, sweep.resources)."""
    for i, rule in enumerate(sweep.resources_by):
        if (rule.preset is None or rule.preset == preset) and (rule.max_params is None or params <= rule.max_params):
            return i
    return None


def request_for(sweep: Any, preset: str | None, params: int) -> Request:
    """A trial's request: the first `sweep.resources_by` rule its model matches, else
    `sweep.resources` (`sweep` is a SweepConfig)."""
    i = rule_of(sweep, preset, params)
    r = sweep.resources if i is None else sweep.resources_by[i]
    return Request(r.cpu, r.gpu, tuple(sorted(r.custom)))
