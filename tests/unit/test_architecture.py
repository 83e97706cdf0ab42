"""The layout's rules, checked on the source: no import cycle among raydiff's modules (imports
inside functions count: a local import that dodges a cycle is a cycle still), the training loop
loads no Ray, and nobody outside `raydiff/config/` reaches for its private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from paths import ROOT

PACKAGE = ROOT / "raydiff"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import in the file, at any depth
    (function-local ones included) except those under `if TYPE_CHECKING:`, which never run."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
    return out


def resolve(target: str, names: list[str]) -> set[str]:
    """The raydiff modules an import statement loads: the module, and any submodule named in
    `from package import submodule`."""
    if not target.startswith("raydiff"):
        return set()
    found = {target} if target in MODULES else set()
    found |= {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
    return found


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, names, _ in imports_of(name, path):
            g[name] |= resolve(target, names) - {name}
    # importing a.b.c runs a/__init__ and a/b/__init__ first (a module's own packages aside: they
    # are being imported already when it runs, as a package's __init__ imports its parts)
    for name in list(g):
        own = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        for d in set(g[name]):
            parts = d.split(".")
            g[name] |= {".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in MODULES} - own - {name}
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle among `g`'s nodes as a path (first == last), or None. Iterative DFS, colours."""
    colour = dict.fromkeys(g, 0)  # 0 new, 1 on the stack, 2 done
    for start in sorted(g):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(g[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(g[nxt]))))
                path.append(nxt)
    return None


@pytest.mark.parametrize(
    "g, cyclic",
    [
        pytest.param({"a": {"b"}, "b": {"c"}, "c": set()}, False, id="chain"),
        pytest.param({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False, id="diamond"),
        pytest.param({"a": {"b"}, "b": {"a"}}, True, id="two-cycle"),
        pytest.param({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True, id="three-cycle"),
        pytest.param({"a": {"a"}}, True, id="self-loop"),
    ],
)
def test_find_cycle_table(g, cyclic):
    cycle = find_cycle(g)
    assert (cycle is not None) is cyclic
    if cycle:
        assert cycle[0] == cycle[-1] and all(b in g[a] for a, b in zip(cycle, cycle[1:]))


def test_local_imports_are_seen(tmp_path):
    src = "def f():\n    from raydiff.data import load\n    if x:\n        import raydiff.trial\n"
    p = tmp_path / "m.py"
    p.write_text(src)
    assert [t for t, _, _ in imports_of("raydiff.m", p)] == ["raydiff.data", "raydiff.trial"]


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_network_module_imports_nothing_of_raydiff():
    """EDM's rule: the network depends on nothing above it (presets live with the config)."""
    assert graph()["raydiff.models.unet"] == set()


def test_measures_registry_is_pure():
    """The registry of measures, which the config layer reads, imports only itself at module level:
    what a measure computes with (torch, raydiff.metrics) it imports inside `compute`."""
    for name, path in MODULES.items():
        if not name.startswith("raydiff.measures"):
            continue
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top:
            target = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            assert target in ("__future__", "collections.abc", "dataclasses", "importlib", "os", "typing") or target.startswith("raydiff.measures") or (
                target == "raydiff" and all(a.name == "measures" for a in node.names)
            ), (name, target)


def test_config_is_pure():
    """The config layer loads neither torch nor Ray, and imports nothing above it."""
    allowed = {"raydiff", "raydiff.errors", "raydiff.metrics.objectives", "raydiff.metrics"}
    for name, deps in graph().items():
        if name.startswith("raydiff.config"):
            # the registry of measures (standard library only at module level) names the tests a config may select
            assert all(d.startswith(("raydiff.config", "raydiff.measures")) or d in allowed for d in deps), (name, deps)
    out = subprocess.run(
        [sys.executable, "-c", "import sys, raydiff.config; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray'}))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_trial_loads_no_ray():
    code = "import sys, raydiff.trial; print([m for m in sys.modules if m == 'ray' or m.startswith('ray.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_monitor_is_a_library_without_the_sweep():
    """`raydiff.monitor` goes into anyone's training loop: no Ray, no trial loop, no Tune."""
    code = "import sys, raydiff.monitor; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray' or m.startswith(('raydiff.tune', 'raydiff.trial', 'raydiff.config'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_no_private_names_from_config_outside_it():
    offenders = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        name = module_name(path)
        if name.startswith("raydiff.config"):
            continue
        for target, names, line in imports_of(name, path):
            if target.startswith("raydiff.config"):
                offenders += [f"{path.relative_to(ROOT)}:{line}: {target}.{n}" for n in names if n.startswith("_")]
    assert not offenders, offenders


@pytest.mark.parametrize(
    "argv, absent",
    [
        pytest.param(["sweep", "--dry-run"], {"ray"}, id="dry-run-loads-no-ray"),
        pytest.param(["status", "nowhere"], {"ray", "torch"}, id="status-loads-neither"),
    ],
)
def test_commands_load_only_what_they_use(argv, absent):
    code = (
        "import sys, contextlib, io\nfrom raydiff import cli\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n    cli.main({argv!r})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert not set(eval(out.stdout.strip().splitlines()[-1])) & absent
