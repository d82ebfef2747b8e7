"""kill -9 of the driver in the middle of a search, then the same command with --resume finishes it, also in a
copy of the run whose original was moved away (issue 26, case 1), and retries a trial whose worker died. (A kill
before Tune's first snapshot is in test_faults_interrupt.py, as the start of its run.)"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from results.trial_records import checkpoint_index
from search.checkpoint_retention import restore_floors, restore_points

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["epochs=4", "batch_size=50", "compare_without_kd=false", "scheduler.type=fifo", "train_steps=0", "confirm_top_k=0"]


def _space(directory: Path) -> Path:
    """The kd space searching only the learning rate, without a teacher (kd_lambda = 1), for speed."""
    raw = yaml.safe_load((ROOT / "spaces" / "kd.yaml").read_text())
    raw["search"] = {"subset": [5], "lr": {"low": 0.002, "high": 0.02, "log": True}}
    raw["kd_lambda"] = 1.0
    path = directory / "crash.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _command(storage: Path, data: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "search/run.py", "--space", str(_space(storage.parent)), "--data", str(data),
            "--storage", str(storage), "--name", "crash", "--samples", "3"]  # fmt: skip
    for setting in SETTINGS:
        argv += ["--set", setting]
    return argv + list(extra)  # a later --samples wins (argparse keeps the last)


def _epochs_checkpointed(run_dir: Path) -> int:
    """The most epochs any trial has a checkpoint of on disk (0 before the first).

    Not a count of checkpoint folders: a trial keeps its latest and best, and deletes older ones once
    Tune's snapshot has moved past them, so a count flickers.
    """
    while True:
        try:
            indices = [checkpoint_index(path.name) for path in (run_dir / "search").glob("*/checkpoint_*")]
            return max(indices, default=-1) + 1
        except FileNotFoundError:  # a folder renamed as it was listed (SnapshotKeeper's staging copy): again
            continue


def _study(run_dir: Path) -> optuna.Study:
    """The run's Optuna study of subset 5, as kept next to the run."""
    return optuna.load_study(study_name=f"{run_dir.name}/subset5",
                             storage=JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal"))))


def ray_processes(temp_dir: str, only: bytes = b"") -> list[int]:
    """PIDs of the processes of the Ray that uses `temp_dir` (the test session's Ray is left alone), those whose
    command line holds `only`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            mine = temp_dir.encode() in Path(f"/proc/{pid}/environ").read_bytes()
            if mine and only in Path(f"/proc/{pid}/cmdline").read_bytes() and pid != str(os.getpid()):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def _trial_workers(temp_dir: str) -> list[int]:
    return ray_processes(temp_dir, b"ImplicitFunc")


def ray_left(temp_dir: str) -> list[int]:
    """The PIDs of the GCS and raylet of the Ray using `temp_dir` still running. A run stops the Ray it started
    before it exits; its workers then end as they notice (Ray's fate-sharing), which takes a moment."""
    return ray_processes(temp_dir, b"gcs_server") + ray_processes(temp_dir, b"/raylet")


def _checkpointed(trial_dir: Path) -> int:
    """How many epochs one trial has a checkpoint of on disk."""
    return max((checkpoint_index(p.name) for p in trial_dir.glob("checkpoint_*")), default=-1) + 1


def _results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in Path(trial_dir, "result.json").read_text().splitlines() if line]


def test_kill_minus_nine_then_resume_in_a_copy_where_a_dead_worker_is_retried(tmp_path, service_data):
    """kill -9 of the driver in the middle of a search; the same command with --resume finishes it in a copy of the
    run whose original was moved away (issue 26, case 1). In that resumed run, the worker of a trial it made is
    killed too: with max_failures 1 the trial is retried from its checkpoint and the run succeeds."""
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    # A Ray of its own: the driver's local cluster dies with it, as on a real crash. Tune snapshots every 2 s
    # instead of 10, so that one names a running trial's checkpoint before the first trials are over.
    temp_dir = f"/tmp/kdc{os.getpid()}"
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled", "TUNE_GLOBAL_CHECKPOINT_S": "2"}
    # One trial at a time: the kill comes before the searcher made every trial, so the resumed run must make
    # the rest, with the same constants (data, settings) as the first. Five epochs: a trial the resumed run makes
    # is far from its end when its worker is killed after its second checkpoint.
    settings = ["--set", "max_concurrent=1", "--set", "max_failures=1", "--set", "epochs=5"]
    driver = subprocess.Popen(_command(storage, service_data, *settings), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    # Killed once Tune's snapshot would restore a trial from a checkpoint it names: the resume then has one to
    # continue from (a snapshot may hold a trial's result before its checkpoint: that trial would restart).
    while not (any((restore_points(run_dir / "search") or {}).values()) and _epochs_checkpointed(run_dir) >= 2) \
            and time.time() < deadline and driver.poll() is None:  # fmt: skip
        time.sleep(0.2)
    assert driver.poll() is None, "the search ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
    driver.wait()
    assert _epochs_checkpointed(run_dir) >= 2
    assert not (run_dir / "leaderboard.csv").exists()
    for trial_id, index in (restore_floors(run_dir / "search") or {}).items():
        assert list((run_dir / "search").glob(f"*_{trial_id}/checkpoint_{index:06d}")), "Tune's snapshot needs it"
    made_before = {d.name for d in (run_dir / "search").glob("subset5_*")}
    assert len(made_before) < 3, "every trial was made before the kill"

    # The copy resumes; the original, moved away, is never read or written (Tune's snapshot names its old path).
    copy, moved = tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(storage, copy, symlinks=True)
    storage.rename(moved)
    original = {p: p.read_bytes() for p in sorted(moved.rglob("*")) if p.is_file()}
    run_dir = copy / "crash"
    log = tmp_path / "resumed.log"
    with log.open("w") as output:
        resumed = subprocess.Popen(_command(copy, service_data, *settings, "--resume"), cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        # Tune registers an epoch's checkpoint in a second call to the worker, after the epoch's result; once the
        # next epoch's checkpoint is on disk, the first is registered and a retry must continue from it.
        deadline, killed, workers = time.time() + 240, None, []
        while killed is None and time.time() < deadline and resumed.poll() is None:
            time.sleep(0.2)
            made = [d for d in (run_dir / "search").glob("subset5_*") if d.name not in made_before]
            killed = next((d for d in made if _checkpointed(d) >= 2), None)
            workers = _trial_workers(temp_dir)
        assert killed is not None and resumed.poll() is None, f"no trial of its own to kill:\n{log.read_text()[-2000:]}"
        assert workers, f"no trial process found:\n{log.read_text()[-2000:]}"
        epochs_at_kill = _checkpointed(killed)
        assert epochs_at_kill < 5, "killed in the middle of the trial"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert resumed.wait(timeout=400) == 0, log.read_text()[-2000:]
    finally:
        if resumed.poll() is None:
            os.killpg(resumed.pid, signal.SIGKILL)
    assert {p: p.read_bytes() for p in sorted(moved.rglob("*")) if p.is_file()} == original
    assert not storage.exists(), "nothing is written where the original was"
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    errors = [Path(d, "error.txt").read_text()[-1500:] for d in board["trial_dir"] if Path(d, "error.txt").exists()]
    assert len(board) == 3 and (board["status"] == "complete").all(), errors
    restored = 0
    for trial_dir in board["trial_dir"]:
        results = _results(trial_dir)
        epochs = [r["epoch"] for r in results]
        assert epochs == sorted(epochs) and epochs[-1] == 5, f"{trial_dir}: epochs {epochs} restarted"
        restored += Path(trial_dir).name in made_before and any(
            r["iterations_since_restore"] < r["training_iteration"] for r in results)  # fmt: skip
        assert len(list(Path(trial_dir).glob("checkpoint_*"))) <= 2, "only the latest and the best checkpoint"
    assert restored >= 1, "at least one trial of the killed run continued from its checkpoint"
    # The trial whose worker died: retried from a checkpoint it had before the kill, not from its start.
    retried = [r for r in _results(killed) if r["iterations_since_restore"] < r["training_iteration"]]
    assert retried, "retried from its checkpoint"
    assert retried[0]["training_iteration"] - retried[0]["iterations_since_restore"] >= 1, "from its checkpoint"
    assert retried[0]["training_iteration"] <= epochs_at_kill + 1
    study = _study(run_dir)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials), "Optuna state kept"


def test_a_half_written_snapshot_is_set_aside_for_the_whole_one_before_it(tmp_path):
    from search.tuning import _usable_snapshot

    (tmp_path / "experiment_state-2026-01-01_10-00-00.json").write_text('{"trials": []}')
    (tmp_path / "search_gen_state-2026-01-01_10-00-00.json").write_bytes(pickle.dumps({}))  # Tune pickles it
    (tmp_path / "experiment_state-2026-01-02_10-00-00.json").write_text('{"trials": [')  # killed mid-write
    (tmp_path / "searcher-state-2026-01-02_10-00-00.pkl").write_bytes(b"")
    assert _usable_snapshot(tmp_path, with_searcher=True)
    assert sorted(p.name for p in tmp_path.glob("*-*.*")) == ["experiment_state-2026-01-01_10-00-00.json",
                                                           "search_gen_state-2026-01-01_10-00-00.json"]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / ".incomplete").iterdir()) == [
        "experiment_state-2026-01-02_10-00-00.json", "searcher-state-2026-01-02_10-00-00.pkl"]  # fmt: skip

    (tmp_path / "search_gen_state-2026-01-01_10-00-00.json").unlink()  # killed before the searcher's state
    assert not _usable_snapshot(tmp_path, with_searcher=True)
    assert not list(tmp_path.glob("experiment_state-*"))
