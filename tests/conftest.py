"""Shared fixtures: a tiny synthetic dataset, a tiny TAU22-layout dataset, and one Ray instance for the session."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.small_run import GROUP, READERS, small_run
from tests.tau22_fixture import write_cochlscene, write_tau22
from trainables.asc.data import load_prepared
from trainables.asc.synthetic import SyntheticConfig, generate

# One torch thread per test process, and per command a test starts: two xdist workers already keep both cores busy,
# and a second thread in each only spins, waiting for a core (it doubled the CPU time of a dataset's preparation).
# Ray's trials set their own, one per CPU they hold.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A small world: 3 device-a segments per scene in the training pool; val and test 1 segment per scene,
# 1 clip of it per device (90 clips each: evaluation was half of a small trial's work).
TINY = SyntheticConfig(seed=3, train_segments_per_class=3, val_segments_per_class=1, test_segments_per_class=1,
                       held_out_clips_per_segment=1)


def made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """`<shared>/<name>`, made by `make` once for the whole test session: by whichever pytest-xdist worker asks first
    (the others wait for it), since the workers' temporary folders share a parent. Read only: a test that alters what
    it holds works on a copy."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "made_once"
    shared.mkdir(exist_ok=True)
    target, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            make(target)
            done.touch()
    return target


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return made_once(tmp_path_factory, "tiny", lambda directory: generate(TINY, directory))


@pytest.fixture(scope="session")
def tiny_data(tiny_dir):
    return load_prepared(tiny_dir)


@pytest.fixture(scope="session")
def service_data(tiny_dir) -> Path:
    """The prepared dataset the command-line tests pass as --data, so each need not generate one."""
    return tiny_dir


ROOT_NAME = "TAU-urban-acoustic-scenes-2022-mobile-development"


@pytest.fixture(scope="session")
def tau22_written(tmp_path_factory) -> Path:
    """TAU22-layout wav files, written once (the slowest fixture); a test that alters files works on a copy."""
    root = made_once(tmp_path_factory, "tau22",
                     lambda directory: write_tau22(directory / ROOT_NAME, per_class=1, test_clips_per_segment=2))  # fmt: skip
    return root / ROOT_NAME


@pytest.fixture(scope="session")
def cochl_written(tmp_path_factory) -> Path:
    """CochlScene-layout wav files, written once; read only."""
    return made_once(tmp_path_factory, "CochlScene", write_cochlscene)


# The scopes that take longest (worker-seconds in `make test`, 2026-12-06: 116 to 24), handed out first so that no
# long file starts last while the other worker sits idle; the rest follow in xdist's order (most tests first). A
# hint only: a file not named here still runs.
LONGEST_FIRST = (
    "tests/search/test_recipes.py", GROUP, "tests/search/test_faults_interrupt.py", "tests/search/test_real_data.py",
    "tests/search/test_faults_portable.py", "tests/search/test_faults_runs.py", "tests/search/test_resume.py",
    "tests/asc/test_cuda_path.py", "tests/search/test_cluster.py", "tests/speaker/test_oskdft2_search.py",
    "tests/search/test_shared_data.py",
)  # fmt: skip


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test`'s --dist loadfile, but the files that read tests/small_run.py's run are one scope, so the worker
    that runs them makes the run once (xdist's loadgroup would say it with marks; with pytest 9.2 it no longer
    groups), and the longest scopes go first."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return GROUP if scope in READERS else scope

        def _assign_work_unit(self, node) -> None:
            longest = next((scope for scope in LONGEST_FIRST if scope in self.workqueue), None)
            if longest is not None:
                self.workqueue.move_to_end(longest, last=False)
            super()._assign_work_unit(node)

    return SharedRunScheduling(config, log)


@pytest.fixture(scope="session")
def kd_run(ray_session, service_data, tmp_path_factory) -> dict:
    """tests/small_run.py's search, made once (its readers are one xdist scope). Read only: a test that alters it
    works on a copy."""
    return small_run(tmp_path_factory.mktemp("small_run"), service_data)


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
