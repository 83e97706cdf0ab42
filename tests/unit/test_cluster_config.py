"""Every YAML under cluster/ is valid for the tool that reads it, and keeps the project's rules:
the Ray in every image is the Ray raydiff pins, no dashboard or GCS port is open beyond the
cluster, token authentication is on, results go to remote storage, the head runs no trial.

Checked offline: the cluster-launcher files with Ray's own validator (the same one `ray up` runs
before it contacts AWS), the KubeRay manifest against the RayCluster fields KubeRay defines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from paths import ROOT

CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.glob("*.yaml")) + sorted(CLUSTER.glob("*.yml"))


def ray_pin() -> str:
    m = re.search(r'"ray\[[^\]]*\]==([0-9][\w.]*)"', (ROOT / "pyproject.toml").read_text())
    assert m, "pyproject.toml must pin ray[...]==X.Y.Z"
    return m.group(1)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


LAUNCHER = [p for p in YAMLS if "provider" in load(p)]
KUBERAY = [p for p in YAMLS if load(p).get("kind") == "RayCluster"]


def env_of(options: list[str]) -> dict[str, str]:
    """`--env K=V` / `-e K=V` pairs among docker run options."""
    words = [w for opt in options for w in shlex.split(opt)]
    pairs = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--env", "-e")]
    pairs += [w.split("=", 1)[1] for w in words if w.startswith("--env=")]
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def commands(cfg: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")  # fmt: skip
    return [c for k in keys for c in cfg.get(k) or []]


def test_every_yaml_is_checked_here():
    assert YAMLS, "cluster/ holds no YAML"
    assert set(LAUNCHER) | set(KUBERAY) == set(YAMLS), "a YAML under cluster/ that no test understands"
    assert CLUSTER / "aws.yaml" in LAUNCHER


# ------------------------------------------------------------------ cluster launcher (`ray up`)


@pytest.fixture(params=LAUNCHER, ids=lambda p: p.name)
def launcher(request) -> tuple[Path, dict]:
    """(the file, its config as `ray up` prepares and validates it before contacting the cloud)."""
    prepared = prepare_config(load(request.param))
    validate_config(prepared)  # raises on any schema violation
    return request.param, prepared


def test_validator_is_live(launcher):
    bad = load(launcher[0])
    next(iter(bad["available_node_types"].values()))["resourcez"] = {"CPU": 1}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_ray_version_matches_pin(launcher):
    _, cfg = launcher
    pin = ray_pin()
    docker = cfg["docker"]
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            assert docker[key].startswith("rayproject/ray"), docker[key]
            assert docker[key].split(":", 1)[1].split("-")[0] == pin, f"docker.{key} {docker[key]} ≠ ray {pin}"
    for cmd in commands(cfg):
        for version in re.findall(r"\bray(?:\[[^\]]*\])?==([0-9][\w.]*)", cmd):
            assert version == pin, cmd
    assert any("ray.__version__" in c and pin in c for c in cfg["setup_commands"]), "setup must check the image's Ray"


def test_dashboard_only_on_loopback(launcher):
    _, cfg = launcher
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    hosts = [h for c in starts for h in re.findall(r"--dashboard-host[= ](\S+)", c)]
    assert hosts == ["127.0.0.1"], f"the head must set --dashboard-host=127.0.0.1 (found {hosts})"
    docker = cfg["docker"]
    options = docker.get("run_options", []) + docker.get("head_run_options", []) + docker.get("worker_run_options", [])
    for text in commands(cfg) + options:
        assert "0.0.0.0" not in text, text
        assert not re.search(r"(^|\s)(-p|--publish)\b", text), f"no container port may be published: {text}"


def test_only_ssh_ingress(launcher):
    _, cfg = launcher
    rules = cfg["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        assert rule.get("FromPort") == rule.get("ToPort") == 22, f"ingress beyond SSH: {rule}"
    for name, node_type in cfg["available_node_types"].items():
        # a group of the user's own would bypass the rule above (Ray adds SSH + intra-cluster only)
        assert "SecurityGroupIds" not in node_type["node_config"], name


def test_token_auth_on_every_node(launcher):
    _, cfg = launcher
    docker = cfg["docker"]
    assert env_of(docker.get("run_options", [])).get("RAY_AUTH_MODE") == "token", "RAY_AUTH_MODE=token on every node"
    assert env_of(docker.get("head_run_options", []) + docker.get("worker_run_options", [])).get(
        "RAY_AUTH_MODE", "token"
    ) == "token"
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", "the token reaches every node"


def test_storage_credentials_and_ami(launcher):
    path, cfg = launcher
    docker = cfg["docker"]
    env = env_of(docker.get("run_options", []) + docker.get("head_run_options", []))
    assert env.get("RAYDIFF_STORAGE", "").startswith("s3://"), "multi-node Tune needs storage every node reaches"
    for name, node_type in cfg["available_node_types"].items():
        assert "IamInstanceProfile" in node_type["node_config"], f"{name}: credentials come from an instance profile"
        # least privilege: only the head may start instances; workers reach the bucket alone
        expected = "raydiff-head" if name == cfg["head_node_type"] else "raydiff-worker"
        assert node_type["node_config"]["IamInstanceProfile"] == {"Name": expected}, name
        # Ray's built-in default AMI (used for a missing ImageId) ships a CUDA 11.2 driver
        assert node_type["node_config"].get("ImageId", "latest_dlami") != "latest_dlami", f"{name}: set an AMI"
    assert not re.search(r"AWS_SECRET_ACCESS_KEY|aws_secret_access_key|AKIA[0-9A-Z]{16}", path.read_text())


def test_a_spot_worker_type_like_the_on_demand_one(launcher):
    _, cfg = launcher
    types = cfg["available_node_types"]
    spot = [n for n, t in types.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot, "a spot GPU worker type"
    for name in spot:  # a preempted trial resumes on any GPU node: same resources as an on-demand type
        assert any(types[o]["resources"] == types[name]["resources"] for o in types if o not in spot)
    assert sum(t.get("max_workers", 0) for n, t in types.items() if n != cfg["head_node_type"]) <= cfg["max_workers"]


def test_head_runs_no_trial_and_gpu_workers_autoscale(launcher):
    _, cfg = launcher
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    gpus = sorted(t["resources"].get("GPU", 0) for t in workers.values())
    assert gpus and gpus[0] >= 1, "every worker type offers GPUs"
    assert len(set(gpus)) >= 2, "a modest and a large GPU type"
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"], name


def test_setup_installs_raydiff_and_prestages(launcher):
    _, cfg = launcher
    setup = cfg["setup_commands"]
    install = [i for i, c in enumerate(setup) if "pip install" in c and "raydiff" in c]
    prestage = [i for i, c in enumerate(setup) if "raydiff prestage " in c]
    assert install and prestage and install[0] < prestage[0]
    mounts = {k: v for k, v in cfg["file_mounts"].items() if "raydiff" in k}
    assert list(mounts.values()) == ["."], "raydiff comes from the checkout `ray up` runs in"


# ------------------------------------------------------------------------- KubeRay RayCluster


@pytest.fixture(params=KUBERAY, ids=lambda p: p.name)
def raycluster(request) -> dict:
    return load(request.param)


def _containers(template: dict) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)
    return containers


def test_raycluster_schema(raycluster):
    rc = raycluster
    assert rc["apiVersion"] == "ray.io/v1" and rc["metadata"]["name"]
    spec = rc["spec"]
    assert set(spec) <= {
        "authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
        "headGroupSpec", "headServiceAnnotations", "managedBy", "rayVersion", "suspend", "upgradeStrategy",
        "workerGroupSpecs", "networkPolicy", "tlsOptions",
    }  # fmt: skip
    head = spec["headGroupSpec"]
    assert set(head) <= {"template", "headService", "enableIngress", "rayStartParams", "serviceType",
                         "resources", "labels", "ingressOptions"}  # fmt: skip
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    _containers(head["template"])
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(names) == len(set(names))
    for g in spec["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
        assert all(isinstance(v, str) for v in g.get("rayStartParams", {}).values())
        for c in _containers(g["template"]):
            assert float(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1, g["groupName"]


def test_raycluster_pins_and_locks_down(raycluster):
    pin = ray_pin()
    spec = raycluster["spec"]
    assert spec["rayVersion"] == pin
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for c in (c for t in templates for c in _containers(t)):
        assert pin in c["image"].rsplit(":", 1)[-1], f"image {c['image']} must carry the Ray pin {pin}"
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert (head.get("headService") or {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress")
    assert head["rayStartParams"].get("num-cpus") == "0", "the head runs no trial"
    env = {e["name"]: e.get("value") for e in _containers(head["template"])[0].get("env", [])}
    assert env.get("RAYDIFF_STORAGE", "").startswith("s3://")


def test_dockerfile_base_is_the_pin():
    dockerfile = CLUSTER / "Dockerfile"
    if not dockerfile.exists():
        pytest.skip("no Dockerfile under cluster/")
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M)
    assert froms and all(f.split(":", 1)[1].split("-")[0] == ray_pin() for f in froms), froms
