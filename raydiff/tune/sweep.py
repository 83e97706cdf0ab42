"""Search space → Ray Tune Tuner → results folder.

`run_sweep` connects to (or starts) Ray, pre-stages what trials would otherwise fetch at once,
builds one trial per grid point and runs them under the onset stopper, with the results callback
writing the Parquet contract into <storage>/<sweep>/ beside Ray's own experiment state.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raydiff import results
from raydiff.config import SearchSpace, search_space_from_dict
from raydiff.errors import SweepInterrupted, UserError

DEFAULT_STORAGE = "results"


@dataclass(frozen=True)
class SweepLocation:
    storage: str  # absolute local path or URI
    name: str

    @property
    def uri(self) -> str:
        return results.join(self.storage, self.name)


def locate(space: SearchSpace, storage: str | None, name: str | None) -> SweepLocation:
    # --storage, else $RAYDIFF_STORAGE (cluster/aws.yaml sets it on the head), else the space's, else ./results
    storage = storage or os.environ.get("RAYDIFF_STORAGE") or space.sweep.storage or DEFAULT_STORAGE
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return SweepLocation(storage, plain_name(name or space.sweep.name))


def plain_name(name: str) -> str:
    """A sweep name is one folder under the storage: no separators, no leading dot."""
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise UserError(f"a sweep name must be a plain folder name (got {name!r})", key="--name")
    return name


def check_writable(loc: SweepLocation) -> None:
    """Fail before Ray starts if the storage cannot take our files; leave nothing behind."""
    fs, root = results.filesystem(loc.storage)
    probe = results.join(root, f".raydiff-write-test-{uuid.uuid4().hex}")
    made = []  # the local folders this check creates, deepest first: removed again, nothing more
    if "://" not in loc.storage:
        p = Path(root)
        while not p.exists() and p != p.parent:
            made.append(p)
            p = p.parent
    try:
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except OSError as e:
        raise UserError(f"storage {loc.storage} is not writable: {e}") from None
    finally:
        for d in made:
            try:
                d.rmdir()
            except OSError:
                break


def check_devices(space: SearchSpace) -> None:
    """Ray hides every GPU from a trial that asks for none, so device cuda needs sweep.resources.gpu."""
    devices = {space.base.train.device, *space.grid.get("train.device", ())}
    if "cuda" in devices and space.sweep.resources.gpu == 0:
        raise UserError(
            "is cuda, but sweep.resources.gpu is 0 and Ray gives such trials no GPU; "
            "set sweep.resources.gpu (e.g. 1) or train.device: auto",
            key="train.device",
        )


def sweep_exists(loc: SweepLocation) -> bool:
    fs, root = results.filesystem(loc.uri)
    return fs.get_file_info(root).type != pafs.FileType.NotFound


def load_saved_space(loc: SweepLocation) -> SearchSpace:
    plain_name(loc.name)
    if not sweep_exists(loc):
        raise UserError(f"no sweep named {loc.name!r} under {loc.storage} to resume")
    fs, root = results.filesystem(loc.uri)
    path = results.join(root, results.SPACE_FILE)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise UserError(f"{loc.uri} is not a raydiff sweep (no {results.SPACE_FILE})")
    with fs.open_input_stream(path) as f:
        return search_space_from_dict(json.loads(f.readall()), source=path)


def space_json(space: SearchSpace) -> str:
    return json.dumps(space_to_dict(space), sort_keys=True, indent=1)


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    import dataclasses

    from raydiff.config import _plain

    return {
        "sweep": _plain(dataclasses.asdict(space.sweep)),
        "grid": {k: list(v) for k, v in space.grid.items()},
        **({"search": space.search.to_raw()} if space.search is not None else {}),
        **space.base.to_dict(),
    }


def prestage(space: SearchSpace) -> None:
    """Fetch datasets and feature weights once, here, before trials would race to fetch them."""
    from raydiff.data import load
    from raydiff.metrics.embedding import load_embedding
    from raydiff.metrics.fid import build_extractor, cleanfid_reference, has_precomputed

    seen: set[tuple] = set()
    embeddings: set[str] = set()
    for exp in space.extremes():
        key = (exp.data.dataset, exp.data.root, exp.eval.fid_features if exp.eval.fid_every else None)
        if key in seen:
            continue
        seen.add(key)
        data = load(exp.data)
        if exp.eval.fid_every:
            extractor = build_extractor(exp.eval.fid_features, exp.data.dataset, "cpu")
            size = data.shape[1]
            if exp.eval.fid_reference == "auto" and has_precomputed(extractor, exp.data.dataset, size):
                for split in ("train", "test"):
                    cleanfid_reference(exp.data.dataset, size, split, extractor.mode)
        if exp.eval.memorization_space != "pixel" and exp.eval.embedding not in embeddings:
            embeddings.add(exp.eval.embedding)
            load_embedding(exp.eval.embedding, "cpu")


def run_sweep(
    space: SearchSpace,
    *,
    storage: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    log_to: tuple[str, ...] = (),
    out=None,
) -> SweepLocation:
    import ray
    from ray import tune

    from raydiff.tune.callback import ResultsCallback
    from raydiff.tune.progress import ProgressCallback
    from raydiff.tune.stopper import MemorizationOnsetStopper
    from raydiff.tune.trainable import trainable

    out = out or sys.stdout  # at call time: a default bound at import would outlive a redirected stdout
    loc = locate(space, storage, name)
    exists = sweep_exists(loc)
    if resume and not exists:
        raise UserError(f"no sweep named {loc.name!r} under {loc.storage} to resume")
    if exists and not resume:
        raise UserError(
            f"a sweep named {loc.name!r} already exists under {loc.storage}; "
            "resume it with --resume, or choose another --name"
        )
    if resume:
        space = load_saved_space(loc)
    from raydiff.tune.loggers import logger_callbacks

    extra_callbacks = logger_callbacks(log_to, loc.name)  # a missing package fails here, before Ray starts
    check_devices(space)
    check_writable(loc)
    from raydiff.tune.connect import check_reachable

    check_reachable(address or os.environ.get("RAY_ADDRESS"))  # a mistyped --address fails before any download
    prestage(space)

    started_here = not ray.is_initialized()
    ctx = None
    restore_signals = lambda: None  # noqa: E731
    try:
        if started_here:
            from raydiff.tune.connect import connect

            ctx = connect(address)  # address or $RAY_ADDRESS; none: a local Ray, dashboard on 127.0.0.1
        restore_signals = _sigterm_as_sigint()  # after ray.init: Ray's core worker installs an aborting one
        from raydiff.tune.resources import check_resources

        check_resources(space.sweep.resources)
        from raydiff.tune.search import search_setup

        setup = search_setup(space, loc.name)
        dashboard = getattr(ctx, "dashboard_url", None) if ctx is not None else None
        print(f"raydiff: sweep {loc.name!r}: {setup.n_trials} trials; results → {loc.uri}", file=out)
        if dashboard:
            print(f"raydiff: Ray dashboard at http://{dashboard}", file=out)
        out.flush()

        fs, root = results.filesystem(loc.uri)
        meta = results.provenance(space_json(space))
        if not resume:
            fs.create_dir(root, recursive=True)
            with fs.open_output_stream(results.join(root, results.SPACE_FILE)) as f:
                f.write(space_json(space).encode())

        res = space.sweep.resources
        fn = tune.with_parameters(trainable, base=space.base.to_dict(), threads=max(1, int(res.cpu)))
        fn = tune.with_resources(fn, {"cpu": res.cpu, "gpu": res.gpu})
        callbacks = [ResultsCallback(space, loc.uri, meta), ProgressCallback(space.base.stop, out=out), *extra_callbacks]
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
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
                    reuse_actors=False,
                ),
                run_config=tune.RunConfig(
                    name=loc.name,
                    storage_path=loc.storage,
                    storage_filesystem=storage_fs,
                    stop=MemorizationOnsetStopper(space.base.stop),
                    callbacks=callbacks,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=space.sweep.max_failures),
                    verbose=0,
                ),
            )
        t0 = time.perf_counter()
        grid = tuner.fit()
        # Tune answers Ctrl+C (and SIGTERM, forwarded) by saving its state and returning: trials
        # without a row in trials.parquet are then unfinished, and the sweep is not done.
        done = results.read_trials(fs, root).num_rows
        if done < len(grid):
            raise SweepInterrupted(
                f"sweep {loc.name!r} stopped with {len(grid) - done} of {len(grid)} trials unfinished; "
                f"finish them with: raydiff sweep --resume {loc.name} --storage {loc.storage}"
            )
        print(f"raydiff: sweep {loc.name!r} finished in {time.perf_counter() - t0:.0f} s; results in {loc.uri}", file=out)
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
