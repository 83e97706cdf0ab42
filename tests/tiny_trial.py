"""A trial that runs in seconds on one CPU core, for the loop tests: 8 digits, a one-level
8-channel U-Net, no FID. `tiny(section={...})` edits sections of it."""

from __future__ import annotations

from raydiff.config import ExperimentConfig, experiment_from_dict

TINY = {
    "data": {"dataset": "digits", "n_train": 8, "n_test": 16},
    "model": {"base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "emb_dim": 16},
    "diffusion": {"objective": "ddpm", "sample_steps": 4},
    "train": {"batch_size": 16, "lr": 5e-3, "max_steps": 60, "ema_halflife_images": 200},
    "eval": {"every_steps": 20, "num_samples": 8, "fid_every": 0, "probe_images": 4,
             "probe_noise_levels": 2, "save_samples": 2},
}  # fmt: skip


def with_sections(base: dict, **sections) -> ExperimentConfig:
    raw = {k: dict(v) for k, v in base.items()}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return experiment_from_dict(raw).validate()


def tiny(**sections) -> ExperimentConfig:
    return with_sections(TINY, **sections)
