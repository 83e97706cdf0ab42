"""Search space → Ray Tune Tuner → results folder.

`run_sweep` runs the preflight, connects to (or starts) Ray, pre-stages what trials would
otherwise fetch at once, builds one trial per grid point and runs them under the onset stopper,
with the results callback writing the Parquet contract (docs/results.md) into <storage>/<sweep>/
beside Ray's own experiment state.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

from raydiff import results
from raydiff.config import SearchSpace
from raydiff.data import load
from raydiff.errors import SweepInterrupted, TrialsFailed, UserError
from raydiff.location import SweepLocation, load_saved_space, locate, plain_name, resolve_storage
from raydiff.metrics.features import prestage as prestage_features
from raydiff.metrics.fid import build_extractor, cleanfid_reference, has_precomputed
from raydiff.preflight import preflight
from raydiff.tune.callback import ResultsCallback
from raydiff.tune.connect import check_reachable, connect
from raydiff.tune.loggers import logger_callbacks
from raydiff.tune.progress import ProgressCallback
from raydiff.tune.callback import overrides_of
from raydiff.tune.resources import (
    check_resources,
    check_storage_reach,
    cluster_concurrency,
    cluster_node_types,
    request_of,
    space_requests,
)
from raydiff.tune.search import search_setup
from raydiff.tune.stopper import MemorizationOnsetStopper
from raydiff.tune.trainable import CheckpointCadence, trainable
from raydiff.tune.waiting import WaitingCallback

def prestage(space: SearchSpace) -> None:
    """Fetch datasets and feature weights once, here, before trials would race to fetch them (an hf
    dataset: its files into the Hugging Face cache, at its pinned revision)."""
    seen: set[tuple] = set()
    networks: set[tuple[str, str]] = set()
    for exp in space.extremes():
        # each feature network the trial's memorization tests need (SSCD, DINOv2, CLIP, Inception)
        prestage_features(exp, networks)
        fid_on = exp.eval.fid_every or exp.eval.fid_every_steps
        source = (exp.data.dataset, exp.data.root, exp.data.hf_name, exp.data.hf_config, exp.data.hf_revision, exp.data.split, exp.data.test_split)
        key = (source, (exp.eval.fid_features, exp.eval.fid_mode) if fid_on else None)
        if key in seen:
            continue
        seen.add(key)
        data = load(exp.data)
        if exp.eval.fid_every or exp.eval.fid_every_steps:
            extractor = build_extractor(exp.eval.fid_features, exp.data.dataset, "cpu", exp.eval.fid_mode)
            size = data.shape[1]
            if exp.eval.fid_reference == "auto" and has_precomputed(extractor, exp.data.dataset, size):
                for split in ("train", "test"):
                    cleanfid_reference(exp.data.dataset, size, split, extractor.mode)


def run_sweep(
    space: SearchSpace | None,
    *,
    storage: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    log_to: tuple[str, ...] = (),
    out=None,
) -> SweepLocation:
    """Run `space` as a sweep named `name` (default: the space's) under `storage`. With `resume`,
    finish the unfinished trials of the sweep of that name, from the search space it saved (the
    `space` given is then not used and may be None)."""
    out = out or sys.stdout  # at call time: a default bound at import would outlive a redirected stdout
    if resume:
        if not name:
            raise UserError("--resume needs the name of the sweep to finish")
        loc = SweepLocation(resolve_storage(storage, space.sweep.storage if space else None), plain_name(name))
        space = load_saved_space(loc)  # the one load of the saved space
    else:
        loc = locate(space, storage, name)
    # a missing package, or a tracking server that is down or refuses, fails here, before Ray starts;
    # a tracker records each trial's resolved config as its parameters
    extra_callbacks = logger_callbacks(log_to, loc.name, params_of=lambda config: space.experiment(overrides_of(config)).to_dict())
    preflight(space, loc, resume=resume)
    check_reachable(address or os.environ.get("RAY_ADDRESS"))  # a mistyped --address fails before any download
    prestage(space)

    started_here = not ray.is_initialized()
    ctx = None
    restore_signals = lambda: None  # noqa: E731
    try:
        if started_here:
            ctx = connect(address)  # address or $RAY_ADDRESS; none: a local Ray, dashboard on 127.0.0.1
        restore_signals = _sigterm_as_sigint()  # after ray.init: Ray's core worker installs an aborting one
        requests = space_requests(space)
        check_resources(requests)  # needs the connected cluster: the one check after preflight
        types = cluster_node_types()
        check_storage_reach(loc.storage, types)
        width = cluster_concurrency(space, types)
        setup = search_setup(space, loc.name, width)
        dashboard = getattr(ctx, "dashboard_url", None) if ctx is not None else None
        print(f"raydiff: sweep {loc.name!r}: {setup.n_trials} trials, up to {width} at once on this cluster; results → {loc.uri}", file=out)
        if dashboard:
            print(f"raydiff: Ray dashboard at http://{dashboard}", file=out)
        out.flush()

        fs, root = results.filesystem(loc.uri)
        meta = results.provenance(space.to_json())
        if not resume:
            fs.create_dir(root, recursive=True)
            with fs.open_output_stream(results.join(root, results.SPACE_FILE)) as f:
                f.write(space.to_json().encode())

        sw = space.sweep
        fn = tune.with_parameters(
            trainable, base=space.base.to_dict(), cadence=CheckpointCadence(sw.checkpoint_every, sw.checkpoint_minutes), storage=loc.uri
        )
        # each trial's request by its model (sweep.resources_by), computed on the driver
        fn = tune.with_resources(
            fn, lambda config: resource_dict_to_pg_factory(request_of(space, space.experiment(overrides_of(config))).as_ray())
        )
        callbacks = [ResultsCallback(space, loc.uri, meta), ProgressCallback(out=out, width=width, planned=setup.n_trials), WaitingCallback(loc.uri, out=out), *extra_callbacks]
        if any(e.eval.figures == "snapshots" for e in space.extremes()):  # figures measured as the snapshots land
            from raydiff.tune.figures import FigureCallback

            callbacks.append(FigureCallback(loc.uri, sw.measure_resources, out=out))
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # Ray's CSV/JSON/TensorBoard: --log-to names them
        storage_fs = None
        experiment = loc.uri if "://" in loc.uri else str(Path(loc.uri))
        # a sweep stopped before Ray wrote its experiment state has nothing to restore: start it afresh
        if resume and tune.Tuner.can_restore(experiment):
            tuner = tune.Tuner.restore(
                experiment,
                trainable=fn,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            tuner = tune.Tuner(
                fn,
                param_space=setup.param_space,
                tune_config=tune.TuneConfig(
                    search_alg=setup.search_alg,
                    num_samples=setup.num_samples,
                    max_concurrent_trials=setup.max_concurrent,
                    # a finished trial's worker (torch and raydiff imported) runs the next trial
                    # that asks for the same resources; train() seeds everything it draws from
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=loc.name,
                    storage_path=loc.storage,
                    storage_filesystem=storage_fs,
                    stop=MemorizationOnsetStopper(),
                    callbacks=callbacks,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=space.sweep.keep_checkpoints),
                    failure_config=tune.FailureConfig(max_failures=space.sweep.max_failures),
                    verbose=0,
                ),
            )
        t0 = time.perf_counter()
        grid = tuner.fit()
        writer = callbacks[0]
        writer.flush()
        resume = f"raydiff sweep --resume {loc.name} --storage {loc.storage}"
        if writer.unwritten:  # the store stopped answering and has not come back: say so, in one line
            raise SweepInterrupted(
                f"storage {loc.uri} stopped answering ({next(iter(writer.unwritten.values()))}); {len(writer.unwritten)}"
                f" results file(s) not written; when it answers again, finish the sweep with: {resume}"
            )
        # Tune answers Ctrl+C (and SIGTERM, forwarded) by saving its state and returning: trials
        # without a row in trials.parquet are then unfinished, and the sweep is not done.
        try:
            rows = results.read_trials(fs, root).to_pylist()
        except (UserError, OSError) as e:
            raise SweepInterrupted(f"cannot read back {loc.uri} ({results.first_line(e)}); when the store answers, finish the sweep with: {resume}") from None
        if len(rows) < len(grid):
            raise SweepInterrupted(
                f"sweep {loc.name!r} stopped with {len(grid) - len(rows)} of {len(grid)} trials unfinished; "
                f"finish them with: raydiff sweep --resume {loc.name} --storage {loc.storage}"
            )
        print(f"raydiff: sweep {loc.name!r} finished in {time.perf_counter() - t0:.0f} s; results in {loc.uri}", file=out)
        failed = sorted((r["trial_id"], r.get("stop_reason") or "") for r in rows if r["status"] == "error")
        if failed:
            raise TrialsFailed(
                f"{len(failed)} of {len(rows)} trials of sweep {loc.name!r} failed ({', '.join(t for t, _ in failed)});"
                f" first error: {failed[0][1]} (trials.parquet, column error)"
            )
        return loc
    finally:
        restore_signals()
        if started_here:
            ray.shutdown()  # also on errors and interrupts: no Ray process of ours outlives the command


def _sigterm_as_sigint():
    """Make SIGTERM (`kill`, a batch scheduler's stop) end the sweep as Ctrl+C does: Tune saves its
    state and stops the trials, then `run_sweep` shuts Ray down. Returns the undo. (SIGKILL cannot
    be caught: a local Ray's GCS and raylet die with their driver, its agents and idle workers
    within about a minute; `ray stop` ends them at once.)"""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_term(signum, frame):
        handler = signal.getsignal(signal.SIGINT)  # Tune's own while it runs, else Python's
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def undo() -> None:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    return undo
