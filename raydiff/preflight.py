"""Preflight: every check that touches the world, once, on the driver, before Ray starts.

The config layer checks values only (raydiff/config/); what a valid config still needs from the
world is checked here, for each distinct dataset, folder and file among the trials: the dataset
holds N + n_test images, an image folder exists and its files are readable, each distinct network
runs on the data's shape, an embedding file exists, a CUDA trial is given a GPU, the storage takes files and a sweep is not overwritten.
`raydiff sweep`, `--dry-run`, `train` and `prestage` call it. (The cluster's resources are
checked by `raydiff.tune.resources` once the driver is connected: only then can it see them.)
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import torch

from raydiff import data, results
from raydiff.config import DataConfig, ExperimentConfig, SearchSpace
from raydiff.config.sections import needs
from raydiff.config.space import point_text
from raydiff.errors import ConfigError, DataUnavailable, UserError
from raydiff.location import SweepLocation, sweep_exists
from raydiff.metrics.fid import DIGITS_HELD_OUT
from raydiff.models import build_network, param_count
from raydiff.training.state import resolve_device
from raydiff.tune.capacity import rule_of


def preflight(
    space: SearchSpace,
    location: SweepLocation | None = None,
    *,
    resume: bool = False,
    in_process: bool = False,
    unseen: list[str] | None = None,
) -> None:
    """Raise a one-line UserError for the first thing the world lacks. With a `location`, the
    storage is checked too: writable, and holding no sweep of that name unless resuming.
    `in_process`: the trial runs here (`raydiff train`), not on Ray's workers, so its device must
    be on this machine. `unseen` (a dry run): a dataset this machine cannot open is not an error
    but a line appended to it, since the nodes that will run the trials may have it."""
    try:
        trials = _trials(space)
        seen: set[DataConfig] = set()
        absent: dict[DataConfig, tuple[DataConfig, DataUnavailable]] = {}  # one per dataset: its largest N
        for point, exp in trials:
            if exp.data not in seen:
                seen.add(exp.data)
                try:
                    _in_trial(point, check_dataset, exp.data)
                except DataUnavailable as e:
                    if unseen is None:
                        raise
                    key = dataclasses.replace(exp.data, n_train=0)
                    if key not in absent or absent[key][0].n_train < exp.data.n_train:
                        absent[key] = (exp.data, e)
        for cfg, e in absent.values():
            assert unseen is not None
            unseen.append(f"{e}; the nodes that run the trials need {node_needs(cfg)}")
            _in_trial(point, check_fid_reference, exp)
        networks: set = set()
        for point, exp in trials:
            key = (exp.model, exp.data.shape, exp.data.num_classes)
            if key not in networks:
                networks.add(key)
                _in_trial(point, check_network, exp)
            if space.sweep.resources.gpu == 0:  # a CPU trial: it must fit in a node like this one
                _in_trial(point, check_memory, exp, machine_memory())
        if space.search is None:
            check_rules_match(space, trials)
        for embedding in sorted({e.eval.embedding for _, e in trials if "embedding" in needs(e.memorization_tests)}):
            check_embedding(embedding)
        if in_process:
            for device in sorted({e.train.device for _, e in trials}):
                resolve_device(device)
        else:
            check_devices(space, trials)
    except UserError as e:
        raise e.located(space.source) from None
    if location is not None:
        check_sweep_name(location, resume)
        check_writable(location)


def _trials(space: SearchSpace) -> list[tuple[dict, ExperimentConfig]]:
    """(overrides, experiment) of every trial; an Optuna search's corners stand for its trials."""
    points = space.search.corners() if space.search is not None else space.points()
    return list(zip(points, space.extremes()))


def _in_trial(point: dict, check, *args) -> None:
    try:
        check(*args)
    except ConfigError as e:
        if not point or isinstance(e, DataUnavailable):  # data not here: the same for every trial on it
            raise
        raise type(e)(f"{e.message} (in the trial with {point_text(point)})", key=e.key) from None


# ------------------------------------------------------------------------------- data


def check_dataset(cfg: DataConfig) -> None:
    """N + held-out images within what the dataset holds; an image folder's files readable."""
    if cfg.dataset == "digits":
        # the held-out images are the last n_test digits, so they must not overlap the first N
        if cfg.n_train + cfg.n_test > data.DIGITS_SIZE:
            raise ConfigError(
                f"digits has {data.DIGITS_SIZE} images: n_train + n_test must be ≤ {data.DIGITS_SIZE}"
                f" (got {cfg.n_train} + {cfg.n_test})",
                key="data.n_train",
            )
    elif cfg.dataset == "cifar10":
        if cfg.n_train > data.CIFAR10_TRAIN:
            raise ConfigError(f"CIFAR-10 has {data.CIFAR10_TRAIN} training images (got {cfg.n_train})", key="data.n_train")
        if cfg.n_test > data.CIFAR10_TEST:
            raise ConfigError(f"CIFAR-10 has {data.CIFAR10_TEST} test images (got {cfg.n_test})", key="data.n_test")
    elif cfg.dataset == "folder":
        files = data.folder_images(cfg.root)
        if cfg.n_train + cfg.n_test > len(files):
            raise ConfigError(
                f"the folder holds {len(files)} images: n_train + n_test must be ≤ {len(files)}"
                f" (got {cfg.n_train} + {cfg.n_test})",
                key="data.n_train",
            )
        data.check_readable(files[: cfg.n_train] + files[-cfg.n_test :])
    elif cfg.dataset == "hf":
        check_hf(cfg)


def node_needs(cfg: DataConfig) -> str:
    """What a node must hold to run a trial on `cfg`'s data, in words."""
    count = f"{cfg.n_train + cfg.n_test}+ images" if cfg.test_split is None else f"{cfg.n_train}+ and {cfg.n_test}+ images"
    if cfg.dataset == "hf":
        return (f"{data.hf_text(cfg)} ({count}): the hub within reach, or the dataset in their Hugging Face cache"
                " (raydiff prestage on each node fills it)")  # fmt: skip
    return f"the folder {cfg.root} at that path ({count})"


def check_hf(cfg: DataConfig) -> None:
    """The hf dataset opens here (its card, for a hub id: no data is downloaded), has the columns
    named, and holds N + n_test rows where its card says how many."""
    rows, columns = data.hf_shape(cfg)
    if columns is not None:
        for key in ("image_column", "label_column", "order_column"):
            col = getattr(cfg, key)
            if col is not None and col not in columns:
                raise ConfigError(f"{data.hf_text(cfg)} has no column {col!r} (it has {', '.join(columns)})", key=f"data.{key}")
    if rows is None:
        return  # the card does not count its rows: the trial's load checks them

    def count(expr: str, key: str) -> int:
        for s in expr.split("+"):
            if s not in rows:
                raise ConfigError(f"{data.hf_text(cfg)} has no split {s!r} (it has {', '.join(rows)})", key=key)
        return sum(rows[s] for s in expr.split("+"))

    have = count(cfg.split, "data.split")
    if cfg.test_split is not None:
        held = count(cfg.test_split, "data.test_split")
        if cfg.n_test > held:
            raise ConfigError(f"split {cfg.test_split!r} of {cfg.hf_name} has {held} rows (got {cfg.n_test})", key="data.n_test")
        if cfg.n_train > have:
            raise ConfigError(f"split {cfg.split!r} of {cfg.hf_name} has {have} rows (got {cfg.n_train})", key="data.n_train")
    elif cfg.n_train + cfg.n_test > have:
        raise ConfigError(
            f"{data.hf_text(cfg)} has {have} rows: n_train + n_test must be ≤ {have} (got {cfg.n_train} + {cfg.n_test})",
            key="data.n_train",
        )


def check_network(exp: ExperimentConfig) -> None:
    """The trial's network runs on a batch of its data's shape: built and called on the meta
    device (no memory, no compute), so a U-Net deeper than the image allows fails here, not in
    every trial."""
    size, channels = exp.data.shape
    classes = exp.data.num_classes
    m = exp.model
    try:
        with torch.device("meta"):
            net = build_network(m, channels, size, classes)
            labels = torch.zeros(2, dtype=torch.long) if classes else None
            out = net(torch.empty(2, channels, size, size), torch.zeros(2), labels)
    except UserError:
        raise  # a missing package, a factory that does not import: already one line
    except NotImplementedError:
        return  # an operation the meta device lacks (a user's network): its trial will tell
    except Exception as e:  # noqa: BLE001 - whatever the network raises, the config is what to fix
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if m.kind == "python":
            what, key = f"the network of {m.factory}", "model.factory"
        elif m.kind == "diffusers":
            what, key = f"the diffusers UNet2DModel (blocks {list(m.diffusers_channels)})", "model.block_out_channels"
        else:
            what, key = f"the network ({len(m.channel_mults)} levels, attention at {list(m.attn_resolutions)})", "model.channel_mults"
        raise ConfigError(f"{what} cannot run on {channels}×{size}×{size} images: {detail}", key=key) from None
    if tuple(getattr(out, "shape", ())) != (2, channels, size, size):
        raise ConfigError(
            f"the network must return its input's shape [2, {channels}, {size}, {size}] (got {list(getattr(out, 'shape', []))}"
            f" of a {type(out).__name__})", key="model.factory" if m.kind == "python" else "model",
        )  # fmt: skip


def trial_memory(exp: ExperimentConfig) -> int:
    """Bytes a trial holds resident, a lower bound: the training set as float32, and float32
    weights, gradients and Adam's two moments (SGD: one), the EMA copy and the refinement
    snapshots; activations come on top."""
    size, channels = exp.data.shape
    params = param_count(exp.model, exp.data)
    copies = 2 + (2 if exp.train.optimizer == "adam" else 1) + (exp.train.ema_beta() > 0) + exp.eval.refine_snapshots
    return 4 * (exp.data.n_train * channels * size * size + params * copies)


def machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every OS
        return None


def check_memory(exp: ExperimentConfig, available: int | None) -> None:
    need = trial_memory(exp)
    if available is not None and need > available:
        raise ConfigError(
            f"one trial needs at least {need / 2**30:,.1f} GiB resident (data, weights, optimizer state,"
            f" EMA, {exp.eval.refine_snapshots} snapshots); this machine has {available / 2**30:,.1f} GiB",
            key="data.n_train",
        )


def check_fid_reference(exp: ExperimentConfig) -> None:
    """The digits classifier's features were fit without the last DIGITS_HELD_OUT digits: a FID
    reference set (the last n_test digits) must lie among them, or FID would reward copying."""
    uses_digits_features = exp.eval.fid_features == "digits_classifier" or (
        exp.eval.fid_features == "auto" and exp.data.dataset == "digits"
    )
    if (exp.eval.fid_every or exp.eval.fid_every_steps) and uses_digits_features and exp.data.n_test > DIGITS_HELD_OUT:
        raise ConfigError(
            f"must be ≤ {DIGITS_HELD_OUT} with digits-classifier features: the classifier was trained on all but the"
            f" last {DIGITS_HELD_OUT} digits, and the reference set must be disjoint from them (got {exp.data.n_test})",
            key="data.n_test",
        )


def check_embedding(embedding: str) -> None:
    """A feature-space memorization test's TorchScript file exists (a URL is fetched by prestage)."""
    if "://" not in embedding and not Path(embedding).expanduser().is_file():
        raise ConfigError(f"no such TorchScript file: {embedding} (a path or an http(s) URL)", key="eval.embedding")


def check_rules_match(space: SearchSpace, trials: list[tuple[dict, ExperimentConfig]]) -> None:
    """Every sweep.resources_by rule is the first match of some trial of the grid: a rule that
    matches none (a preset not in the grid, a bound below every network, one shadowed by an
    earlier rule) sets nothing, and its resources would silently not apply."""
    rules = space.sweep.resources_by
    used = set()
    models = {}
    for _, exp in trials:
        params = param_count(exp.model, exp.data)
        models[exp.model.preset or "(no preset)"] = params
        used.add(rule_of(space.sweep, exp.model.preset, params))
    for i in range(len(rules)):
        if i not in used:
            seen = ", ".join(f"{k} ({v:,} parameters)" for k, v in sorted(models.items()))
            raise UserError(f"matches no trial of this grid (its models: {seen}); an earlier rule may take them first", key=f"sweep.resources_by[{i}]")


def check_devices(space: SearchSpace, trials: list[tuple[dict, ExperimentConfig]] | None = None) -> None:
    """Ray hides every GPU from a trial that asks for none, so device cuda needs a GPU in
    sweep.resources or a resources_by rule. Every trial's device: the grid's, or each choice of
    an Optuna search (its corners)."""
    trials = _trials(space) if trials is None else trials
    devices = {space.base.train.device, *space.grid.get("train.device", ()), *(e.train.device for _, e in trials)}
    gpus = space.sweep.resources.gpu or any(r.gpu for r in space.sweep.resources_by)
    if "cuda" in devices and not gpus:
        raise UserError(
            "is cuda, but sweep.resources.gpu is 0 and Ray gives such trials no GPU; "
            "set sweep.resources.gpu (e.g. 1) or train.device: auto",
            key="train.device",
        )


# ---------------------------------------------------------------------------- storage


def check_sweep_name(loc: SweepLocation, resume: bool) -> None:
    """A new sweep never lands on an existing one; a resumed one must exist."""
    exists = sweep_exists(loc)
    if resume and not exists:
        raise UserError(f"no sweep named {loc.name!r} under {loc.storage} to resume")
    if exists and not resume:
        raise UserError(
            f"a sweep named {loc.name!r} already exists under {loc.storage}; "
            "resume it with --resume, or choose another --name"
        )


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
