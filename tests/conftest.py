"""Shared fixtures: a tiny synthetic dataset, a tiny TAU22-layout dataset, and one Ray instance for the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tau22_fixture import write_tau22
from trainables.asc.data import load_prepared
from trainables.asc.synthetic import SyntheticConfig, generate

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
def service_data(tmp_path_factory) -> Path:
    """A prepared synthetic dataset the command-line tests pass as --data, so each need not generate one:
    val and test keep 2 clips a segment per device (180 clips each), which halves every epoch's evaluation."""
    directory = tmp_path_factory.mktemp("service") / "data"
    generate(SyntheticConfig(seed=3, train_segments_per_class=3, test_segments_per_class=1,
                             held_out_clips_per_segment=2), directory)  # fmt: skip
    return directory


@pytest.fixture(scope="session")
def tau22_written(tmp_path_factory) -> Path:
    """TAU22-layout wav files, written once (the slowest fixture); a test that alters files works on a copy."""
    return write_tau22(tmp_path_factory.mktemp("tau22") / "TAU-urban-acoustic-scenes-2022-mobile-development",
                       test_clips_per_segment=3)  # fmt: skip


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
