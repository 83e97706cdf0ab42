"""What a cluster can become and how many trials it holds at once (raydiff/tune/capacity.py), from
the shipped cluster files alone; per-trial requests by model. (The cluster files' commands are
checked with the docs' in test_docs.py.)"""

from __future__ import annotations

import re

import pytest
import yaml
from paths import ROOT

from raydiff import cli
from raydiff.config import load_search_space, packaged_search_space, search_space_from_dict
from raydiff.models import param_count
from raydiff.tune.capacity import NodeType, Request, concurrency, node_types_of_file, node_types_of_sbatch, request_for, slots, where

A10G = NodeType("a10g", {"CPU": 4.0, "GPU": 1.0}, 4)
H100X8 = NodeType("h100x8", {"CPU": 192.0, "GPU": 8.0}, 1)
CPU2 = NodeType("cpu", {"CPU": 2.0}, 1)


@pytest.mark.parametrize(
    "requests, types, expected",
    [
        pytest.param([Request(1)] * 4, [CPU2], 2, id="two-cpus-two-trials"),
        pytest.param([Request(4, 1)] * 20, [A10G, H100X8], 12, id="whole-gpus-4-plus-8"),
        pytest.param([Request(1, 0.5)] * 20, [A10G], 8, id="half-gpus-pack-two"),
        pytest.param([Request(1, 0.25)] * 40, [A10G], 16, id="quarter-gpus-pack-four"),
        pytest.param([Request(3, 1)] + [Request(1, 0.5)] * 3, [NodeType("a", {"CPU": 4.0, "GPU": 1.0}, 2)], 3, id="mixed-first-fit"),
        pytest.param([Request(4, 1)], [NodeType("pod", {"CPU": 3.0, "GPU": 1.0}, 4)], 0, id="four-cpus-on-three-cpu-pods"),
        pytest.param([Request(1, 0, (("h100", 1.0),))] * 3, [A10G, NodeType("h", {"CPU": 8.0, "h100": 2.0}, 1)], 2, id="custom-resource"),
        pytest.param([Request(1)] * 3, [NodeType("gone", {"CPU": 8.0}, 0)], 0, id="type-with-no-nodes"),
    pytest.param([Request(2, 1)] * 9, node_types_of_sbatch("#SBATCH --nodes=4\n#SBATCH --cpus-per-task=8\n#SBATCH --gres=gpu:a100:2\n"), 8, id="slurm-allocation"),
    ],
)
def test_concurrency_table(requests, types, expected):
    assert concurrency(requests, types) == expected
    if len(set(requests)) == 1:  # one repeated request: the closed form agrees (when enough trials)
        assert min(slots(requests[0], types), len(requests)) == expected


def test_where_names_the_node_types():
    assert where(Request(4, 1), [A10G, H100X8]) == ["a10g", "h100x8"]
    assert where(Request(8, 2), [A10G, H100X8]) == ["h100x8"]
    assert where(Request(1, 16), [A10G, H100X8]) == []


@pytest.mark.parametrize("name, kind", [("aws.yaml", "launcher"), ("kuberay.yaml", "kuberay"), ("slurm.sbatch", "slurm")])
def test_shipped_cluster_files_hold_many_trials(name, kind):
    path = ROOT / "cluster" / name
    if not path.exists():
        pytest.skip(f"cluster/{name} not shipped")
    types = node_types_of_file(path)
    assert types and all(t.max_nodes >= 1 for t in types)
    # the GPU files host the papers' spaces; the SLURM script as shipped runs the smoke sweep on CPUs
    for space_name in ("smoke", "default") if kind == "slurm" else ("marion2026_cifar10", "bonnaire2025"):
        raw = yaml.safe_load(packaged_search_space(space_name).read_text())
        space = search_space_from_dict(raw)
        reqs = [request_for(space.sweep, e.model.preset, param_count(e.model, e.data)) for e in space.experiments()]
        assert all(where(r, types) for r in reqs), (name, space_name)  # every trial has a node type (KubeRay's 3-CPU pods too)
        assert concurrency(reqs, types) > 1  # the grid runs at width, not one trial at a time


def test_dry_run_with_a_cluster_file(capsys):
    assert cli.main(["sweep", "marion2026_cifar10", "--dry-run", "--cluster", str(ROOT / "cluster" / "aws.yaml")]) == 0
    out = capsys.readouterr().out
    k = int(re.search(r"up to (\d+) trials at once", out).group(1))
    assert k > 1
    assert "1 CPU, 0.5 GPU" in out and "3 CPU, 1 GPU" in out  # small U-Nets packed, large ones a whole GPU
    assert "gpu-a10g,gpu-a10g-spot,gpu-h100x8" in out and "NOWHERE" not in out


def test_requests_follow_the_model():
    space = load_search_space(packaged_search_space("marion2026_cifar10"))
    by_preset = {e.model.preset: request_for(space.sweep, e.model.preset, param_count(e.model, e.data)) for e in space.experiments()}
    assert by_preset["marion-2.9m"] == Request(1.0, 0.5) and by_preset["marion-25.8m"] == Request(1.0, 0.5)
    assert by_preset["marion-92.7m"] == Request(3.0, 1.0) == by_preset["marion-201.3m"]
    rule = search_space_from_dict({"sweep": {"resources_by": [{"preset": "digits-tiny", "cpu": 2}]}, "model": {"preset": "digits-tiny"}})
    e = rule.experiments()[0]
    assert request_for(rule.sweep, e.model.preset, param_count(e.model, e.data)) == Request(2.0, 0.0)


@pytest.mark.parametrize("rules, needle", [
    ([{"cpu": 1}], "names a preset or a max_params"),
    ([{"max_params": 10, "gpu": 1.5}], "resources_by[0].gpu"),
    ([{"max_params": 10, "custom": [["GPU", 1]]}], "resources_by[0].custom"),
])  # fmt: skip
def test_resource_rule_errors(rules, needle):
    from raydiff.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(needle)):
        search_space_from_dict({"sweep": {"resources_by": rules}})


def test_a_connected_cluster_counts_every_node():
    from raydiff.tune.resources import check_storage_reach, cluster_node_types
    from raydiff.errors import UserError

    head, worker = {"CPU": 0.0, "node:1.2.3.4": 1.0}, {"CPU": 1.0, "GPU": 1.0, "memory": 1e9}
    types = cluster_node_types([head, worker, worker], [])
    assert sum(t.max_nodes for t in types) == 2  # both workers, the head (no CPU) runs no trial
    assert concurrency([Request(1, 1)] * 5, types) == 2
    autoscaled = cluster_node_types([head, {"CPU": 4.0, "GPU": 1.0}], [A10G])
    assert [t.max_nodes for t in autoscaled] == [4]  # the alive A10G is one of its type's 4
    check_storage_reach("/tmp/x", cluster_node_types([{"CPU": 2.0}], []))  # one machine: fine
    check_storage_reach("s3://bucket/x", types)
    with pytest.raises(UserError, match="is a local folder"):
        check_storage_reach("/tmp/x", types)


@pytest.mark.parametrize(
    "every, minutes, reports, expected",
    [
        pytest.param(1, None, [{}] * 4, [True] * 4, id="every-evaluation"),
        pytest.param(4, None, [{}] * 8, [False, False, False, True] * 2, id="every-fourth"),
        pytest.param(4, None, [{}, {"tau_mem_step": 100}, {"tau_mem_step": 100}, {}], [False, True, False, True], id="at-onset-once"),
        pytest.param(10, None, [{}, {"stop_status": "memorized"}], [False, True], id="at-the-stop"),
        pytest.param(10, 1.0, [{}, {}, {}], [False, True, False], id="every-minute"),
    ],
)
def test_checkpoint_cadence(every, minutes, reports, expected):
    from raydiff.tune.trainable import CheckpointCadence

    t = [0.0]
    cadence = CheckpointCadence(every, minutes, clock=lambda: t[0])
    got = []
    for r in reports:
        t[0] += 40.0  # 40 s between evaluations: the minute passes at the second
        got.append(cadence.due(r))
    assert got == expected


def test_concurrent_fetchers_download_once(tmp_path):
    """Trials that start together on a node fetch a file once: the others wait on the lock and
    find it there (file_lock across processes)."""
    import multiprocessing as mp

    served = tmp_path / "served.bin"
    served.write_bytes(b"weights" * 1000)
    url = served.as_uri()  # urllib reads file:// like http://: no network
    counter = tmp_path / "downloads.txt"
    dest = tmp_path / "cache" / "weights.bin"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_fetch_counting, args=(url, dest, counter)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert dest.read_bytes() == served.read_bytes()
    assert counter.read_text().count("x") == 1


def _fetch_counting(url, dest, counter):
    import time

    from raydiff import download

    real = download._download

    def counted(u, d, timeout):
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(0.3)  # a slow download: the others arrive while it runs
        return real(u, d, timeout)

    download._download = counted
    download.fetch(url, dest)
