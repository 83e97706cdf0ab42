"""Search space → Ray Tune Tuner → results folder.

`run_sweep` connects to (or starts) Ray, pre-stages what trials would otherwise fetch at once,
builds one trial per grid point and runs them under the onset stopper, with the results callback
writing the Parquet contract into <storage>/<sweep>/ beside Ray's own experiment state.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raydiff import results
from raydiff.config import SearchSpace, search_space_from_dict
from raydiff.errors import UserError

DEFAULT_STORAGE = "results"


@dataclass(frozen=True)
class SweepLocation:
    storage: str  # absolute local path or URI
    name: str

    @property
    def uri(self) -> str:
        return results.join(self.storage, self.name)


def locate(space: SearchSpace, storage: str | None, name: str | None) -> SweepLocation:
    storage = storage or space.sweep.storage or DEFAULT_STORAGE
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return SweepLocation(storage, name or space.sweep.name)


def check_writable(loc: SweepLocation) -> None:
    """Fail before Ray starts if the storage cannot take our files; leave nothing behind."""
    fs, root = results.filesystem(loc.storage)
    probe = results.join(root, f".raydiff-write-test-{uuid.uuid4().hex}")
    created = fs.get_file_info(root).type == pafs.FileType.NotFound
    try:
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except OSError as e:
        raise UserError(f"storage {loc.storage} is not writable: {e}") from None
    if created and "://" not in loc.storage:
        try:
            os.removedirs(root)  # only the empty folders this check made
        except OSError:
            pass


def sweep_exists(loc: SweepLocation) -> bool:
    fs, root = results.filesystem(loc.uri)
    return fs.get_file_info(root).type != pafs.FileType.NotFound


def load_saved_space(loc: SweepLocation) -> SearchSpace:
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
        **space.base.to_dict(),
    }


def prestage(space: SearchSpace) -> None:
    """Fetch datasets and feature weights once, here, before trials would race to fetch them."""
    from raydiff.data import load
    from raydiff.metrics.fid import build_extractor

    seen: set[tuple] = set()
    for exp in space.experiments():
        key = (exp.data.dataset, exp.data.root, exp.eval.fid_features if exp.eval.fid_every else None)
        if key in seen:
            continue
        seen.add(key)
        load(exp.data)
        if exp.eval.fid_every:
            build_extractor(exp.eval.fid_features, exp.data.dataset, "cpu")


def run_sweep(
    space: SearchSpace,
    *,
    storage: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    out=sys.stdout,
) -> SweepLocation:
    import ray
    from ray import tune

    from raydiff.tune.callback import ResultsCallback
    from raydiff.tune.progress import ProgressCallback
    from raydiff.tune.stopper import MemorizationOnsetStopper
    from raydiff.tune.trainable import trainable

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
    check_writable(loc)
    prestage(space)

    address = address or os.environ.get("RAY_ADDRESS")
    started_here = not ray.is_initialized()
    if started_here:
        ctx = ray.init(
            address=address,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=True,
        )
    else:
        ctx = None
    try:
        from raydiff.tune.resources import check_resources

        check_resources(space.sweep.resources)
        dashboard = getattr(ctx, "dashboard_url", None) if ctx is not None else None
        print(f"raydiff: sweep {loc.name!r}: {len(space.points())} trials; results → {loc.uri}", file=out)
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
        callbacks = [ResultsCallback(space, loc.uri, meta), ProgressCallback(space.base.stop, out=out)]
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        storage_fs = None
        if resume:
            tuner = tune.Tuner.restore(
                loc.uri if "://" in loc.uri else str(Path(loc.uri)),
                trainable=fn,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            tuner = tune.Tuner(
                fn,
                param_space={"point": tune.grid_search(space.points())},
                tune_config=tune.TuneConfig(max_concurrent_trials=space.sweep.max_concurrent, reuse_actors=False),
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
        tuner.fit()
        print(f"raydiff: sweep {loc.name!r} finished in {time.perf_counter() - t0:.0f} s; results in {loc.uri}", file=out)
        return loc
    finally:
        if started_here:
            ray.shutdown()
