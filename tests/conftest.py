"""Shared fixtures: a tiny synthetic dataset, and one Ray instance for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainables.asc_data import load_prepared
from trainables.synthetic_asc import SyntheticConfig, generate

# A small world: 3 device-a segments per scene in the training pool; val and test 1 segment per scene,
# 4 clips of it per device (360 clips each).
TINY = SyntheticConfig(seed=3, train_segments_per_class=3, val_segments_per_class=1, test_segments_per_class=1,
                       held_out_clips_per_segment=4)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "data"
    generate(TINY, directory)
    return directory


@pytest.fixture(scope="session")
def tiny_data(tiny_dir):
    return load_prepared(tiny_dir)


@pytest.fixture(scope="session")
def ray_session():
    """Ray, started once with 2 CPUs; its temp dir short, as Unix socket paths must be."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TMPDIR", f"/tmp/kdr{os.getpid()}")
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=100 * 2**20,
             log_to_driver=False, _temp_dir=os.environ["RAY_TMPDIR"])  # fmt: skip
    yield ray
    ray.shutdown()
