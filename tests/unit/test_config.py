"""Config: user errors end as one line and exit code 2 at the CLI, valid files load, overrides apply."""

from __future__ import annotations

import textwrap

import pytest

from raydiff import cli
from raydiff.config import (
    ExperimentConfig,
    apply_overrides,
    experiment_from_dict,
    load_search_space,
    packaged_search_space,
    search_space_from_dict,
)
from raydiff.errors import ConfigError

# (YAML text, strings the one error line must contain: the key, and what helps fix it)
ERROR_CASES = [
    pytest.param("train:\n  bach_size: 8\n", ["train.bach_size", "did you mean 'batch_size'"], id="unknown-key-near-spelling"),
    pytest.param("trian:\n  lr: 1.0e-3\n", ["trian", "did you mean 'train'"], id="unknown-section"),
    pytest.param("grid:\n  train.bacth_size: [8, 16]\n", ["grid.train.bacth_size", "did you mean 'batch_size'"], id="unknown-grid-key"),
    pytest.param("train:\n  batch_size: eight\n", ["train.batch_size", "integer"], id="wrong-type-int"),
    pytest.param("train:\n  lr: fast\n", ["train.lr", "number"], id="wrong-type-float"),
    pytest.param("data:\n  class_conditional: 1\n", ["data.class_conditional", "true or false"], id="wrong-type-bool"),
    pytest.param("model:\n  channel_mults: 2\n", ["model.channel_mults", "list"], id="wrong-type-list"),
    pytest.param("train:\n  lr: 0\n", ["train.lr", "> 0"], id="lr-zero"),
    pytest.param("train:\n  lr: -1.0e-3\n", ["train.lr", "> 0"], id="lr-negative"),
    pytest.param("grid:\n  train.lr: [1.0e-3, -1.0e-3]\n", ["train.lr", "train.lr=-0.001"], id="lr-negative-in-grid"),
    pytest.param("data:\n  n_train: 5000\n", ["data.n_train", "1797"], id="n-larger-than-dataset"),
    pytest.param("grid:\n  data.n_train: [64, 1700]\n", ["data.n_train", "1797", "data.n_train=1700"], id="n-too-large-in-grid"),
    pytest.param("grid:\n  data.n_train: []\n", ["grid.data.n_train", "empty"], id="empty-grid-axis"),
    pytest.param("train:\n  lr: 1.0e-3\n  lr: 2.0e-3\n", ["'train.lr'", "twice", "line 3", "first on line 2"], id="duplicate-key"),
    pytest.param("train:\n  lr: 1.0e-3\ntrain:\n  batch_size: 8\n", ["'train'", "twice", "line 3", "first on line 1"], id="duplicate-section"),
    pytest.param("train:\n  lr: [1, 2\ndata:\n  n_train: 4\n", ["malformed YAML", "line 3"], id="malformed-yaml"),
    pytest.param("train:\n\tlr: 1.0e-3\n", ["malformed YAML", "line 2"], id="tab-indent"),
    pytest.param("data:\n  dataset: mnist\n", ["data.dataset", "mnist", "digits, cifar10"], id="unknown-dataset"),
    pytest.param("model:\n  preset: huge\n", ["model.preset", "huge", "digits-tiny"], id="unknown-preset"),
    pytest.param("grid:\n  model.preset: [digits-tiny, huge]\n", ["model.preset", "huge"], id="unknown-preset-in-grid"),
    pytest.param("sweep:\n  mode: random\n", ["sweep.mode", "grid, one_factor"], id="unknown-sweep-mode"),
    pytest.param("train:\n  compile: fast\n", ["train.compile", "fast", "off, default, reduce-overhead, max-autotune"], id="unknown-compile-mode"),
    pytest.param("- 1\n- 2\n", ["mapping"], id="not-a-mapping"),
]


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("text, needles", ERROR_CASES)
@pytest.mark.parametrize("command", ["sweep", "train"])
def test_config_error_exit_2_one_line(tmp_path, monkeypatch, capsys, text, needles, command):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    monkeypatch.chdir(tmp_path)  # anything written to ./results would show up in the snapshot
    before = snapshot(tmp_path)
    argv = [command, str(space)]
    if command == "sweep":
        argv += ["--storage", str(tmp_path / "store")]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("raydiff: error: ")
    assert "space.yaml" in lines[0]  # names the file too
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before  # nothing written


def test_missing_file_is_exit_2(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "nope.yaml"), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raydiff: error: ") and "nope.yaml" in err and len(err.strip().splitlines()) == 1


def test_bad_cli_flag_is_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", "--no-such-flag"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("raydiff: error: ")


# ------------------------------------------------------------------------------- valid files


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_packaged_spaces_load(name):
    space = load_search_space(packaged_search_space(name))
    assert space.sweep.name == name
    exps = space.experiments()
    assert len(exps) == len(space.points()) >= 2
    assert all(isinstance(e, ExperimentConfig) and e.data.dataset == "digits" for e in exps)
    assert len({e.data.n_train for e in exps}) == len(exps)  # the N axis


def test_default_is_the_embedded_digits_grid():
    space = load_search_space(packaged_search_space("default"))
    assert len(space.grid["data.n_train"]) >= 4
    assert space.base.diffusion.objective == "ddpm" and space.base.model.preset == "digits-tiny"


def test_smoke_onset_is_not_at_the_first_evaluation_by_construction():
    # the smoke trials must be able to show a rise: several evaluations below the budget
    space = load_search_space(packaged_search_space("smoke"))
    for e in space.experiments():
        assert e.budget_steps >= 10 * e.eval_every_steps


GRID = {"data.n_train": [16, 32], "train.batch_size": [8, 16, 32]}


def test_points_grid_mode():
    space = search_space_from_dict({"sweep": {"mode": "grid"}, "grid": GRID})
    assert space.points() == [
        {"data.n_train": n, "train.batch_size": b} for n in (16, 32) for b in (8, 16, 32)
    ]  # fmt: skip
    assert [(e.data.n_train, e.train.batch_size) for e in space.experiments()] == [
        (16, 8), (16, 16), (16, 32), (32, 8), (32, 16), (32, 32)
    ]  # fmt: skip
    assert space.minima() == {"n_train": 16, "batch_size": 8, "lr": space.base.train.lr}


def test_points_one_factor_mode():
    # the first value of each axis is the centre; every other value varies one axis alone
    space = search_space_from_dict({"sweep": {"mode": "one_factor"}, "grid": GRID})
    assert space.points() == [
        {"data.n_train": 16, "train.batch_size": 8},
        {"data.n_train": 32, "train.batch_size": 8},
        {"data.n_train": 16, "train.batch_size": 16},
        {"data.n_train": 16, "train.batch_size": 32},
    ]


def test_points_without_grid():
    assert search_space_from_dict({}).points() == [{}]


def test_apply_overrides():
    base = experiment_from_dict({"model": {"base_channels": 8}, "train": {"lr": 1e-3}})
    cfg = apply_overrides(base, {"data.n_train": 32, "train.lr": 4e-4, "diffusion.sample_steps": 20})
    assert (cfg.data.n_train, cfg.train.lr, cfg.diffusion.sample_steps) == (32, 4e-4, 20)
    assert cfg.model == base.model and base.data.n_train != 32  # base untouched (frozen)
    # a preset override replaces the architecture, not only the name
    tiny = apply_overrides(base, {"model.preset": "digits-tiny"})
    assert tiny.model.preset == "digits-tiny" and tiny.model.base_channels == 16
    with pytest.raises(ConfigError) as e:
        apply_overrides(base, {"train.lr": 0.0})
    assert e.value.key == "train.lr"


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_to_dict_round_trip(name):
    for cfg in load_search_space(packaged_search_space(name)).experiments():
        assert experiment_from_dict(cfg.to_dict()) == cfg


def test_to_dict_round_trip_non_defaults():
    cfg = experiment_from_dict(
        {
            "data": {"dataset": "gmm", "n_train": 40, "image_size": 16, "channels": 3},
            "model": {"channel_mults": [1, 2, 2], "attn_resolutions": [8], "emb_dim": 48},
            "diffusion": {"objective": "flow", "sample_steps": 12},
            "train": {"adam_betas": [0.9, 0.99], "grad_clip": None, "ema_halflife_images": 500},
            "eval": {"every_images": 640, "cadence": "geometric"},
            "stop": {"patience": 3},
        }
    ).validate()
    assert experiment_from_dict(cfg.to_dict()) == cfg
    assert cfg.model.channel_mults == (1, 2, 2) and cfg.data.shape == (16, 3)


def test_yaml_scientific_notation_without_dot():
    # YAML 1.1 reads 1e-4 as a string; a float field still takes it
    space = search_space_from_dict({"train": {"lr": "1e-4"}})
    assert space.base.train.lr == 1e-4


def test_search_space_from_text(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent("""\
        sweep: {name: mine, mode: grid}
        grid:
          data.n_train: [8, 16]
        train: {batch_size: 8, max_steps: 100}
    """))
    space = load_search_space(p)
    assert space.sweep.name == "mine" and space.grid == {"data.n_train": (8, 16)}
    assert space.source == str(p)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "---\n"])
@pytest.mark.parametrize("command", ["sweep", "train"])
def test_empty_space_file_is_refused(tmp_path, monkeypatch, capsys, text, command):
    """An empty (or all-comment) file would otherwise run a full default trial: refused, one line,
    exit 2, nothing written. The embedded default is `raydiff sweep` with no argument."""
    space = tmp_path / "empty.yaml"
    space.write_text(text)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    argv = [command, str(space)] + (["--storage", str(tmp_path / "store")] if command == "sweep" else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raydiff: error: ") and "empty.yaml" in err
    assert "no search space" in err and "raydiff sweep` with no argument" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, names", [(["sweep", "--bogus"], "raydiff sweep --help"), (["--bogus"], "raydiff --help"), (["nosuch"], "raydiff --help")])
def test_usage_error_names_the_program_once(capsys, argv, names):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"(see {names})" in err and "raydiff raydiff" not in err


def test_yaml_booleans_are_yaml_12():
    """`on:` is a key, not YAML 1.1's boolean True (nor are yes/no/off values booleans)."""
    from raydiff.config import parse_yaml

    assert parse_yaml("stop:\n  on: [pixel, loss]\n") == {"stop": {"on": ["pixel", "loss"]}}
    assert parse_yaml("a: yes\nb: off\nc: true\nd: FALSE\n") == {"a": "yes", "b": "off", "c": True, "d": False}
    space = search_space_from_dict(parse_yaml("stop:\n  on: [pixel]\n  continue_for: 0.5\n"))
    assert space.base.stop.on == ("pixel",) and space.base.stop.continue_for == 0.5


def test_a_retired_setting_says_what_replaced_it():
    """eval.bootstrap was validated and never read: a file that still sets it is told why."""
    from raydiff.config import experiment_from_dict

    with pytest.raises(ConfigError, match="no longer a setting: f_mem's interval is exact") as e:
        experiment_from_dict({"eval": {"bootstrap": 1000}})
    assert e.value.key == "eval.bootstrap"
