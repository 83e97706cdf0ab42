"""Bad input at the CLI (issue 6): every mistake ends as one line naming what is wrong, exit code 2,
and nothing written or changed under the folder the command was pointed at.

tests/unit/test_config.py has the basic search-space errors (unknown key, wrong type, malformed YAML,
lr ≤ 0, N too large, empty axis, duplicate key, unknown dataset or preset); this table covers the
rest of what a user stumbles on: image folders, storage, resume, names, analyze, flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from raydiff import cli

# a valid, tiny search space; each case edits one thing
BASE = {
    "sweep": {"name": "bad", "resources": {"cpu": 1, "gpu": 0}},
    "grid": {"data.n_train": [4, 8]},
    "data": {"dataset": "digits", "n_test": 16},
    "model": {"base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16},
    "diffusion": {"sample_steps": 4},
    "train": {"batch_size": 4, "lr": 1e-3, "max_steps": 20},
    "eval": {"every_steps": 10, "num_samples": 8, "fid_every": 0, "probe_images": 4},
}


def space(tmp: Path, **edits) -> str:
    """BASE with section-level edits (`train={"batch_size": 0}` updates that section; None deletes)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for section, change in edits.items():
        if change is None:
            raw.pop(section, None)
        elif isinstance(change, dict):
            raw.setdefault(section, {}).update(change)
        else:
            raw[section] = change
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def image_folder(tmp: Path, n: int = 8, bad: dict[str, bytes] | None = None) -> str:
    from PIL import Image

    d = tmp / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(d / f"img{i:02d}.png")
    for name, content in (bad or {}).items():
        (d / name).write_bytes(content)
    return str(d)


def truncated_png(tmp: Path) -> bytes:
    from PIL import Image

    p = tmp / "whole.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(p)
    data = p.read_bytes()
    p.unlink()
    return data[: len(data) // 2]


def folder_space(tmp: Path, root: str) -> str:
    data = {"dataset": "folder", "root": root, "n_train": 4, "n_test": 2, "image_size": 8, "channels": 1}
    return space(tmp, data=data, grid={})


def sweep(tmp: Path, path: str, *more: str) -> list[str]:
    return ["sweep", path, "--storage", str(tmp / "store"), *more]


def existing_sweep(tmp: Path) -> list[str]:
    (tmp / "store" / "bad").mkdir(parents=True)
    (tmp / "store" / "bad" / "search_space.json").write_text("{}")
    return sweep(tmp, space(tmp))


def results_folder(tmp: Path, trials: bytes | None = None, metric: bytes | None = None) -> Path:
    d = tmp / "res"
    (d / "metrics").mkdir(parents=True)
    if trials is not None:
        (d / "trials.parquet").write_bytes(trials)
    if metric is not None:
        (d / "metrics" / "t0.parquet").write_bytes(metric)
    return d


def a_file(tmp: Path) -> Path:
    f = tmp / "a_file"
    f.write_text("not a folder")
    return f


# (argv builder given the test's tmp folder, strings the one error line must contain)
CASES: list = [
    # --- image folders: checked when the config is validated, before Ray starts
    pytest.param(lambda t: sweep(t, folder_space(t, str(t / "nowhere"))), ["data.root", "no such folder"], id="folder-missing"),
    pytest.param(lambda t: sweep(t, folder_space(t, str((t / "empty").mkdir() or t / "empty"))), ["data.root", "no images"], id="folder-empty"),
    pytest.param(
        lambda t: sweep(t, folder_space(t, image_folder(t, bad={"img00b.png": b"this is not a PNG"}))),
        ["data.root", "unreadable image", "img00b.png"], id="folder-unreadable-image",
    ),  # fmt: skip
    pytest.param(
        lambda t: sweep(t, folder_space(t, image_folder(t, bad={"img01b.png": truncated_png(t)}))),
        ["data.root", "unreadable image", "img01b.png"], id="folder-truncated-image",
    ),  # fmt: skip
    pytest.param(
        lambda t: sweep(t, space(t, data={"dataset": "folder", "root": image_folder(t, n=5), "n_train": 4, "n_test": 2, "image_size": 8, "channels": 1}, grid={})),
        ["data.n_train", "holds 5 images"], id="folder-too-few-images",
    ),  # fmt: skip
    # --- values the basic table does not have
    pytest.param(lambda t: sweep(t, space(t, train={"batch_size": 0})), ["train.batch_size", "> 0"], id="batch-zero"),
    pytest.param(lambda t: sweep(t, space(t, train={"max_steps": -5})), ["train.max_steps", "> 0"], id="steps-negative"),
    pytest.param(lambda t: sweep(t, space(t, grid={"train.max_steps": [10, 0]})), ["train.max_steps", "train.max_steps=0"], id="steps-zero-in-grid"),
    pytest.param(lambda t: sweep(t, space(t, grid={"stop.patience": [1, 2]})), ["grid.stop.patience", "one per sweep"], id="stop-rule-as-axis"),
    pytest.param(lambda t: sweep(t, space(t, grid={"data.n_train": [4, 4]})), ["grid.data.n_train", "repeats"], id="axis-repeats-value"),
    pytest.param(lambda t: sweep(t, space(t, grid={"n_train": [4, 8]})), ["grid.n_train", "section.key"], id="axis-without-section"),
    pytest.param(lambda t: sweep(t, space(t, sweep={"max_failures": -1})), ["sweep.max_failures", "≥ 0"], id="max-failures-negative"),
    pytest.param(lambda t: sweep(t, space(t, sweep={"resources": {"cpu": 1, "gpu": -1}})), ["sweep.resources.gpu"], id="gpu-negative"),
    pytest.param(lambda t: sweep(t, space(t, train={"device": "cuda"})), ["train.device", "sweep.resources.gpu is 0"], id="cuda-without-gpu-resources"),
    pytest.param(
        lambda t: sweep(t, space(t, grid={"data.n_train": [1, 4]}, eval={"fid_every": 1, "fid_reference": "splits"})),
        ["data.n_train", "≥ 2 with eval.fid_reference: splits"], id="fid-splits-one-training-image",
    ),  # fmt: skip
    pytest.param(lambda t: sweep(t, space(t, eval={"fid_reference": "halves"})), ["eval.fid_reference", "splits"], id="fid-reference-unknown"),
    # --- names and storage
    pytest.param(lambda t: sweep(t, space(t, sweep={"name": "a/b"})), ["sweep.name", "plain folder name"], id="yaml-name-with-slash"),
    pytest.param(lambda t: sweep(t, space(t), "--name", "../escape"), ["--name", "plain folder name"], id="cli-name-with-slash"),
    pytest.param(lambda t: ["sweep", space(t), "--storage", str(a_file(t) / "sub")], ["a_file", "not writable"], id="storage-under-a-file"),
    pytest.param(lambda t: ["sweep", space(t), "--storage", str(a_file(t))], ["a_file", "not writable"], id="storage-is-a-file"),
    pytest.param(existing_sweep, ["'bad' already exists", "--resume"], id="name-exists-without-resume"),
    # --- resume
    pytest.param(lambda t: ["sweep", "--resume", "never", "--storage", str(t / "store")], ["no sweep named 'never'"], id="resume-unknown-sweep"),
    pytest.param(
        lambda t: ((t / "store" / "notasweep").mkdir(parents=True), ["sweep", "--resume", "notasweep", "--storage", str(t / "store")])[1],
        ["not a raydiff sweep"], id="resume-folder-that-is-not-a-sweep",
    ),  # fmt: skip
    pytest.param(lambda t: ["sweep", space(t), "--resume", "bad", "--storage", str(t / "store")], ["not both"], id="resume-and-a-space"),
    pytest.param(lambda t: ["sweep", "--resume", "../up", "--storage", str(t / "store")], ["plain folder name"], id="resume-name-with-slash"),
    # --- analyze
    pytest.param(lambda t: ["analyze", str(t / "nowhere")], ["no such results folder"], id="analyze-missing-folder"),
    pytest.param(lambda t: ["analyze", str((t / "plain").mkdir() or t / "plain")], ["not a raydiff results folder"], id="analyze-not-results"),
    pytest.param(lambda t: ["analyze", str(a_file(t))], ["not a raydiff results folder"], id="analyze-a-file"),
    pytest.param(lambda t: ["analyze", str(results_folder(t, trials=b"PAR1 garbage PAR1"))], ["corrupt", "trials.parquet"], id="analyze-corrupt-trials"),
    pytest.param(lambda t: ["analyze", str(results_folder(t, metric=b"not parquet at all"))], ["corrupt", "t0.parquet"], id="analyze-corrupt-metrics"),
    # --- train
    pytest.param(lambda t: ["train", space(t), "--point", "2"], ["--point", "0..1"], id="train-point-out-of-range"),
    pytest.param(lambda t: ["train", space(t), "--point", "-1"], ["--point", "0..1"], id="train-point-negative"),
    pytest.param(lambda t: ["train", str(t)], ["no such search-space file"], id="train-space-is-a-folder"),
    pytest.param(
        lambda t: ["train", space(t, train={"device": "cuda"})], ["train.device", "no CUDA GPU"], id="train-cuda-without-gpu",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
    ),  # fmt: skip
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: a written or touched file shows."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("argv_of, needles", CASES)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, argv_of: Callable, needles):
    monkeypatch.chdir(tmp_path)  # a default ./results would land here and show in the snapshot
    argv = argv_of(tmp_path)
    before = snapshot(tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydiff: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert snapshot(tmp_path) == before, "a failed command wrote or changed files"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["swep"], "invalid choice: 'swep'"),
        (["sweep", "--resme", "x"], "unrecognized arguments"),
        (["train", "smoke", "--point", "one"], "invalid int value"),
        ([], "required"),
    ],
    ids=["unknown-subcommand", "unknown-flag", "point-not-an-int", "no-subcommand"],
)
def test_bad_command_line_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("raydiff: error: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_batch_larger_than_n_is_allowed(tmp_path):
    """A decision, not an oversight: batches are drawn with replacement (trial.py), so B > N is a
    valid (if wasteful) point of a B-sweep at small N rather than an error."""
    from raydiff.config import load_search_space

    s = load_search_space(space(tmp_path, train={"batch_size": 32}, grid={"data.n_train": [4, 8]}))
    assert [e.train.batch_size > e.data.n_train for e in s.experiments()] == [True, True]


def test_unreadable_image_is_caught_without_decoding_every_pixel(tmp_path):
    """check_readable reads each file once per process (grids revalidate the same folder often)."""
    from raydiff import data

    root = Path(image_folder(tmp_path))
    files = sorted(root.iterdir())
    data.check_readable(files)
    files[0].write_bytes(b"garbage now")  # a new mtime: checked again
    os.utime(files[0], ns=(1, 1))
    with pytest.raises(data.ConfigError, match="img00.png"):
        data.check_readable(files)


@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="tracks processes through /proc")
def test_gpu_request_without_gpu_node(tmp_path):
    """No node of the cluster has a GPU: one line, exit 2, no sweep folder; the Ray it started is gone."""
    from processes import Command

    path = space(tmp_path, sweep={"resources": {"cpu": 1, "gpu": 1}})
    cmd = Command(tmp_path, *sweep(tmp_path, path), env={"RAYDIFF_AUTOSCALING": "0", "CUDA_VISIBLE_DEVICES": ""})
    assert cmd.wait() == 2, cmd.log()
    err = cmd.err.read_text()
    last = err.strip().splitlines()[-1]
    assert last.startswith("raydiff: error: ") and "sweep.resources" in last and "GPU" in last, err
    assert "Traceback" not in err
    assert not (tmp_path / "store").exists()
    cmd.assert_no_survivors()
