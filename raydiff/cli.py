"""`raydiff sweep | analyze | train`: parse, validate, call. Nothing else lives here.

A user error (UserError) ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raydiff.errors import UserError

DEFAULT_SPACE = "default"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(2, f"raydiff: error: {message} (see raydiff {self.prog.split()[-1]} --help)\n")


def resolve_space_path(arg: str | None) -> Path:
    """A path, or the name of a packaged search space (default, smoke, ...)."""
    from raydiff.config import packaged_search_space

    if arg is None:
        return packaged_search_space(DEFAULT_SPACE)
    p = Path(arg)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in arg:
        return p
    packaged = packaged_search_space(arg)
    return packaged if packaged.exists() else p


def cmd_sweep(args) -> int:
    from raydiff.config import load_search_space
    from raydiff.tune.sweep import run_sweep

    if args.resume:
        from raydiff.tune.sweep import SweepLocation, load_saved_space

        if args.space is not None:
            raise UserError("give either a search space or --resume NAME, not both")
        storage = args.storage or "results"
        space = load_saved_space(SweepLocation(locate_storage(storage), args.resume))
        run_sweep(space, storage=storage, name=args.resume, address=args.address, resume=True)
        return 0
    space = load_search_space(resolve_space_path(args.space))
    if args.dry_run:
        from raydiff.tune.plan import print_plan

        print_plan(space, storage=args.storage, name=args.name)
        return 0
    run_sweep(space, storage=args.storage, name=args.name, address=args.address)
    return 0


def locate_storage(storage: str) -> str:
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def cmd_analyze(args) -> int:
    from raydiff.analysis.report import analyze

    analyze(args.results, args.out)
    return 0


def cmd_train(args) -> int:
    """One trial in this process, no Ray: for debugging a config and for benchmarks."""
    from raydiff.config import apply_overrides, load_search_space
    from raydiff.trial import train
    from raydiff.tune.stopper import decide

    space = load_search_space(resolve_space_path(args.space))
    points = space.points()
    if not 0 <= args.point < len(points):
        raise UserError(f"--point must be in 0..{len(points) - 1} (got {args.point})")
    cfg = apply_overrides(space.base, points[args.point])

    def report(m, _ckpt):
        fid = "-" if m.get("fid") is None else f"{m['fid']:.2f}"
        print(
            f"step {m['step']:>7}  loss {m.get('loss', float('nan')):.4f}  train/test probe"
            f" {m.get('train_loss', float('nan')):.4f}/{m.get('test_loss', float('nan')):.4f}"
            f"  mem_frac {m.get('mem_frac', float('nan')):.3f}  fid {fid}  {m['wall_s']:.1f}s",
            flush=True,
        )
        d = decide(m, cfg.stop)
        if d:
            print(f"stop: {d.status}: {d.reason}")
        return d is not None

    train(cfg, report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="raydiff", description="Sweeps that measure when diffusion models start to memorize.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sweep", help="run a search space as a Ray Tune sweep (default: the embedded digits grid)")
    s.add_argument("space", nargs="?", help="search-space YAML, or a packaged name (default, smoke, ...)")
    s.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start a local one)")
    s.add_argument("--storage", help="results root: a local path or s3://bucket/prefix (default: ./results)")
    s.add_argument("--name", help="sweep name (default: sweep.name in the file)")
    s.add_argument("--resume", metavar="NAME", help="finish the unfinished trials of an interrupted sweep")
    s.add_argument("--dry-run", action="store_true", help="print the trial table and exit without starting Ray")
    s.set_defaults(fn=cmd_sweep)

    a = sub.add_parser("analyze", help="fit scaling laws and draw figures from a results folder")
    a.add_argument("results", help="results folder: <storage>/<sweep>")
    a.add_argument("--out", help="where to write figures and fits (default: RESULTS/analysis)")
    a.set_defaults(fn=cmd_analyze)

    t = sub.add_parser("train", help="run one trial of a search space here, without Ray")
    t.add_argument("space", nargs="?", help="search-space YAML or packaged name")
    t.add_argument("--point", type=int, default=0, help="which trial of the space (0-based)")
    t.set_defaults(fn=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"raydiff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raydiff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
