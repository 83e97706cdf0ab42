"""Property-based tests of the input boundary (Hypothesis): whatever a search space, a flag or a
results folder holds, a command ends in success or in one line naming what is wrong, exit 2,
never a traceback, a hang or a written file.

Strategies mutate the packaged search spaces (types, magnitudes, non-finite numbers, unknown keys,
names, structure) and a small valid results folder (files removed, truncated, replaced by folders,
columns dropped, JSON corrupted). `train` runs with the training loop stubbed out, so what is
exercised is everything before it: parsing, validation, preflight, point selection. Bounded for
CI by `max_examples`; `RAYDIFF_FUZZ_EXAMPLES=500 pytest tests/unit/test_input_fuzz.py` digs deeper.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raydiff import cli
from raydiff.config import packaged_search_space

EXAMPLES = int(os.environ.get("RAYDIFF_FUZZ_EXAMPLES", "30"))
TIME_BOUND_S = 600.0  # per command: a guard against hangs only, far above the slowest valid case (~2 s idle)
SPACES = ["default", "smoke", "optuna_digits", "marion2026_cifar10"]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# values a user might type where another value goes: wrong types, huge and non-finite numbers,
# names no filesystem takes. Strings carry no "/" or ".", so a path they make stays under the
# test's own folder.
WORDS = st.text(alphabet=st.characters(blacklist_characters="/.\\", blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.none(), st.booleans(), WORDS, st.sampled_from(["\n", "a\x00b", "x" * 300, "", "-1", "1e999", ".inf", "nan"]),
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(WORDS, SCALARS, max_size=3))


def run(argv: list[str]) -> tuple[int, str, float]:
    err, t0 = io.StringIO(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    return code, err.getvalue(), time.perf_counter() - t0


def assert_contract(code, err: str, seconds: float, allowed=(0, 2)) -> None:
    assert "Traceback" not in err, err
    assert code in allowed, (code, err)
    if code == 2:
        lines = err.strip("\n").splitlines()
        assert len(lines) == 1 and lines[0].startswith("raydiff: error: "), err
    assert seconds < TIME_BOUND_S, seconds


def snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@st.composite
def mutated_space(draw) -> dict:
    """A packaged search space with one to three edits at any depth."""
    raw = yaml.safe_load(packaged_search_space(draw(st.sampled_from(SPACES))).read_text())
    for _ in range(draw(st.integers(1, 3))):
        node, path = raw, []
        while isinstance(node, dict) and node and draw(st.booleans()):  # walk down a random branch
            key = draw(st.sampled_from(sorted(node, key=str)))
            path.append(key)
            if not isinstance(node[key], dict):
                break
            node = node[key]
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        edit = draw(st.sampled_from(["replace", "delete", "unknown-key", "whole-section"]))
        if not path or edit == "unknown-key":
            target = parent if isinstance(parent, dict) else raw
            target[draw(WORDS) or "extra"] = draw(VALUES)
        elif edit == "delete":
            parent.pop(path[-1], None)
        elif edit == "whole-section":
            raw[path[0]] = draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES)
    return raw


def write_space(tmp: Path, raw) -> Path:
    path = tmp / "space.yaml"
    try:
        path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    except yaml.YAMLError:  # a value PyYAML cannot write (it is then no input a user can give)
        path.write_text(json.dumps(raw, default=str))
    return path


@FUZZ
@given(raw=mutated_space())
def test_dry_run_of_mutated_spaces(raw):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = write_space(tmp, raw)
        before = snapshot(tmp)
        assert_contract(*run(["sweep", str(path), "--dry-run", "--storage", str(tmp / "store")]))
        assert snapshot(tmp) == before  # a dry run writes nothing, valid or not


@FUZZ
@given(raw=mutated_space(), point=st.integers(-3, 40), threads=st.sampled_from([None, -1, 0, 1, 2**40]))
def test_train_of_mutated_spaces(raw, point, threads, monkeypatch_module):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = write_space(tmp, raw)
        argv = ["train", str(path), "--point", str(point)] + ([] if threads is None else ["--threads", str(threads)])
        before = snapshot(tmp)
        assert_contract(*run(argv))
        assert snapshot(tmp) == before


@pytest.fixture(scope="module")
def monkeypatch_module():
    """`raydiff train` with the loop stubbed: the boundary is under test, not the training."""
    import raydiff.trial

    mp = pytest.MonkeyPatch()
    mp.setattr(raydiff.trial, "train", lambda cfg, report, state=None: {})
    mp.setattr("torch.set_num_threads", lambda n: None)
    yield mp
    mp.undo()


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))),
       flags=st.lists(st.sampled_from(["--dry-run", "--resume", "x", "--name", "", "--mode", "random", "--storage", "--log-to", "tb"]), max_size=4))  # fmt: skip
def test_sweep_of_arbitrary_text_and_flags(text, flags):
    """Any text as a search-space file, with any combination of flags after it (never a sweep that
    starts: a valid file is only dry-run)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "space.yaml"
        path.write_text(text)
        argv = ["sweep", str(path), "--storage", str(tmp / "store"), *flags]
        if "--dry-run" not in argv and "--resume" not in argv:
            argv.append("--dry-run")
        before = snapshot(tmp)
        assert_contract(*run(argv))
        assert snapshot(tmp) == before


# --------------------------------------------------------------------------- results folders


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory) -> Path:
    from analysis_synth import write_sweep

    root = tmp_path_factory.mktemp("sweep") / "synth"
    write_sweep(root, n=(64, 128), b=(16,), lr=(1e-4,), budget=20_000)
    space = json.loads(json.dumps(yaml.safe_load(packaged_search_space("smoke").read_text())))
    (root / "search_space.json").write_text(json.dumps(space))
    return root


def damage(root: Path, draw) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for _ in range(draw(st.integers(1, 3))):
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            return
        f = draw(st.sampled_from(files))
        how = draw(st.sampled_from(["remove", "truncate", "folder", "junk", "not-utf8", "drop-columns", "json-type"]))
        if how == "remove":
            f.unlink()
        elif how == "truncate":
            f.write_bytes(f.read_bytes()[: draw(st.integers(0, max(0, f.stat().st_size - 1)))])
        elif how == "folder":
            f.unlink()
            f.mkdir()
        elif how == "junk":
            f.write_bytes(draw(st.binary(max_size=64)))
        elif how == "not-utf8":
            f.write_bytes(b"\xff\xfe\x00{" + f.read_bytes()[:10])
        elif how == "drop-columns" and f.suffix == ".parquet":
            try:
                t = pq.read_table(f)
            except pa.ArrowException:
                continue
            keep = [c for c in t.column_names if not draw(st.booleans())]
            pq.write_table(t.select(keep), f)
        elif how == "json-type" and f.suffix == ".json":
            f.write_text(json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5)))))


@FUZZ
@given(data=st.data(), command=st.sampled_from(["status", "analyze", "resume"]))
def test_damaged_results_folders(sweep_folder, data, command):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "synth"
        shutil.copytree(sweep_folder, root)
        damage(root, data.draw)
        out = Path(d) / "analysis"
        if command == "status":
            argv = ["status", str(root)]
        elif command == "analyze":
            argv = ["analyze", str(root), "--out", str(out), "--boot", "20"]
        else:
            # only damage that leaves no valid saved space: a valid one would start Ray
            space = root / "search_space.json"
            try:
                json.loads(space.read_text())
                space.write_bytes(b"\xff" + space.read_bytes()[1:] if space.is_file() else b"")
            except (OSError, ValueError):
                pass
            argv = ["sweep", "--resume", "synth", "--storage", d]
        before = snapshot(Path(d))
        code, err, seconds = run(argv)
        assert_contract(code, err, seconds)
        if code == 2:
            assert snapshot(Path(d)) == before  # a refused command writes nothing


def test_the_undamaged_folder_is_read(sweep_folder, tmp_path):
    """The fuzzing above starts from a folder both commands read: its refusals are the damage's."""
    assert run(["status", str(sweep_folder)])[0] == 0
    assert run(["analyze", str(sweep_folder), "--out", str(tmp_path / "a"), "--boot", "20"])[0] == 0
