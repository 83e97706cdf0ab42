"""Property-based tests (Hypothesis) of the surfaces behind the boundary, in the style of
test_input_fuzz.py: whatever a cluster file, a dry run's flags, analyze's flags or the monitor's
arguments hold, the answer is a result that makes sense or one clear refusal — exit 2 with one
line for the CLI, a ValueError/TypeError for the library — never a traceback, a hang, a written
file or a silently wrong number. Bounded for CI by `max_examples`;
`RAYDIFF_FUZZ_EXAMPLES=500 pytest tests/unit/test_boundary_fuzz.py` digs deeper.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paths import ROOT
from raydiff import cli
from raydiff.errors import UserError
from raydiff.monitor import MemorizationMonitor
from raydiff.tune import capacity

EXAMPLES = int(os.environ.get("RAYDIFF_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

WORDS = st.text(alphabet=st.characters(blacklist_characters="/.\\", blacklist_categories=("Cs",)), max_size=10)
SCALARS = st.one_of(
    st.none(), st.booleans(), WORDS, st.sampled_from(["", "-1", "1e999", ".inf", "nan", "4Gi", "500m", "2k", "0x10", "1_000"]),
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(WORDS, SCALARS, max_size=3))


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def assert_contract(code, err: str) -> None:
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip("\n").splitlines()
        assert len(lines) == 1 and lines[0].startswith("raydiff: error: "), err


def snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


# ------------------------------------------------------------------------- cluster files


def _mutate(draw, raw):
    """One to three edits at any depth of a parsed YAML document: a value replaced, a key
    removed or added, a mapping turned into a list."""
    for _ in range(draw(st.integers(1, 3))):
        node = raw
        while True:
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
            if not children:
                break
            key, child = draw(st.sampled_from(children))
            if not isinstance(child, (dict, list)) or not child or draw(st.booleans()):
                how = draw(st.sampled_from(["value", "drop", "add", "listify"]))
                if how == "value":
                    node[key] = draw(VALUES)
                elif how == "drop" and isinstance(node, dict):
                    del node[key]
                elif how == "add" and isinstance(node, dict):
                    node[draw(WORDS)] = draw(VALUES)
                elif how == "listify":
                    node[key] = [child]
                break
            node = child
    return raw


@st.composite
def cluster_file(draw) -> tuple[str, str]:
    name = draw(st.sampled_from(["aws.yaml", "kuberay.yaml", "slurm.sbatch"]))
    text = (ROOT / "cluster" / name).read_text()
    if name.endswith(".sbatch"):
        lines = text.splitlines()
        for _ in range(draw(st.integers(1, 3))):
            opt = draw(st.sampled_from(["--nodes", "-N", "--cpus-per-task", "-c", "--gpus-per-node", "--gres"]))
            value = draw(st.one_of(WORDS, st.sampled_from(["0", "-1", "2-4", "gpu", "gpu:2", "gpu:a100:2", "gpu:x:y", "1e3", "99999999"])))
            lines.insert(1, f"#SBATCH {opt}={value}")
        return name, "\n".join(lines) + "\n"
    return name, yaml.safe_dump(_mutate(draw, yaml.safe_load(text)))


@FUZZ
@given(case=cluster_file())
def test_mutated_cluster_files_give_node_types_or_one_line(case):
    name, text = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(text)
        try:
            types = capacity.read_cluster_file(path)
        except UserError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            return
    for t in types:  # what the reader returns is what placement can count on
        assert isinstance(t.max_nodes, int) and 0 <= t.max_nodes <= capacity.MAX_NODES_COUNTED
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in t.resources.values())


# ------------------------------------------------------------ the dry run's flag combinations

FLAG_VALUES = {
    "--name": ["x", "", " ", "a/b", "..", "-x", "ok_name"],
    "--storage": ["r", "", "s3://", "s3://b/p", "ftp://h/x", "s3://b/p?endpoint_override=h:notaport", "gs://b"],
    "--address": ["", "auto", "h:1", "h:0", "h:99999", "ray://h:10001", "ray://h", "http://h:1", "a b:1"],
    "--cluster": ["", "cluster/aws.yaml", "cluster/slurm.sbatch", "missing.yaml", "README.md"],
    "--mode": ["grid", "one_factor", "random"],
    "--log-to": ["csv", "json", "nosuch", ""],
    "--resume": ["", "x"],
    "--tau": ["1000", "0", "-5", "nan", "inf", "1e300", "x"],
    "--gpu-tflops": ["100", "0", "nan", "1e99"],
    "--gpu-utilization": ["0.5", "0", "1.5", "nan"],
}
SWITCHES = ["--json", "--json-cost"]


@st.composite
def dry_run_argv(draw) -> list[str]:
    argv = ["sweep", draw(st.sampled_from(["smoke", "optuna_digits"])), "--dry-run"]
    for flag in draw(st.lists(st.sampled_from(sorted(FLAG_VALUES)), max_size=3, unique=True)):
        argv += [flag, draw(st.sampled_from(FLAG_VALUES[flag]))]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    return argv


@FUZZ
@given(argv=dry_run_argv())
def test_dry_run_flag_combinations(argv, tmp_path_factory, monkeypatch):
    d = tmp_path_factory.mktemp("dry")
    (d / "cluster").mkdir()
    for f in ("aws.yaml", "slurm.sbatch"):
        shutil.copy(ROOT / "cluster" / f, d / "cluster" / f)
    (d / "README.md").write_text("# not a cluster file\n")
    monkeypatch.chdir(d)
    monkeypatch.delenv("RAYDIFF_STORAGE", raising=False)
    before = snapshot(d)
    code, err = run(argv)
    assert_contract(code, err)
    assert snapshot(d) == before  # a dry run writes nothing, whatever it was given


# ------------------------------------------------------------------------- analyze's flags


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from analysis_synth import write_sweep

    root = tmp_path_factory.mktemp("an") / "synth"
    write_sweep(root, n=(64, 128), b=(16,), lr=(1e-4,), budget=20_000)
    return root


@FUZZ
@given(
    boot=st.one_of(st.sampled_from(["0", "10", "1", "9", "-1", "20001", "1000000000"]), st.integers(-5, 30).map(str)),
    out=st.sampled_from(["new", ".", "metrics", "trials.parquet", "analysis", ""]),
    censored=st.sampled_from([None, "auto", "tobit", "ols", "drop"]),
    copies=st.sampled_from([None, "", "nope", ","]),
)
def test_analyze_flags(synth, boot, out, censored, copies):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "synth"
        shutil.copytree(synth, root)
        argv = ["analyze", str(root), "--boot", boot]
        argv += ["--out", str(Path(d) / "new") if out == "new" else str(root / out) if out else ""]
        argv += ["--censored", censored] if censored else []
        argv += ["--copies", copies] if copies is not None else []
        before = snapshot(root)
        code, err = run(argv)
        assert_contract(code, err)
        if code == 2:
            assert snapshot(root) == before
        else:  # it ran: the results folder's own files are as they were, only analysis/ is new
            assert [p for p in snapshot(root) if not p[0].startswith("analysis")] == [p for p in before if not p[0].startswith("analysis")]
            assert 10 <= int(boot) <= 20_000 or int(boot) == 0


# --------------------------------------------------------------------- the monitor's arguments

TRAIN = torch.rand(12, 1, 4, 4) * 2 - 1  # [N, C, H, W] in [-1, 1]


@st.composite
def samples(draw):
    kind = draw(st.sampled_from(["same", "scaled", "shape", "empty", "nan", "dtype", "numpy", "list", "noise"]))
    x = TRAIN[: draw(st.integers(1, 12))].clone()
    if kind == "scaled":
        x = (x + 1) * draw(st.sampled_from([0.5, 127.5, 1e3, 1e-3]))
    elif kind == "shape":
        x = x.reshape(len(x), *draw(st.sampled_from([(4, 4), (16,), (4, 4, 1), (1, 2, 8)])))
    elif kind == "empty":
        x = x[:0]
    elif kind == "nan":
        x[0, 0, 0, 0] = draw(st.sampled_from([math.nan, math.inf]))
    elif kind == "dtype":
        x = x.to(draw(st.sampled_from([torch.uint8, torch.bool, torch.int64, torch.float16, torch.complex64])))
    elif kind == "numpy":
        return x.numpy()
    elif kind == "list":
        return x.tolist()
    elif kind == "noise":
        x = torch.randn_like(x) * draw(st.sampled_from([1.0, 10.0]))
    return x


@FUZZ
@given(
    kwargs=st.dictionaries(st.sampled_from(["threshold", "patience", "ratio", "cosine", "device"]), SCALARS, max_size=2),
    batch=samples(),
    step=st.one_of(st.integers(-2, 10**6), st.floats(allow_nan=True), st.none(), WORDS),
)
def test_monitor_arguments(kwargs, batch, step):
    try:
        m = MemorizationMonitor(TRAIN, **kwargs)
        r = m.evaluate(batch, step)
    except (ValueError, TypeError) as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(step, int) and not isinstance(step, bool)
    assert math.isnan(r.f_mem) or 0.0 <= r.lo <= r.f_mem <= r.hi <= 1.0
    if not math.isnan(r.f_mem):
        assert np.all(np.isfinite(r.ratio)) and len(r.nearest) == len(r.ratio) > 0
