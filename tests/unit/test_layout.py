"""The test suite's layout, checked on the source with `ast` (no test file is imported):

- tests/unit (pure units), tests/loops (torch loops, no Ray) and tests/ray (a real Ray) hold every
  test file; the helpers imported by bare name stay in tests/ (pyproject puts it on the path);
- every test that starts Ray is marked `ray`, wherever it lives, so `pytest -m "not ray"` is the
  fast layer exactly;
- nothing under tests/unit or tests/loops calls `ray.init`.

"Starts Ray" is read the ways this suite's tests start it: a call to `ray.init`, `run_sweep`,
`Command` (tests/processes.py: `python -m raydiff.cli`, tracked for the Ray processes it starts),
`ray_tax.run` (benchmarks/ray_tax.py) or `RAY_ADDRESS="local"` (a new local Ray for a subprocess),
made by the test, by a helper function of its module, or by a fixture it uses; plus the two
fixtures that start Ray in ways no call shows (`ray start` subprocesses; `raydiff sweep` in-process).
"""

from __future__ import annotations

import ast
from pathlib import Path

from paths import ROOT

TESTS = ROOT / "tests"
LAYERS = ("unit", "loops", "ray")
HELPERS = ("conftest.py", "paths.py", "processes.py", "analysis_synth.py", "cifar_archive.py", "planner_sim.py", "hf_local.py",
           "mlflow_server.py", "wandb_files.py")
RAY_CALLS = {"ray.init", "run_sweep", "Command", "ray_tax.run"}
RAY_FIXTURES = {("ray/test_multinode.py", "cluster"), ("ray/test_smoke_sweep.py", "smoke")}


def all_test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain (the callee of a call), "" for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return ""


def calls(node: ast.AST) -> set[str]:
    """Every callee named anywhere inside node, as written (`ray.init`, `run_sweep`, `helper`)."""
    return {dotted(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)} - {""}


def starts_a_local_ray(node: ast.AST) -> bool:
    """RAY_ADDRESS="local" as a keyword or a dict entry: a subprocess told to start its own Ray."""
    for n in ast.walk(node):
        if isinstance(n, ast.keyword) and n.arg == "RAY_ADDRESS" and isinstance(n.value, ast.Constant) and n.value.value == "local":
            return True
        if isinstance(n, ast.Dict):
            for k, v in zip(n.keys, n.values):
                if isinstance(k, ast.Constant) and k.value == "RAY_ADDRESS" and isinstance(v, ast.Constant) and v.value == "local":
                    return True
    return False


def is_ray_mark(node: ast.AST) -> bool:
    return dotted(node.func if isinstance(node, ast.Call) else node) in {"pytest.mark.ray", "mark.ray"}


def marks_in(node: ast.AST | None) -> list[ast.AST]:
    """The marks of a `pytestmark = ...` value: one mark or a list/tuple of them."""
    if node is None:
        return []
    return list(node.elts) if isinstance(node, (ast.List, ast.Tuple)) else [node]


def pytestmark_of(body: list[ast.stmt]) -> ast.AST | None:
    for stmt in body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets):
            return stmt.value
    return None


def used_fixtures(fn: ast.FunctionDef, extra_marks: list[ast.AST]) -> set[str]:
    """The fixtures a function asks for: its parameters and any `usefixtures` mark on it or above it."""
    names = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]}
    for mark in [*fn.decorator_list, *extra_marks]:
        if isinstance(mark, ast.Call) and dotted(mark.func).endswith("mark.usefixtures"):
            names |= {a.value for a in mark.args if isinstance(a, ast.Constant)}
    return names


def is_fixture(fn: ast.FunctionDef) -> bool:
    return any(dotted(d.func if isinstance(d, ast.Call) else d) in {"pytest.fixture", "fixture"} for d in fn.decorator_list)


def functions(tree: ast.Module) -> list[tuple[ast.FunctionDef, list[ast.AST]]]:
    """Module-level functions and `Test*` class methods, each with the marks above it (module's
    pytestmark, class decorators and class pytestmark)."""
    module_marks = marks_in(pytestmark_of(tree.body))
    out = [(n, module_marks) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        marks = [*module_marks, *cls.decorator_list, *marks_in(pytestmark_of(cls.body))]
        out += [(n, marks) for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return out


def ray_starters(tree: ast.Module, rel: str, conftest_ray: set[str]) -> dict[str, bool]:
    """For each function of the module: does it start Ray (RAY_CALLS, RAY_ADDRESS="local", a module
    helper or a fixture that does)? Fixtures resolve to this module's own first, then conftest's."""
    fns = functions(tree)
    local_fixtures = {fn.name for fn, _ in fns if is_fixture(fn)}
    ray_fixtures = {name for f, name in RAY_FIXTURES if f == rel} | (conftest_ray - local_fixtures)
    starts = {fn.name: bool(calls(fn) & RAY_CALLS) or starts_a_local_ray(fn) for fn, _ in fns}
    changed = True
    while changed:  # through helpers and fixtures, to a fixed point
        changed = False
        for fn, marks in fns:
            if starts[fn.name]:
                continue
            helpers = {c for c in calls(fn) if c in starts and c not in local_fixtures}
            fixtures = used_fixtures(fn, marks) if is_fixture(fn) or fn.name.startswith("test") else set()
            ray_fixtures |= {f for f in local_fixtures if starts[f]}
            if any(starts[h] for h in helpers) or fixtures & ray_fixtures or (is_fixture(fn) and fn.name in ray_fixtures):
                starts[fn.name] = changed = True
    return starts


def conftest_ray_fixtures() -> set[str]:
    tree = parse(TESTS / "conftest.py")
    starts = ray_starters(tree, "conftest.py", set())
    return {fn.name for fn, _ in functions(tree) if is_fixture(fn) and starts[fn.name]}


def ray_tests_and_marks() -> dict[str, bool]:
    """`layer/file.py::test` → is it marked `ray`, for every test that starts Ray."""
    conftest_ray = conftest_ray_fixtures()
    out = {}
    for path in all_test_files():
        rel = path.relative_to(TESTS).as_posix()
        tree = parse(path)
        starts = ray_starters(tree, rel, conftest_ray)
        for fn, marks in functions(tree):
            if fn.name.startswith("test") and not is_fixture(fn) and starts[fn.name]:
                out[f"{rel}::{fn.name}"] = any(is_ray_mark(m) for m in [*fn.decorator_list, *marks])
    return out


def test_every_test_file_is_in_a_layer_and_the_helpers_stay_in_tests():
    misplaced = [p.relative_to(TESTS).as_posix() for p in all_test_files() if p.relative_to(TESTS).parts[0] not in LAYERS or len(p.relative_to(TESTS).parts) != 2]
    assert misplaced == [], f"test files outside tests/unit, tests/loops, tests/ray: {misplaced}"
    assert [h for h in HELPERS if not (TESTS / h).is_file()] == []
    assert [p.name for layer in LAYERS for p in (TESTS / layer).glob("conftest.py")] == [], "one conftest: tests/conftest.py"


def test_the_signals_see_the_suites_ray_tests():
    """Each way this suite starts Ray is seen (else the check below would pass on nothing)."""
    found = ray_tests_and_marks()
    for test in [
        "unit/test_optuna.py::test_single_objective_end_to_end",  # the ray_local fixture (conftest)
        "unit/test_bad_input.py::test_gpu_request_without_gpu_node",  # Command
        "unit/test_cluster_resources.py::test_gpu_sweep_on_a_gpu_less_machine_fails_in_seconds",  # RAY_ADDRESS=local
        "loops/test_benchmarks.py::test_ray_tax_quick",  # ray_tax.run
        "ray/test_faults.py::test_worker_killed_mid_trial_restarts_from_checkpoint",  # Command
        "ray/test_multinode.py::test_job_submitted_sweep_spreads_over_both_workers",  # the cluster fixture
        "ray/test_smoke_sweep.py::test_every_trial_stops_at_onset",  # the smoke fixture
    ]:
        assert test in found, test
    assert "unit/test_optuna.py::test_pareto_front" not in found
    assert "ray/test_faults.py::test_writer_killed_mid_write_leaves_the_previous_file" not in found


def test_every_test_that_starts_ray_is_marked_ray():
    unmarked = [t for t, marked in ray_tests_and_marks().items() if not marked]
    assert unmarked == [], f"start Ray but are not marked `@pytest.mark.ray` (so -m 'not ray' would run them): {unmarked}"


def test_no_ray_init_under_unit_or_loops():
    """A Ray of their own belongs in tests/ray or in a conftest fixture (tests/conftest.py's ray_local)."""
    offenders = [
        f"{p.relative_to(TESTS).as_posix()}:{n.lineno}"
        for layer in ("unit", "loops")
        for p in sorted((TESTS / layer).rglob("*.py"))
        for n in ast.walk(parse(p))
        if isinstance(n, ast.Call) and dotted(n.func) == "ray.init"
    ]
    assert offenders == []
