"""raydiff's benchmark suite: one command, a table on stdout, benchmarks/RESULTS.md.

From the repository root (benchmarks/ is a package beside raydiff, not installed with it):

    python -m benchmarks.run            # everything (about an hour on a loaded 2-core machine)
    python -m benchmarks.run --quick    # every benchmark at toy sizes (a minute or two): a smoke test
    python -m benchmarks.run --only 1,4 # some of them

Sections: 1 framework tax, 2 Ray tax, 3 measurement tax (3a embedded default, 3b CIFAR-size
projection, only with --only 3b, 3c sampler steps, 3d paper scale by exact FLOP arithmetic),
4 onset resolution per evaluation, 4b the paper spaces' cadence against a dense one
(CIFAR-size), 5 stopper savings, 6 nearest-neighbour
scaling, 7 `raydiff sweep` end to end (also in bare-step units, with its measurement tax and
overshoot), 8 checkpoint cost, 9 where a sweep's step goes (bare / train() / Ray, alone and two
at once), 10 the driver at scale (instant trials through real Ray: callback time and bytes per
result; 1,000 trials with `python -m benchmarks.driver_scale`). The report opens with issue 21's targets, each read from its section. Every ratio is measured side by side in one run, its two
sides alternated and summarised by medians, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from benchmarks.common import Section, fmt, loadavg, machine

ROOT = Path(__file__).resolve().parent.parent

ALL = ["1", "9", "2", "3a", "3d", "3c", "4", "4b", "5", "6", "7", "8", "10"]  # 3b (a CPU projection of the paper grid) gave way to 3d
RUNNERS = {  # section → (module, function); 3a-3c can be run alone
    "1": ("framework", "run"), "2": ("ray_tax", "run"), "3": ("measurement", "run"),
    "3a": ("measurement", "grid_tax"), "3b": ("measurement", "cifar_size"), "3c": ("measurement", "sampler_steps"), "3d": ("paper_cost", "run"),
    "4": ("onset", "run"), "4b": ("cadence", "run"), "5": ("stopper", "run"), "6": ("neighbours", "run"), "7": ("e2e", "run"),
    "8": ("checkpoints", "run"), "9": ("step_cost", "run"), "10": ("driver_scale", "run"),
}  # fmt: skip
QUICK_DEFAULT = ["1", "3a", "3d", "3c", "4", "4b", "5", "6", "8"]  # --quick without --only: no Ray (2 and 7 start one)


def section_runner(key: str):
    import importlib

    module, fn = RUNNERS[key]
    return getattr(importlib.import_module(f"benchmarks.{module}"), fn)


def run_sections(keys: list[str], quick: bool, on_section=None) -> list[Section]:
    import torch

    torch.set_num_threads(1)  # a 1-CPU trial's setting; torch's default (all cores) thrashes when shared
    out: list[Section] = []
    for key in keys:
        load0, t0 = loadavg(), time.perf_counter()
        print(f"[{key}] running …", flush=True)
        try:
            got = section_runner(key)(quick)
        except Exception as e:  # noqa: BLE001 - one benchmark failing must not lose the others' figures
            import traceback

            traceback.print_exc()
            got = Section(key, f"section {key}", "–", f"failed: {type(e).__name__}: {e}", False, [], [])
        for s in got if isinstance(got, list) else [got]:
            s.seconds, s.load = time.perf_counter() - t0, (load0, loadavg())
            out.append(s)
            print(render_section(s), flush=True)
        if on_section:
            on_section(out)
    return out


def table(columns: list[str], rows: list[list]) -> str:
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def verdict(s: Section) -> str:
    return {True: "met", False: "NOT met", None: "not judged"}[s.met]


def render_section(s: Section) -> str:
    parts = [f"### {s.key}. {s.title}", "", f"**{s.headline}** — goal {s.goal}: {verdict(s)}.", "", table(s.columns, s.rows), ""]
    parts += [f"- {n}" for n in s.notes]
    parts.append(f"- section group took {s.seconds:.0f} s; load average (1 min) {s.load[0]:.1f} before, {s.load[1]:.1f} after")
    return "\n".join(parts) + "\n"


# What this suite changed, for the record beside the figures (the before/after columns above).
CHANGES = """\
## Speed-ups made, and where their before/after shows

- **Bracket refinement** (`eval.refine_snapshots`, raydiff/trial.py): EMA snapshots kept between
  evaluations; when mem_frac first crosses the threshold a binary search over them
  (memorization-only evaluations: no probes, no FID) narrows τ_mem's bracket. The embedded
  default now evaluates every 100 steps ×1.5 with 15 snapshots instead of every 50 steps ×1.2:
  sections 3a and 7 (before/after columns), 4 (trade-off table).
- **Nearest neighbours** (raydiff/metrics/memorization.py): no [N, D] temporary for the norms,
  one [c, N] buffer instead of three, candidates re-measured one rank at a time: same results,
  a fraction of the memory (section 6, before/after rows).
- **Sampler steps for the memorization test**: 25 DDIM/Euler steps agree with 250 within the
  bootstrap interval, 10 do not (section 3c); the default keeps 25, the paper grid can use
  `eval.mem_sample_steps: 50` (3b projections).
- **One torch thread per trial** on a shared CPU: torch's default (all cores) was 10-40× slower
  here while other jobs ran (the trainable already sets it; the benchmarks and their tests do too).
- **Issue 21** (section 7's "before" runs the default as it shipped on 2026-12-06, its FD in the
  loop; section 3d's "as shipped on 2026-12-06" rows the paper spaces then):
  - *only the clock in the loop*: the training loop measures what `stop.on` needs; FID, SWD and the
    default's FD are measured on EMA snapshots by Ray tasks beside the trials (`eval.figures:
    snapshots`, `raydiff measure`); the raw-weights test only where a definition names it;
  - *a first sequential round that can settle* (64 at 0.1), memorization samples at 50 of 250
    sampler steps in the paper space (3c), refinement of every onset the stop waits on (the loss
    divergence too) stopping at `eval.refine_fraction` of τ̂, the stop exactly at `continue_for`;
  - *probes sized to the onset*: marion2026_cifar10's loss probes at 3 noise levels, not 8 (4b:
    the loss onset is the same step with 2, 3, 4 or 8; fewer images moved it).
- **Issue 15** (before issue 21, section 7's "before" ran the default without the first two):
  - *onset in sight* (`eval.approach_fraction: 0.5`): once mem_frac reaches half the threshold,
    and while a crossing awaits its confirmation, evaluations come every `eval.every_steps`, not
    at the next geometric step; the N = 128 trial stops 0.8% past τ_mem instead of 26%;
  - *the sequential memorization test* (`eval.sequential_round: 32`): 32, 64, then 128 samples,
    stopping once the Clopper–Pearson interval (Bonferroni over the looks) lies on one side of
    the threshold: a generalizing evaluation is settled by 64 samples;
  - *the long pole first*: a plain grid's trials start in order of expected cost (N / B × model
    size), so the N = 128 trial no longer starts last;
  - *less around each trial*: Ray reuses a finished trial's worker for the next trial of the same
    request (`reuse_actors`), Tune's CSV/JSON/TensorBoard loggers are off unless `--log-to` names
    them, trials checkpoint every 4 evaluations or 10 minutes (and at onset and stop), and
    `raydiff status` / `sweep --dry-run` import neither Ray nor torch.
- Tried and not adopted on CPU: `torch.compile` (`train.compile`, a switch for GPUs: a minute to
  compile even the smoke U-Net here, no faster per step for the digits U-Net), channels-last
  (slower), fused CPU Adam (within noise of foreach), and a second torch thread for the last
  running trial: section 9 measures 1.14× steps/s at the default's size (its N = 128 trial runs
  alone for its last ~60 s: ~7 s of a ~220 s sweep) and 1.65× for marion-2.9m at 32×32×3, but a
  trial's floating-point sums, and so its τ_mem, would then depend on when its neighbours
  finished; "same seed, same τ_mem", which a restored trial is tested against, would no longer
  hold.
"""

GPU_NOTE = """\
## GPU

`bash benchmarks/gpu.sh` measures, on one GPU in a few minutes: raydiff's training step (steps/s
and model FLOP utilisation) for marion-2.9m/25.8m/92.7m at B=16 and 128 (bf16), the smallest
also with `train.compile: default` and `reduce-overhead` (CUDA graphs); the cost of one
evaluation at the paper grid's counts, and of its memorization test with the full 1,024 samples
against the sequential test; 1, 2, 4 and 8 packed trials, each capped at 1/k of the GPU's memory.
It writes benchmarks/RESULTS-gpu.md.
{status}
"""


# Issue 21's table: (figure, section, value from that section, shown as, target, met, the issue's "now")
DEFAULT_TAUS = {16: 193, 32: 421, 64: 1455, 128: 3887}  # the embedded default's τ_mem fingerprint (one thread)
TARGETS = [
    ("in-loop measurement share of marion2026_cifar10's grid at the prior τ, exact FLOP arithmetic", "3d",
     lambda s: s.data["marion_share"], "{:.1%}", "≤ 10%", lambda v: v <= 0.10, "78%"),
    ("in-loop measurement share of bonnaire2025's grid at its smallest τ (10k steps)", "3d",
     lambda s: by_n(s.data["bonnaire_share"], 10000), "{:.1%}", "≤ 10%", lambda v: v <= 0.10, "52% (W32)"),
    ("τ_mem at each paper space's settings against a dense cadence, CIFAR-size on CPU (the worst Δ over τ_dense)", "4b",
     lambda s: s.data["worst"], "{:.1%}", "≤ 5%", lambda v: v <= 0.05, "not measured"),
    ("embedded default: measurement share of trial time, Σ eval_s / Σ wall_s", "7",
     lambda s: s.data["default, after"]["measurement_tax"], "{:.1%}", "≤ 5%", lambda v: v <= 0.05, "21.9%"),
    ("embedded default: τ_mem by N (sweep through Ray)", "7",
     lambda s: {int(k): v for k, v in s.data["default, after"]["taus"].items()}, "{}", "193, 421, 1455, 3887",
     lambda v: v == DEFAULT_TAUS, "193, 421, 1455, 3887"),
    ("embedded default end to end, in bare training steps of its model", "7",
     lambda s: s.data["default, after"]["units"], "{:,.0f}", "≤ 4,400", lambda v: v <= 4400, "5,377"),
]  # fmt: skip


def by_n(values: dict, n: int):
    """values[n], from a section's own data (int keys) or its JSON dump (string keys)."""
    return values[n] if n in values else values[str(n)]


def targets_table(sections: list[Section]) -> str:
    by_key = {s.key: s for s in sections}
    rows = []
    for what, key, value, shown, goal, ok, before in TARGETS:
        s = by_key.get(key)
        try:
            v = value(s)
        except Exception:  # noqa: BLE001 - the section was not run (or failed): say so in the row
            rows.append([what, before, "not measured in this run", goal, "–", key])
            continue
        rows.append([what, before, shown.format(v), goal, "met" if ok(v) else "NOT met", key])
    return table(["figure (issue 21)", "the issue's now", "measured", "target", "verdict", "section"], rows)


def render(
    sections: list[Section], command: str, quick: bool, seconds: float, m: dict[str, str] | None = None, runs: list[str] | None = None
) -> str:  # fmt: skip
    """The Markdown report. `runs`: where the sections come from several runs (--from-json), one
    line per run naming its command, date and sections."""
    m = m or machine()
    head = [
        "# raydiff benchmarks",
        "",
        f"Command: `{command}`{' (toy sizes: figures not meaningful)' if quick else ''}  ",
        f"Date: {m['date']}, {seconds:.0f} s in all  ",
        *(f"{line}  " for line in runs or ()),
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, GPU: {m['gpu']}; "
        f"Python {m['python']}, torch {m['torch']} (each section gives the load average around it)  ",
        f"Load average (1 min) at the start: {sections[0].load[0]:.1f}" if sections else "",
        "",
        "Every ratio is measured side by side in one run: its sides alternate (A B, B A, …) and are",
        "summarised by medians, so the machine's load, which changed during the run, hits both alike.",
        "",
        "## Issue 21's targets",
        "",
        targets_table(sections),
        "",
        "## Summary",
        "",
        table(["#", "what", "measured", "goal", "verdict"], [[s.key, s.title, s.headline, s.goal, verdict(s)] for s in sections]),
        "",
    ]
    gpu = ROOT / "benchmarks" / "RESULTS-gpu.md"
    status = ("Figures: [RESULTS-gpu.md](RESULTS-gpu.md)." if gpu.exists() else
              "No GPU was available for these measurements: the script is ready and is run in its CPU dry "
              "mode (`python -m benchmarks.gpu --cpu`, toy sizes) by tests/loops/test_benchmarks.py.")  # fmt: skip
    tail = ["", CHANGES, GPU_NOTE.format(status=status), "## Details", ""]
    return "\n".join(head + tail) + "\n".join(render_section(s) for s in sections)


def dump(path: str, sections: list[Section], command: str, quick: bool, seconds: float) -> None:
    raw = {"command": command, "quick": quick, "seconds": seconds, "machine": machine(),
           "sections": [dataclasses.asdict(s) for s in sections]}  # fmt: skip
    Path(path).write_text(json.dumps(raw, default=str, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes: checks the suite runs, figures mean nothing")
    p.add_argument("--only", help="comma-separated sections (1-9, or 3a/3b/3c/3d); default: all (--quick: 1,3,4,5,6)")
    p.add_argument("--out", help="Markdown report (default: benchmarks/RESULTS.md; --quick: none)")
    p.add_argument("--json", help="also write every figure as JSON here (after each section)")
    p.add_argument("--from-json", metavar="JSON[,JSON…]",
                   help="render the Markdown report from earlier --json dumps (later ones replace sections); measure nothing")
    args = p.parse_args(argv)
    out = args.out or (None if args.quick else str(ROOT / "benchmarks" / "RESULTS.md"))
    if args.from_json:
        # several dumps (e.g. a full run, then one section rerun): later ones replace earlier sections
        dumps = [json.loads(Path(f).read_text()) for f in args.from_json.split(",")]
        merged: dict[str, Section] = {}
        for raw in dumps:
            for s in raw["sections"]:
                if s["headline"].startswith("failed:") and s["key"] in merged:  # a failed rerun keeps the figures it did not replace
                    continue
                merged[s["key"]] = Section(**{**s, "load": tuple(s["load"])})
        order = {k: i for i, k in enumerate(ALL)}  # sections since retired (3b) are left out
        sections = sorted((s for s in merged.values() if s.key in order), key=lambda s: order[s.key])
        latest = dumps[-1]  # the header names the newest run; a line per run says which sections are its
        taken = {}  # section → the dump its figures are from
        for i, d in enumerate(dumps):
            taken.update({x["key"]: i for x in d["sections"] if x["key"] in order and not (x["headline"].startswith("failed:") and x["key"] in taken)})
        runs = [
            f"Sections {', '.join(k for k in (s.key for s in sections) if taken[k] == i)}: `{d['command']}`, {d['machine']['date']}, {d['seconds']:.0f} s"
            for i, d in enumerate(dumps) if i in taken.values()
        ]  # fmt: skip
        text = render(sections, latest["command"], latest["quick"], latest["seconds"], latest["machine"], runs)
    else:
        keys = args.only.split(",") if args.only else (QUICK_DEFAULT if args.quick else ALL)
        bad = [k for k in keys if k not in RUNNERS]
        if bad:
            p.error(f"--only: unknown section(s) {', '.join(bad)} (allowed: {', '.join(RUNNERS)})")
        command = ("python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))).strip()
        started = time.perf_counter()

        def save(sections: list[Section]) -> None:
            if args.json:
                dump(args.json, sections, command, args.quick, time.perf_counter() - started)

        sections = run_sections(keys, args.quick, save)
        text = render(sections, command, args.quick, time.perf_counter() - started)
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
