"""The input boundary of the surfaces behind `--cluster`, the dry run's flags, addresses and
storage, resources_by rules and grids, `model.kind: python`, `raydiff analyze` and the
`raydiff.monitor` library (issue 25): one table per class of bad input. Each case ends in one line
naming what is wrong and where, exit 2 (the library: its own ValueError/TypeError), never a
traceback, a hang or a silently wrong answer. In process, no Ray: seconds in all.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import socket
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from paths import ROOT
from raydiff import cli, results
from raydiff.config import packaged_search_space, search_space_from_dict
from raydiff.errors import ConfigError, UserError
from raydiff.models import external
from raydiff.monitor import MemorizationMonitor
from raydiff.tune import capacity, resources
from raydiff.tune.connect import gcs_endpoint


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def refused(argv: list[str], fragment: str) -> str:
    code, _, err = run(argv)
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydiff: error: "), err
    assert fragment in lines[0], lines[0]
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------- cluster files

LAUNCHER = "cluster_name: x\nmax_workers: 4\nhead_node_type: head\navailable_node_types:\n  head: {resources: {CPU: 0}}\n"
KUBERAY = """apiVersion: ray.io/v1
kind: RayCluster
spec:
  headGroupSpec: {rayStartParams: {num-cpus: "0"}, template: {spec: {containers: [{name: ray-head}]}}}
  workerGroupSpecs:
    - groupName: w
      maxReplicas: {replicas}
      template: {spec: {containers: [{name: w, resources: {limits: {cpu: {cpu}, nvidia.com/gpu: "1"}}}]}}
"""

CLUSTER_FILES = [
    ("aws.yaml", LAUNCHER + "  gpu: {resources: {CPU: four, GPU: 1}, max_workers: 2}\n", "available_node_types.gpu.resources.CPU: must be a number"),
    ("aws.yaml", LAUNCHER + "  gpu: {resources: {CPU: 4, GPU: .inf}, max_workers: 2}\n", "resources.GPU: must be a number in 0..1e+06"),
    ("aws.yaml", LAUNCHER + "  gpu: {resources: {CPU: 4, GPU: -1}, max_workers: 2}\n", "resources.GPU: must be a number in 0..1e+06 (got -1)"),
    ("aws.yaml", LAUNCHER + "  gpu: {resources: {CPU: 4}, max_workers: 10k}\n", "available_node_types.gpu.max_workers: must be a whole number"),
    ("aws.yaml", LAUNCHER + "  gpu: {resources: {CPU: 4}, max_workers: 2.5}\n", "max_workers: must be a whole number in 0..10000 (got 2.5)"),
    ("aws.yaml", LAUNCHER + "  gpu: [4, 1]\n", "available_node_types.gpu: must be a mapping"),
    ("aws.yaml", LAUNCHER + "  gpu: {resources: [CPU, 4]}\n", "available_node_types.gpu.resources: must be a mapping"),
    ("aws.yaml", LAUNCHER.replace("head_node_type: head", "head_node_type: boss"), "head_node_type: names no node type"),
    ("aws.yaml", "max_workers: true\navailable_node_types: {}\n", "max_workers: must be a whole number"),
    ("aws.yaml", "available_node_types: [a, b]\n", "available_node_types: must be a mapping"),
    ("aws.yaml", "available_node_types: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than YAML can be read"),
    ("kuberay.yaml", KUBERAY.replace("{replicas}", "4").replace("{cpu}", '"4Gi"'), "limits.cpu: must be a CPU/GPU quantity"),
    ("kuberay.yaml", KUBERAY.replace("{replicas}", "4").replace("{cpu}", '"four"'), "limits.cpu: must be a CPU/GPU quantity"),
    ("kuberay.yaml", KUBERAY.replace("{replicas}", "many").replace("{cpu}", "4"), "workerGroupSpecs[0].maxReplicas: must be a whole number"),
    ("kuberay.yaml", KUBERAY.replace("{replicas}", "1e9").replace("{cpu}", "4"), "maxReplicas: must be a whole number"),
    ("kuberay.yaml", "kind: RayCluster\nspec: {workerGroupSpecs: {a: 1}}\n", "spec.workerGroupSpecs: must be a list"),
    ("kuberay.yaml", "kind: RayCluster\nspec: [1]\n", "spec: must be a mapping"),
    ("slurm.sbatch", "#!/bin/bash\n#SBATCH --nodes=abc\n", "#SBATCH --nodes: must be N or MIN-MAX nodes"),
    ("slurm.sbatch", "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --cpus-per-task=4.5\n", "--cpus-per-task: must be a whole number of CPUs"),
    ("slurm.sbatch", "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --gres=gpu:a100:two\n", "--gres: must be gpu, gpu:N or gpu:TYPE:N"),
    ("slurm.sbatch", "#!/bin/bash\n#SBATCH --nodes=0\n", "an allocation needs ≥ 1 node"),
    ("slurm.sbatch", "#!/bin/bash\n#SBATCH --nodes=99999999\n", "#SBATCH --nodes: must be a whole number in 0..10000"),
    ("notes.txt", "hello", "not a cluster file raydiff knows"),
    ("big.yaml", "# " + "x" * (1 << 20) + "\n", "a cluster file is under 1,048,576"),
]


@pytest.mark.parametrize("path", ["/dev/zero", "/nonexistent/aws.yaml", "."])
def test_a_cluster_path_that_is_no_file(path):
    refused(["sweep", "smoke", "--dry-run", "--cluster", path], "no such cluster file")


@pytest.mark.parametrize("name, text, fragment", CLUSTER_FILES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CLUSTER_FILES)])
def test_bad_cluster_files_are_one_line(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    line = refused(["sweep", "smoke", "--dry-run", "--cluster", str(path)], fragment)
    assert str(path) in line  # where


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("#SBATCH -N 2-3\n#SBATCH -c 8\n#SBATCH --gres=gpu\n", (3, 8.0, 1.0), id="short-options, bare gpu"),
        pytest.param("#SBATCH --nodes=4\n#SBATCH --cpus-per-task=8\n#SBATCH --gres=gpu:a100:2\n", (4, 8.0, 2.0), id="typed gres"),
        pytest.param("#SBATCH --nodes=1\n#SBATCH --gpus-per-node=h100:4\n", (1, 1.0, 4.0), id="typed gpus-per-node"),
    ],
)  # fmt: skip
def test_sbatch_forms_slurm_takes(text, expected):
    (t,) = capacity.node_types_of_sbatch(text)
    assert (t.max_nodes, t.resources["CPU"], t.resources["GPU"]) == expected


def test_one_reader_one_road_for_the_launchers_file(tmp_path, monkeypatch):
    """The head's launcher file is read by the reader --cluster uses, once; no second parser."""
    assert not hasattr(resources, "launchable_node_types")
    path = tmp_path / "bootstrap.yaml"
    path.write_text(LAUNCHER + "  gpu: {resources: {CPU: 4, GPU: 1}, max_workers: 2}\n")
    monkeypatch.setenv(resources.AUTOSCALING_CONFIG_ENV, str(path))
    calls = []
    real = resources.read_cluster_file
    monkeypatch.setattr(resources, "read_cluster_file", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    resources.check_resources(capacity.Request(1, 1), nodes=[{"CPU": 0.0}])  # the gpu type fits: no error
    assert len(calls) == 1 and [t.name for t in resources.launchable_types()] == ["gpu"]  # the head is alive, not a type
    path.write_text(LAUNCHER + "  gpu: {resources: {CPU: four}}\n")  # the autoscaler's own file, broken: nothing startable
    assert resources.launchable_types() == []


# ------------------------------------------------------------------ the dry run's flags


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["sweep", "--dry-run", "--json", "--name", "a/b"], "--name: must be a plain folder name"),
        (["sweep", "--dry-run", "--json", "--cluster", "cluster/aws.yaml"], "give one of --cluster and --json"),
        (["sweep", "--dry-run", "--address", "h:99999"], "--address must be the head's host:port"),
        (["sweep", "--dry-run", "--address", "http://h:6379"], "--address must be the head's host:port"),
        (["sweep", "--dry-run", "--storage", "s3://"], "--storage: must be a local folder or s3://BUCKET"),
        (["sweep", "--dry-run", "--storage", "ftp://host/x"], "--storage: must be a local folder or s3://BUCKET"),
        (["sweep", "--dry-run", "--storage", "s3://b/x?endpoint_override=h:notaport"], "is not host[:port]"),
        (["sweep", "optuna_digits", "--dry-run", "--mode", "grid"], "--mode: varies a grid's axes"),
        (["sweep", "--dry-run", "--log-to", "nosuch"], "--log-to: unknown logger 'nosuch'"),
        (["sweep", "--dry-run", "--resume", "x"], "--dry-run shows a new sweep's trials"),
    ],
)  # fmt: skip
def test_the_dry_run_checks_the_whole_command_line(argv, fragment, monkeypatch):
    monkeypatch.chdir(ROOT)
    refused(argv, fragment)


def test_the_dry_run_refuses_a_name_a_real_run_would(tmp_path):
    (tmp_path / "smoke" / "metrics").mkdir(parents=True)
    refused(["sweep", "smoke", "--dry-run", "--storage", str(tmp_path)], "a sweep named 'smoke' already exists")
    refused(["sweep", "smoke", "--dry-run", "--json", "--storage", str(tmp_path)], "already exists")


# ------------------------------------------------------------ addresses, flags, storage


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["sweep", "--resume", ""], "--resume: is empty"),
        (["sweep", "--dry-run", "--storage", " "], "--storage: is empty"),
        (["sweep", "--dry-run", "--address", ""], "--address: is empty"),
        (["sweep", "--dry-run", "--name", ""], "--name: is empty"),
        (["sweep", "--dry-run", "--cluster", ""], "--cluster: is empty"),
        (["analyze", ""], "results: is empty"),
        (["analyze", "x", "--out", ""], "--out: is empty"),
        (["train", "smoke", "--threads", "0"], "--threads: must be in 1..4,096"),
        (["train", "smoke", "--threads", "10000000"], "--threads: must be in 1..4,096"),
        (["train", "smoke", "--point", "-1"], "--point: must be in 0.."),
        (["analyze", "x", "--boot", "1"], "--boot: must be 0 (no intervals) or 10..20,000"),
        (["analyze", "x", "--boot", "1000000000"], "--boot: must be 0 (no intervals) or 10..20,000"),
    ],
)  # fmt: skip
def test_flags_at_their_edges(argv, fragment):
    refused(argv, fragment)


@pytest.mark.parametrize(
    "address, ok",
    [("10.0.0.5:6379", ("10.0.0.5", 6379)), ("[::1]:6379", ("::1", 6379)), ("auto", None), ("ray://h:10001", None),
     ("h:0", False), ("h:65536", False), ("ray://h", False), ("ray://:1", False), ("http://h:1", False),
     ("a b:1", False), ("h:", False), ("user@h:1", False)],
)  # fmt: skip
def test_address_forms(address, ok):
    if ok is False:
        with pytest.raises(UserError, match="host:port"):
            gcs_endpoint(address)
    else:
        assert gcs_endpoint(address) == ok


@pytest.fixture
def dead_store(monkeypatch):
    """An S3 endpoint that takes no connection (nothing listens on its port)."""
    port = _closed_port()
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                 "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("RAYDIFF_STORAGE", raising=False)
    tries = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda a, timeout=None, **k: (tries.append((a, timeout)), real(a, timeout=timeout))[1])
    return tries


@pytest.mark.parametrize(
    "argv",
    [["status", "s3://bucket/sweeps/x"], ["analyze", "s3://bucket/sweeps/x", "--boot", "0"],
     ["sweep", "--resume", "x", "--storage", "s3://bucket/sweeps"], ["sweep", "smoke", "--storage", "s3://bucket/sweeps"]],
    ids=["status", "analyze", "resume", "sweep"],
)  # fmt: skip
def test_a_store_that_does_not_answer_fails_fast(dead_store, argv, tmp_path, monkeypatch):
    """By the work, not the clock: one connection attempt with a short timeout, then one line,
    before Ray starts (the SDK would retry and then raise a traceback of curl errors)."""
    monkeypatch.chdir(tmp_path)
    refused(argv, "storage s3://bucket/sweeps")
    assert "does not answer" in run(argv)[2]
    assert dead_store and all(t <= results.PROBE_TIMEOUT_S for _, t in dead_store)
    assert len(dead_store) == 2  # one probe per command (the two commands just run)


# ---------------------------------------------- rules that never match, identical trials


def _space(**sections) -> dict:
    raw = yaml.safe_load(packaged_search_space("smoke").read_text())
    for k, v in sections.items():
        raw[k] = {**(raw.get(k) or {}), **v} if isinstance(v, dict) and k != "grid" else v
    return raw


def test_a_rule_naming_no_preset_is_refused():
    raw = _space(sweep={"resources_by": [{"preset": "digits-tinyy", "cpu": 2}]})
    with pytest.raises(ConfigError, match=r"sweep.resources_by\[0\].preset: unknown model preset 'digits-tinyy'"):
        search_space_from_dict(raw)


@pytest.mark.parametrize(
    "rules, index",
    [([{"max_params": 10, "cpu": 2}], 0), ([{"max_params": 10**9, "cpu": 1}, {"preset": "digits-tiny", "cpu": 2}], 1)],
    ids=["bound below every network", "shadowed by an earlier rule"],
)  # fmt: skip
def test_a_rule_that_matches_no_trial_is_refused(tmp_path, rules, index):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_space(sweep={"resources_by": rules}, model={"preset": "digits-tiny"})))
    refused(["sweep", str(path), "--dry-run"], f"sweep.resources_by[{index}]: matches no trial of this grid")


def test_grid_points_that_resolve_to_one_experiment_are_refused():
    # a preset replaces the architecture an earlier axis set: both base_channels give one network
    raw = _space(grid={"model.base_channels": [16, 32], "model.preset": ["digits-tiny"]})
    with pytest.raises(ConfigError, match="resolve to the same experiment"):
        search_space_from_dict(raw)


# -------------------------------------------------------------------------- Optuna search


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"objective": {"metric": ["tau_mem_step"]}}, "search.objective.metric: must be one of"),
        ({"objective": [{"metric": "tau_mem_step", "mode": ["max"]}]}, "search.objective[0].mode: must be one of min, max"),
        ({"sampler": ["tpe"]}, "search.sampler: must be one of tpe, random, nsga2"),
        ({"startup_trials": 8}, "search.startup_trials: is 8, but the search has 8 trials"),
        ({"axes": {"train.device": {"choice": ["cpu", "cuda"]}}}, "train.device: is cuda, but sweep.resources.gpu is 0"),
    ],
)  # fmt: skip
def test_optuna_search_values_are_checked_before_ray(tmp_path, patch, fragment):
    raw = yaml.safe_load(packaged_search_space("optuna_digits").read_text())
    raw["search"].update(patch)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    refused(["sweep", str(path), "--dry-run"], fragment)


# ----------------------------------------------------------------- code from elsewhere

FACTORY_MODULES = {
    "hangs": "import time\ntime.sleep(60)\n",
    "exits": "import sys\nsys.exit(3)\n",
    "no_params": "from torch import nn\ndef net(**kw):\n    return nn.Identity()\n",
    "talks": "import os\nprint('hello from a user module')\nos.write(1, b'and from C\\n')\n"
    "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
    "        self.conv = nn.Conv2d(c, c, 3, padding=1)\n    def forward(self, x, c_noise, class_labels=None):\n"
    "        return self.conv(x)\ndef net(in_channels, **kw):\n    return Net(in_channels)\n",
}


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    for name, text in FACTORY_MODULES.items():
        (tmp_path / f"bd_{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(external, "FACTORY_TIMEOUT_S", 1.0)
    yield tmp_path
    for name in FACTORY_MODULES:
        sys.modules.pop(f"bd_{name}", None)


def _factory_space(tmp_path: Path, module: str) -> Path:
    path = tmp_path / f"{module}.yaml"
    raw = _space(model={"kind": "python", "factory": f"{module}:net"})
    raw["model"] = {"kind": "python", "factory": f"{module}:net"}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "module, fragment",
    [("bd_hangs", "importing bd_hangs did not finish in 1 s"), ("bd_exits", "importing bd_exits called exit(3)"),
     ("bd_no_params", "built a network without trainable parameters")],
)  # fmt: skip
def test_factory_modules_that_misbehave(user_modules, module, fragment):
    refused(["sweep", str(_factory_space(user_modules, module)), "--dry-run"], fragment)


def test_a_factory_that_prints_leaves_the_json_clean(user_modules, capfd):
    assert cli.main(["sweep", str(_factory_space(user_modules, "bd_talks")), "--dry-run", "--json"]) == 0
    out, err = capfd.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]  # every stdout line a config
    assert len(rows) == 3 and all(r["model"]["factory"] == "bd_talks:net" for r in rows)
    assert "hello from a user module" in err and "and from C" in err


# ------------------------------------------------------------------------- raydiff analyze


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from analysis_synth import write_sweep

    root = tmp_path_factory.mktemp("an") / "synth"
    write_sweep(root, n=(64, 128), b=(16,), lr=(1e-4,), budget=20_000)
    return root


def _snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "out, fragment",
    [(".", "is the results folder"), ("metrics", "is a folder of the results folder"), ("trials.parquet", "is a file")],
)  # fmt: skip
def test_analyze_never_writes_over_a_results_folder(synth, tmp_path, out, fragment):
    root = tmp_path / "r"
    shutil.copytree(synth, root)
    before = _snapshot(root)
    refused(["analyze", str(root), "--out", str(root / out), "--boot", "0"], fragment)
    assert _snapshot(root) == before


def test_analyze_refuses_duplicated_or_mixed_rows(synth, tmp_path):
    dup = tmp_path / "dup"
    shutil.copytree(synth, dup)
    t = pq.read_table(dup / "trials.parquet")
    pq.write_table(pa.concat_tables([t, t.slice(0, 1)]), dup / "trials.parquet")
    refused(["analyze", str(dup), "--out", str(tmp_path / "a1"), "--boot", "0"], "more than once")

    rows = tmp_path / "rows"
    shutil.copytree(synth, rows)
    first = sorted((rows / "metrics").glob("*.parquet"))[0]
    m = pq.read_table(first)
    pq.write_table(pa.concat_tables([m, m.slice(0, 1)]), first)
    refused(["analyze", str(rows), "--out", str(tmp_path / "a2"), "--boot", "0"], "more than once: each evaluation is one row")

    mixed = tmp_path / "mixed"
    shutil.copytree(synth, mixed)
    files = sorted((mixed / "metrics").glob("*.parquet"))
    m = pq.read_table(files[-1])
    meta = dict(m.schema.metadata or {})
    space = json.loads(meta[b"raydiff.search_space"])
    space["sweep"]["name"] = "another"
    meta[b"raydiff.search_space"] = json.dumps(space).encode()
    pq.write_table(m.replace_schema_metadata(meta), files[-1])
    refused(["analyze", str(mixed), "--out", str(tmp_path / "a3"), "--boot", "0"], "comes from another sweep")


# ----------------------------------------------------------------------------- the monitor

TRAIN = torch.rand(16, 1, 8, 8) * 2 - 1  # [N, C, H, W] in [-1, 1]


@pytest.mark.parametrize(
    "make, error, fragment",
    [
        (lambda: MemorizationMonitor(torch.full((4, 1, 2, 2), float("nan"))), ValueError, "NaN or infinite"),
        (lambda: MemorizationMonitor(TRAIN[:1]), ValueError, "at least 2 images for the ratio test"),
        (lambda: MemorizationMonitor([[0.0, 1.0], [1.0, 0.0]]), TypeError, "torch.Tensor or numpy array"),
        (lambda: MemorizationMonitor(TRAIN, threshold=1.5), ValueError, "threshold must be in (0, 1]"),
        (lambda: MemorizationMonitor(TRAIN, threshold=float("nan")), ValueError, "threshold must be in (0, 1]"),
        (lambda: MemorizationMonitor(TRAIN, patience=1.5), TypeError, "patience must be an int"),
        (lambda: MemorizationMonitor(TRAIN, ratio="1/3"), TypeError, "ratio must be a number"),
        (lambda: MemorizationMonitor(TRAIN, ratio=1.0), ValueError, "ratio must be in (0, 1)"),
        (lambda: MemorizationMonitor(TRAIN, cosine=2.0), ValueError, "cosine must be in [-1, 1]"),
        (lambda: MemorizationMonitor(TRAIN, device="cuda:7"), ValueError, "does not exist here"),
        (lambda: MemorizationMonitor(TRAIN, device="gpu"), ValueError, "must name a torch device"),
        (lambda: MemorizationMonitor(TRAIN, embedding="inception"), TypeError, "embedding must be callable"),
        (lambda: MemorizationMonitor(TRAIN).evaluate(TRAIN[:0], 1), ValueError, "empty batch"),
        (lambda: MemorizationMonitor(TRAIN).evaluate(TRAIN.permute(0, 2, 3, 1), 1), ValueError, "shaped like train_images"),
        (lambda: MemorizationMonitor(TRAIN).evaluate((TRAIN + 1) * 127.5, 1), ValueError, "give samples in the training images' range"),
        (lambda: MemorizationMonitor((TRAIN + 1) * 127.5).evaluate(TRAIN, 1), ValueError, "give samples in the training images' range"),
        (lambda: MemorizationMonitor(TRAIN).evaluate(((TRAIN + 1) * 127).to(torch.uint8), 1), TypeError, "torch.uint8"),
        (lambda: MemorizationMonitor(TRAIN).evaluate(TRAIN > 0, 1), TypeError, "real numbers"),
        (lambda: MemorizationMonitor(TRAIN).evaluate(TRAIN, 1.5), TypeError, "step must be an int"),
    ],
)  # fmt: skip
def test_monitor_misuse(make, error, fragment):
    with pytest.raises(error) as e:
        make()
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_monitor_still_measures_what_it_should():
    """The checks refuse misuse only: numpy input, diverged (wide or NaN) samples are measured."""
    m = MemorizationMonitor(TRAIN.numpy())
    assert m.evaluate(TRAIN.numpy(), 1).f_mem == 1.0  # the training set copies itself
    wide = torch.randn(8, 1, 8, 8) * 1e3  # a diverging model: far out on both sides
    assert m.evaluate(wide, 2).f_mem == 0.0
    nan = TRAIN[:4].clone()
    nan[0, 0, 0, 0] = float("nan")
    assert math.isnan(m.evaluate(nan, 3).f_mem)  # measured and failed, as the onset rule wants
