"""raydiff's benchmark suite: one command, a table on stdout, benchmarks/RESULTS.md.

    python benchmarks/run.py            # everything (about an hour on a loaded 2-core machine)
    python benchmarks/run.py --quick    # every benchmark at toy sizes (a minute or two): a smoke test
    python benchmarks/run.py --only 1,4 # some of them

Sections: 1 framework tax, 2 Ray tax, 3 measurement tax (3a embedded default, 3b CIFAR-size,
3c sampler steps), 4 onset resolution per evaluation, 5 stopper savings, 6 nearest-neighbour
scaling, 7 `raydiff sweep` end to end. Every ratio is measured side by side in one run, its two
sides alternated and summarised by medians, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.common import Section, fmt, loadavg, machine  # noqa: E402

ALL = ["1", "2", "3", "4", "5", "6", "7"]
RUNNERS = {  # section → (module, function); 3a-3c can be run alone
    "1": ("framework", "run"), "2": ("ray_tax", "run"), "3": ("measurement", "run"),
    "3a": ("measurement", "grid_tax"), "3b": ("measurement", "cifar_size"), "3c": ("measurement", "sampler_steps"),
    "4": ("onset", "run"), "5": ("stopper", "run"), "6": ("neighbours", "run"), "7": ("e2e", "run"),
}  # fmt: skip
QUICK_DEFAULT = ["1", "3", "4", "5", "6"]  # --quick without --only: no Ray (2 and 7 start one)


def section_runner(key: str):
    import importlib

    module, fn = RUNNERS[key]
    return getattr(importlib.import_module(f"benchmarks.{module}"), fn)


def run_sections(keys: list[str], quick: bool) -> list[Section]:
    import torch

    torch.set_num_threads(1)
    out: list[Section] = []
    for key in keys:
        load0, t0 = loadavg(), time.perf_counter()
        print(f"[{key}] running …", flush=True)
        got = section_runner(key)(quick)
        for s in got if isinstance(got, list) else [got]:
            s.seconds, s.load = time.perf_counter() - t0, (load0, loadavg())
            out.append(s)
            print(render_section(s), flush=True)
    return out


def table(columns: list[str], rows: list[list]) -> str:
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def verdict(s: Section) -> str:
    return {True: "met", False: "NOT met", None: "not judged"}[s.met]


def render_section(s: Section) -> str:
    parts = [
        f"### {s.key}. {s.title}",
        "",
        f"**{s.headline}** — goal {s.goal}: {verdict(s)}.",
        "",
        table(s.columns, s.rows),
        "",
    ]
    parts += [f"- {n}" for n in s.notes]
    parts.append(f"- took {s.seconds:.0f} s; load average (1 min) {s.load[0]:.1f} before, {s.load[1]:.1f} after")
    return "\n".join(parts) + "\n"


def render(sections: list[Section], command: str, quick: bool, started: float) -> str:
    m = machine()
    head = [
        "# raydiff benchmarks",
        "",
        f"Command: `{command}`{' (toy sizes: figures not meaningful)' if quick else ''}  ",
        f"Date: {m['date']}, {time.perf_counter() - started:.0f} s in all  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, GPU: {m['gpu']}; "
        f"Python {m['python']}, torch {m['torch']}  ",
        f"Load average (1 min) at the start: {sections[0].load[0]:.1f}" if sections else "",
        "",
        "## Summary",
        "",
        table(["#", "what", "measured", "goal", "verdict"], [[s.key, s.title, s.headline, s.goal, verdict(s)] for s in sections]),
        "",
        "## Details",
        "",
    ]
    return "\n".join(head) + "\n".join(render_section(s) for s in sections)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes: checks the suite runs, figures mean nothing")
    p.add_argument("--only", help="comma-separated sections (1-7, or 3a/3b/3c); default: all (--quick: 1,3,4,5,6)")
    p.add_argument("--out", help="Markdown report (default: benchmarks/RESULTS.md; --quick: none)")
    p.add_argument("--json", help="also write the raw figures as JSON here")
    args = p.parse_args(argv)
    keys = args.only.split(",") if args.only else (QUICK_DEFAULT if args.quick else ALL)
    bad = [k for k in keys if k not in RUNNERS]
    if bad:
        p.error(f"--only: unknown section(s) {', '.join(bad)} (allowed: {', '.join(RUNNERS)})")
    started = time.perf_counter()
    sections = run_sections(keys, args.quick)
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = render(sections, command.strip(), args.quick, started)
    out = args.out or (None if args.quick else str(ROOT / "benchmarks" / "RESULTS.md"))
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}")
    if args.json:
        Path(args.json).write_text(json.dumps({s.key: {"headline": s.headline, "met": s.met, "data": s.data} for s in sections},
                                              default=str, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
