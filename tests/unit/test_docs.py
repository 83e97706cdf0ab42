"""The documentation says what the code does: every `raydiff` command in README.md, docs/ and the
cluster files parses with raydiff's own CLI parser and names spaces and files that exist; README
stays short and its test command is the one CI runs; the site's navigation lists every page; the
pages hold no paths of one machine and every figure they show is inside docs/; and, where mkdocs is
installed, the site builds in strict mode (CI builds it in .ci/run either way)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from paths import ROOT

from raydiff import cli
from raydiff.tune.loggers import LOGGERS

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
COMMAND = re.compile(r"raydiff ((?:sweep|prestage|status|analyze|train)\b[^&|;#`\n]*)")
# Words the docs write for "yours": each stands for a value that parses; the optional ones ([SPACE])
# are dropped. A space written as a placeholder is not looked up; every other one must exist.
PLACEHOLDERS = {
    "SPACE": "default", "SPACE…": "default", "RESULTS": "results/default", "NAME": "default",
    "STORAGE": "results", "DIR": "out", "TRIAL[,TRIAL]": "00000", "NAME[,NAME…]": "json", "i": "0",
}  # fmt: skip
OPTIONAL = {"[SPACE]", "[RESULTS]"}
PATHS_IN_REPO = re.compile(r"^(cluster|search_spaces|examples|benchmarks|analysis)/")


def code_of_markdown(text: str) -> list[str]:
    """The code a page shows: every line of its shell blocks (backslash continuations joined) and
    every inline code span outside fenced blocks (a span may wrap onto the next line)."""
    code, prose, fenced, shell, pending = [], [], False, False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced, shell = not fenced, line.strip()[3:] in ("bash", "sh", "shell", "console")
            continue
        if fenced:
            if not shell:  # a diagram, YAML, Python: no command lines
                continue
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            code.append(pending)
            pending = ""
        else:
            prose.append(line)
    spans = re.findall(r"`([^`]+)`", "\n".join(prose))
    return code + [" ".join(s.split()) for s in spans]


def code_of_cluster_file(text: str) -> list[str]:
    """Every line of a cluster file, "$SPACE" read as the script's default space."""
    default = re.search(r"SPACE=\$\{SPACE:-(\w+)\}", text)
    if default:
        text = text.replace('"$SPACE"', default.group(1))
    return text.splitlines()


def commands(lines: list[str]) -> list[list[str]]:
    """The argument lists of the `raydiff` commands in these lines of code, placeholders filled."""
    out = []
    for line in lines:
        for m in COMMAND.finditer(line):
            if not m.group(1).strip().split()[1:]:
                continue  # `raydiff analyze` alone names the command, it does not run it
            words = []
            for w in shlex.split(m.group(1)):
                if w in OPTIONAL or re.fullmatch(r"\$\{\w+\[@\]\}", w):
                    continue
                words.append(PLACEHOLDERS.get(w, w))
            out.append(words)
    return out


SOURCES = {
    **{f"cluster/{p.name}": code_of_cluster_file(p.read_text()) for p in sorted((ROOT / "cluster").iterdir())},
    "README.md": code_of_markdown((ROOT / "README.md").read_text(encoding="utf-8")),
    **{f"docs/{p.name}": code_of_markdown(p.read_text(encoding="utf-8")) for p in PAGES},
}


def problems(source: str, lines: list[str]) -> list[str]:
    """What is wrong with the `raydiff` commands in these lines: one that does not parse with
    raydiff's parser (flags, choices, types), a space that is neither packaged nor a file of the
    repository, a repository file (a cluster file) that does not exist, a logger --log-to lacks."""
    parser, out = cli.build_parser(), []
    for words in commands(lines):
        shown = f"{source}: `raydiff {shlex.join(words)}`"
        try:
            args, unknown = parser.parse_known_args(words)
        except SystemExit:
            out.append(f"{shown} does not parse")
            continue
        if unknown:
            out.append(f"{shown}: unknown {unknown}")
        spaces = getattr(args, "spaces", None) or ([args.space] if getattr(args, "space", None) else [])
        out += [f"{shown}: no space {space!r}" for space in spaces if not cli.resolve_space_path(space).is_file()]
        out += [f"{shown}: no file {w}" for w in words if PATHS_IN_REPO.match(w) and not (ROOT / w).exists()]
        out += [f"{shown}: no logger {v}" for v in getattr(args, "log_to", None) or [] if not set(v.split(",")) <= set(LOGGERS)]
    return out


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_raydiff_command_parses_and_names_what_exists(source, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert problems(source, SOURCES[source]) == []


def test_a_wrong_command_fails_the_check(monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = {
        "raydiff analyze results/x --censored sometimes": "does not parse",
        "raydiff sweep marion2026_cifar11 --dry-run": "no space 'marion2026_cifar11'",
        "raydiff sweep --dry-run --cluster cluster/gcp.yaml": "no file cluster/gcp.yaml",
        "raydiff sweep smoke --log-to mlflow,neptune": "no logger mlflow,neptune",
        "raydiff train smoke --point 0 --fast": "unknown ['--fast']",
    }
    for line, needle in bad.items():
        found = problems("x.md", [line])
        assert len(found) == 1 and needle in found[0], (line, found)


def test_the_commands_are_found():
    """The extraction above sees the commands where they are (so the test above can fail)."""
    found = {source: len(commands(lines)) for source, lines in SOURCES.items()}
    assert sum(n for s, n in found.items() if s.startswith("cluster/")) >= 3
    assert found["README.md"] >= 5 and found["docs/clusters.md"] >= 5 and found["docs/papers.md"] >= 5
    assert commands(["raydiff sweep SPACE --dry-run   # the plan"]) == [["sweep", "default", "--dry-run"]]
    assert commands(["`raydiff sweep [SPACE]` and `raydiff status RESULTS`"]) == [["sweep"], ["status", "results/default"]]
    assert commands(["`raydiff analyze` writes"]) == []
    assert code_of_markdown("a `raydiff status\n  RESULTS` b\n```bash\nraydiff analyze x \\\n  --boot 10\n```\n") == [
        "raydiff analyze x    --boot 10",
        "raydiff status RESULTS",
    ]


def test_readme_is_short_and_its_test_command_is_ci_s():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    tests = readme[readme.index("## Tests") :]
    line = re.search(r"```bash\n(.*?)\n```", tests, re.S).group(1).strip()
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert line in ci, f"README's test command is not a line of .ci/run: {line}"


def test_the_site_lists_every_page_and_only_pages_that_exist():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["name"] == "material" and config.get("docs_dir", "docs") == "docs"

    def files(nav):
        for entry in nav:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                yield from files(value) if isinstance(value, list) else [value]

    assert sorted(files(config["nav"])) == [p.name for p in PAGES]


MACHINE_PATHS = re.compile(r"(?<![\w.~])/(?:work|home|root|tmp|Users|mnt|data|opt|srv|scratch)/")


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "CHANGELOG.md", *PAGES], ids=lambda p: p.name)
def test_no_machine_paths_and_figures_resolve(page):
    text = page.read_text(encoding="utf-8")
    assert not MACHINE_PATHS.search(text), f"{page.name}: a machine path: {MACHINE_PATHS.search(text).group(0)}"
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text):
        path = (page.parent / target).resolve()
        assert path.is_file(), f"{page.name}: figure {target} not found"
        if page.parent == DOCS:
            assert DOCS in path.parents, f"{page.name}: figure {target} is outside docs/"


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]'); .ci/run builds the site")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[docs]')")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "index.html").is_file()
