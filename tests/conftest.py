"""Shared test setup for tests/unit, tests/loops and tests/ray: a private cache per session (no network,
nothing in the user's home), one torch thread on request, and a local Ray for the modules that need one."""

from __future__ import annotations

import os

import pytest

# No test reaches the Hugging Face hub: datasets and huggingface_hub read these when imported
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _raydiff_cache(tmp_path_factory):
    os.environ.setdefault("RAYDIFF_CACHE", str(tmp_path_factory.mktemp("raydiff-cache")))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))  # datasets' cache: not the user's
    yield


@pytest.fixture
def one_torch_thread():
    """One thread, as a 1-CPU trial runs: on a shared machine torch's default (all cores) is
    many times slower, its threads waiting on each other."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray (2 CPUs, no dashboard) for one test module, shut down after it. Tests that use it
    carry `@pytest.mark.ray` (tests/unit/test_layout.py checks)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
