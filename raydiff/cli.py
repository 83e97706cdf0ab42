"""`raydiff sweep | prestage | status | analyze | measure | train`: parse, validate, call. Nothing else lives here.

A user error (UserError) ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from raydiff.config import load_search_space, packaged_search_space
from raydiff.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_TRIALS_FAILED, SweepInterrupted, TrialsFailed, UserError
from raydiff.location import resolve_storage

DEFAULT_SPACE = "default"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        command = " ".join(self.prog.split()[1:])  # prog is "raydiff" or "raydiff sweep"
        self.exit(2, f"raydiff: error: {message} (see raydiff {command + ' ' if command else ''}--help)\n")


def resolve_space_path(arg: str | None) -> Path:
    """A path, or the name of a packaged search space (default, smoke, ...)."""
    if arg is None:
        return packaged_search_space(DEFAULT_SPACE)
    p = Path(arg)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in arg:
        return p
    packaged = packaged_search_space(arg)
    return packaged if packaged.exists() else p


# Each command imports the layers it uses when it runs (torch, Ray), so `status` loads neither
# and `--dry-run` no Ray.


def check_flags(args) -> None:
    """Every flag's value on its own, whatever the command goes on to do: a value given but empty
    (which would read as "not given" and fall back to a default silently), a bound passed."""
    for flag, value in vars(args).items():
        if isinstance(value, str) and not value.strip():
            if flag in POSITIONALS:
                raise UserError(f"is empty; give a {POSITIONALS[flag]}", key=flag)
            raise UserError("is empty; leave the flag out for its default", key=f"--{flag.replace('_', '-')}")
    for flag, (lo, hi) in FLAG_BOUNDS.items():
        value = getattr(args, flag, None)
        if value is not None and not lo <= value <= hi:  # NaN too
            raise UserError(f"must be in {_num(lo)}..{_num(hi)} (got {_num(value)})", key=f"--{flag.replace('_', '-')}")


def _num(v: float) -> str:
    """4,096 and 1,000,000,000,000 as counts are written; 0.5, nan and inf as they are."""
    return f"{int(v):,}" if isinstance(v, int) or (v == v and abs(v) < 1e16 and float(v).is_integer()) else f"{v:g}"


POSITIONALS = {"space": "search-space YAML or packaged name", "results": "results folder"}
# integer flags and their ranges: an unbounded one would be accepted and then never end
FLAG_BOUNDS = {"threads": (1, 4096), "point": (0, 10_000_000), "tau": (1, 1e12), "gpu_tflops": (1e-3, 1e6), "gpu_utilization": (1e-6, 1)}


def cmd_sweep(args) -> int:
    from raydiff.trackers import parse_log_to
    from raydiff.tune.connect import gcs_endpoint

    log_to = parse_log_to(args.log_to)
    if args.json and not args.dry_run:
        raise UserError("--json goes with --dry-run (a sweep's results are Parquet)", key="--json")
    for flag, value in (("--tau", args.tau), ("--gpu-tflops", args.gpu_tflops), ("--gpu-utilization", args.gpu_utilization), ("--json-cost", args.json_cost or None)):
        if value is not None and not args.dry_run:
            raise UserError(f"{flag} goes with --dry-run (it sets the cost shown before a sweep runs)", key=flag)
    if args.json and args.json_cost:
        raise UserError("give --json (the trials' configs) or --json-cost (their costs), not both", key="--json-cost")
    if args.cluster and not args.dry_run:
        raise UserError("--cluster goes with --dry-run (a sweep runs on the cluster it is started on)", key="--cluster")
    if (args.json or args.json_cost) and args.cluster:
        flag = "--json" if args.json else "--json-cost"
        raise UserError(f"adds columns to the dry run's table, and {flag} prints JSON lines only: give one of --cluster and {flag}", key="--cluster")
    gcs_endpoint(args.address)  # the form of --address, on a dry run too
    if args.storage is not None:
        check_storage_form(args.storage)
    if args.resume:
        if args.space is not None:
            raise UserError("give either a search space or --resume NAME, not both")
        if args.mode:
            raise UserError("--mode cannot change the trials of a sweep being resumed")
        if args.dry_run:
            raise UserError("--dry-run shows a new sweep's trials; a sweep being resumed runs the trials it saved")
        if args.name:
            raise UserError("--resume NAME already names the sweep; leave out --name")
        from raydiff.tune.sweep import run_sweep

        run_sweep(None, storage=args.storage, name=args.resume, address=args.address, resume=True, log_to=log_to)
        return 0
    space = load_search_space(resolve_space_path(args.space))
    if args.mode:
        if space.search is not None:
            raise UserError("varies a grid's axes; this space is an Optuna search (search:), which draws its trials", key="--mode")
        space = space.with_mode(args.mode)
    if args.dry_run:
        from raydiff.location import locate
        from raydiff.preflight import preflight
        from raydiff.tune.cost import H100_BF16_TFLOPS, UTILIZATION
        from raydiff.tune.dryrun import check_plan, print_cost_json, print_json, print_plan
        from raydiff.trackers import needs_packages

        loc = locate(space, args.storage, args.name)  # --name and --storage, on every branch
        needs_packages(log_to)  # a --log-to whose package is missing fails here too
        unseen: list[str] = []  # data this machine cannot open: the cluster's nodes may have it
        preflight(space, unseen=unseen)
        gpu = {"tflops": args.gpu_tflops or H100_BF16_TFLOPS, "utilization": args.gpu_utilization or UTILIZATION}
        check_plan(space, loc)  # what a real run would refuse about its results folder
        if args.json:
            print_json(space)
        elif args.json_cost:
            print_cost_json(space, args.tau, **gpu)
        else:
            print_plan(space, storage=args.storage, name=args.name, cluster=args.cluster, tau=args.tau, **gpu)
        remote = args.cluster or "://" in (args.storage or space.sweep.storage or "")
        for text in unseen:
            after = "" if remote else " (a sweep started on this machine would refuse)"
            print(f"raydiff: warning: {text}{after}", file=sys.stderr)
        return 0
    from raydiff.tune.sweep import run_sweep

    run_sweep(space, storage=args.storage, name=args.name, address=args.address, log_to=log_to)
    return 0


def cmd_prestage(args) -> int:
    """Fetch what the trials of these spaces would download (datasets, feature weights) into the
    cache now: cluster setup runs this on every node, so trials never download at once."""
    import time

    from raydiff.data import cache_dir
    from raydiff.preflight import preflight
    from raydiff.tune.sweep import prestage

    for path in map(resolve_space_path, args.spaces):
        t0 = time.perf_counter()
        space = load_search_space(path)
        preflight(space)
        prestage(space)
        print(f"raydiff: prestaged {path.stem} into {cache_dir()} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


def cmd_status(args) -> int:
    from raydiff.status import print_status

    print_status(args.results, storage=resolve_storage(None))
    return 0


def check_storage_form(storage: str) -> None:
    """A local folder, or s3:// / gs:// with a bucket; an S3 endpoint named in its query parses."""
    from raydiff import results

    if "://" in storage:
        scheme, _, rest = storage.partition("://")
        if scheme not in STORAGE_SCHEMES or not rest.split("?", 1)[0].strip("/"):
            raise UserError(f"must be a local folder or {' or '.join(s + '://BUCKET[/PREFIX]' for s in STORAGE_SCHEMES)} (got {storage!r})", key="--storage")
        results.store_endpoint(storage)


STORAGE_SCHEMES = ("s3", "gs")


def cmd_analyze(args) -> int:
    from raydiff.analysis.report import analyze
    from raydiff.trackers import PACKAGES, check_tracker, parse_log_to

    log_to = parse_log_to(args.log_to, allowed=tuple(PACKAGES))
    for name in log_to:  # a tracker that is down or refuses: one line before the analysis runs
        check_tracker(name)
    analyze(
        args.results, args.out, censored=args.censored, interpolate=args.interpolate, n_boot=args.boot,
        copies=args.copies.split(",") if args.copies else None, trackers=log_to,
    )  # fmt: skip
    return 0


def cmd_measure(args) -> int:
    from raydiff.remeasure import measure_sweep

    names = [n.strip() for n in args.metrics.split(",") if n.strip()] if args.metrics else None
    trials = [t.strip() for t in args.trials.split(",") if t.strip()] if args.trials else None
    rows = measure_sweep(args.results, names, trials, device=args.device)
    print(f"raydiff: {rows} figure row(s) written under {args.results}/figures")
    return 0


def cmd_train(args) -> int:
    """One trial in this process, no Ray: for debugging a config and for benchmarks."""
    import torch

    from raydiff.preflight import preflight
    from raydiff.trial import train

    space = load_search_space(resolve_space_path(args.space))
    points = space.points()
    if not 0 <= args.point < len(points):
        raise UserError(f"--point must be in 0..{len(points) - 1} (got {args.point})")
    preflight(space, in_process=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = space.experiments()[args.point]

    def report(m, _ckpt):
        fid = "-" if m.get("fid") is None else f"{m['fid']:.2f}"
        print(
            f"step {m['step']:>7}  loss {m.get('loss', float('nan')):.4f}  train/test probe"
            f" {m.get('train_loss', float('nan')):.4f}/{m.get('test_loss', float('nan')):.4f}"
            f"  mem_frac {m.get('mem_frac', float('nan')):.3f}  fid {fid}  {m['wall_s']:.1f}s",
            flush=True,
        )
        if m.get("stop_status"):
            print(f"stop: {m['stop_status']}: {m['stop_reason']}")
        return bool(m.get("stop_status"))  # follow the decision train() reported

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
    s.add_argument("--dry-run", action="store_true",
                   help="print the trial table and each trial's cost to its expected stop (FLOPs by kind, the measurement"
                   " share, GPU-hours), and exit without starting Ray")
    s.add_argument("--tau", type=float, metavar="STEPS",
                   help="with --dry-run: assume every trial's onset at this step for the cost (default: the space's prior,"
                   " sweep.budget_planner.prior, e.g. marion2026_cifar10's 20,000 · (N/2048) · (16/B) · (1e-4/η) steps)")
    s.add_argument("--gpu-tflops", type=float, metavar="TFLOPS",
                   help="with --dry-run: the GPU's peak TFLOP/s for GPU-hours (default 989: an H100 SXM's dense BF16)")
    s.add_argument("--gpu-utilization", type=float, metavar="FRACTION",
                   help="with --dry-run: the fraction of that peak a trial sustains (default 0.4)")
    s.add_argument("--json-cost", action="store_true",
                   help="with --dry-run: one JSON object per trial, its cost (FLOPs by kind, share, GPU-hours), then the totals")
    s.add_argument("--cluster", metavar="FILE",
                   help="with --dry-run: where each trial can run on this cluster file (cluster/aws.yaml, kuberay.yaml,"
                   " slurm.sbatch) and how many run at once")
    s.add_argument("--json", action="store_true",
                   help="with --dry-run: one JSON object per trial, its resolved config (as trials.parquet's config column)")
    s.add_argument(
        "--mode", choices=("grid", "one_factor"),
        help="override sweep.mode: grid = every combination of the axes; one_factor = vary one axis at a time around the first values",
    )  # fmt: skip
    s.add_argument(
        "--log-to", action="append", metavar="tensorboard|csv|json|mlflow|wandb",
        help="also log through Ray's logger callbacks: TensorBoard, Tune's CSV/JSON files, MLflow or Weights & Biases (needs that package)",
    )  # fmt: skip
    s.set_defaults(fn=cmd_sweep)

    pr = sub.add_parser("prestage", help="download the datasets and feature weights of search spaces into the cache")
    pr.add_argument("spaces", nargs="+", help="search-space YAMLs or packaged names (e.g. marion2026_cifar10)")
    pr.set_defaults(fn=cmd_prestage)

    st = sub.add_parser("status", help="the trial table of a sweep, running or finished, from its results folder")
    st.add_argument("results", nargs="?", help="results folder <storage>/<sweep> (default: the newest under ./results)")
    st.set_defaults(fn=cmd_status)

    a = sub.add_parser("analyze", help="fit scaling laws and draw figures from a results folder")
    a.add_argument("results", help="results folder: <storage>/<sweep>")
    a.add_argument("--out", help="where to write figures and fits (default: RESULTS/analysis)")
    a.add_argument("--censored", choices=("auto", "tobit", "ols", "exclude"), default="auto",
                   help="trials without an onset: auto (default) fits them as right-censored at their last step"
                   " (tobit maximum likelihood) whenever a fit has one, least squares otherwise; tobit always;"
                   " ols (alias: exclude) drops them, named, which biases the exponents toward 0")  # fmt: skip
    a.add_argument("--interpolate", action="store_true",
                   help="interpolate the onset crossing between two evaluations in log(step)")  # fmt: skip
    a.add_argument("--boot", type=int, default=2000, help="bootstrap resamples for the intervals: 0 (none) or 10..20000 (default 2000)")
    a.add_argument("--copies", metavar="TRIAL[,TRIAL]", help="trials for the copies figure (default: smallest and largest N)")
    a.add_argument("--log-to", action="append", metavar="mlflow|wandb",
                   help="also log the fits, findings and every file written as one run of the sweep's MLflow experiment"
                   " or W&B project (needs that package)")  # fmt: skip
    a.set_defaults(fn=cmd_analyze)

    m = sub.add_parser("measure", help="measure a sweep's figures (FID, SWD, …) on the EMA snapshots its trials saved")
    m.add_argument("results", help="results folder: <storage>/<sweep>")
    m.add_argument("--metrics", metavar="NAME[,NAME]", help="figure measures to measure (default: every registered one: fid, swd, …)")
    m.add_argument("--trials", metavar="TRIAL[,TRIAL]", help="only these trials (default: every trial with snapshots)")
    m.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to measure (default: auto)")
    m.set_defaults(fn=cmd_measure)

    t = sub.add_parser("train", help="run one trial of a search space here, without Ray")
    t.add_argument("space", nargs="?", help="search-space YAML or packaged name")
    t.add_argument("--point", type=int, default=0, help="which trial of the space (0-based)")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    t.set_defaults(fn=cmd_train)
    p.commands = sub.choices  # name → its parser: an unknown flag is the command's error
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command it was given to: "see raydiff sweep --help"
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        check_flags(args)
        return args.fn(args)
    except UserError as e:
        print(f"raydiff: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_INPUT
    except TrialsFailed as e:
        print(f"raydiff: failed: {_one_line(e)}", file=sys.stderr)
        return EXIT_TRIALS_FAILED
    except SweepInterrupted as e:
        print(f"raydiff: interrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("raydiff: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `raydiff sweep --dry-run --json | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line(e: Exception) -> str:
    """An error as one line: a message that quotes a value with a newline or a control character
    in it (a name, a path) must not break the one-line promise."""
    return " ".join(str(e).split("\n")).replace("\r", " ").translate({c: "?" for c in range(32) if c != 9})


if __name__ == "__main__":
    sys.exit(main())
