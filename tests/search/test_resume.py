"""kill -9 of the driver in the middle of a search, then the same command with --resume finishes it, also in a
copy of the run whose original was moved away (issue 26, case 1)."""

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
    indices = [checkpoint_index(path.name) for path in (run_dir / "search").glob("*/checkpoint_*")]
    return max(indices, default=-1) + 1


def _study(run_dir: Path) -> optuna.Study:
    """The run's Optuna study of subset 5, as kept next to the run."""
    return optuna.load_study(study_name=f"{run_dir.name}/subset5",
                             storage=JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal"))))


def test_kill_minus_nine_then_resume(tmp_path, service_data):
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    # A Ray of its own: the driver's local cluster dies with it, as on a real crash. Tune snapshots every 2 s
    # instead of 10, so that one names a running trial's checkpoint before the first trials are over.
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/kdc{os.getpid()}", "RAY_AUTH_MODE": "disabled",
           "TUNE_GLOBAL_CHECKPOINT_S": "2"}  # fmt: skip
    # One trial at a time: the kill comes before the searcher made every trial, so the resumed run must make
    # the rest, with the same constants (data, settings) as the first.
    command = _command(storage, service_data, "--set", "max_concurrent=1")
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
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
    assert len(list((run_dir / "search").glob("subset5_*"))) < 3, "every trial was made before the kill"

    # The copy resumes; the original, moved away, is never read or written (Tune's snapshot names its old path).
    copy, moved = tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(storage, copy, symlinks=True)
    storage.rename(moved)
    original = {p: p.read_bytes() for p in sorted(moved.rglob("*")) if p.is_file()}
    run_dir = copy / "crash"
    resumed = subprocess.run(_command(copy, service_data, "--set", "max_concurrent=1", "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert {p: p.read_bytes() for p in sorted(moved.rglob("*")) if p.is_file()} == original
    assert not storage.exists(), "nothing is written where the original was"
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    errors = [Path(d, "error.txt").read_text()[-1500:] for d in board["trial_dir"] if Path(d, "error.txt").exists()]
    assert len(board) == 3 and (board["status"] == "complete").all(), errors
    restored = 0
    for trial_dir in board["trial_dir"]:
        results = [json.loads(line) for line in Path(trial_dir, "result.json").read_text().splitlines() if line]
        epochs = [r["epoch"] for r in results]
        assert epochs == sorted(epochs) and epochs[-1] == 4, f"{trial_dir}: epochs {epochs} restarted"
        restored += any(r["iterations_since_restore"] < r["training_iteration"] for r in results)
        assert len(list(Path(trial_dir).glob("checkpoint_*"))) <= 2, "only the latest and the best checkpoint"
    assert restored >= 1, "at least one trial continued from its checkpoint"
    study = _study(run_dir)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials), "Optuna state kept"


def test_a_crash_before_tunes_first_snapshot_resumes_with_the_same_trial_settings(tmp_path, service_data):
    """Tune keeps the searcher's state only from its first snapshot on; a resume without it makes every trial
    anew, and each must still get the run's constants (the data, the fixed settings)."""
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/kds{os.getpid()}", "RAY_AUTH_MODE": "disabled"}
    command = _command(storage, service_data, "--samples", "2", "--set", "epochs=1", "--set", "max_concurrent=1")
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    while not list((run_dir / "search").glob("subset5_*")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, "the search ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    for snapshot in (run_dir / "search").glob("*state*"):  # as if the kill came before Tune wrote them
        snapshot.unlink()

    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 2 and (board["status"] == "complete").all(), board[["trial_id", "status"]]
    assert len(list(run_dir.glob("search.interrupted-*/subset5_*"))) == 1, "the killed run's trial is kept aside"
    study = _study(run_dir)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"], "the killed run's trial is told failed, not left running"


def _trial_workers(temp_dir: str) -> list[int]:
    """PIDs of trial processes belonging to the Ray that uses `temp_dir` (the test session's Ray is left alone)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            mine = temp_dir.encode() in Path(f"/proc/{pid}/environ").read_bytes()
            if mine and b"ImplicitFunc" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_a_trial_whose_worker_dies_is_retried_from_its_checkpoint(tmp_path, service_data):
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    temp_dir = f"/tmp/kdw{os.getpid()}"
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled"}
    # Six epochs: after the second checkpoint the trial is far from its end however slow the machine.
    command = _command(storage, service_data, "--samples", "1", "--set", "max_failures=1", "--set", "epochs=6")
    log = tmp_path / "driver.log"
    with log.open("w") as output:
        driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        # Tune registers an epoch's checkpoint in a second call to the worker, after the epoch's result; once
        # the next epoch's checkpoint is on disk, the first is registered and a retry must continue from it.
        deadline = time.time() + 240
        workers: list[int] = []
        while not (workers and _epochs_checkpointed(run_dir) >= 2) and time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
            workers = _trial_workers(temp_dir)
        assert driver.poll() is None, f"the search ended before its worker could be killed:\n{log.read_text()[-2000:]}"
        assert workers, f"no trial process found:\n{log.read_text()[-2000:]}"
        assert 2 <= _epochs_checkpointed(run_dir) < 6, "killed in the middle of the trial"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert driver.wait(timeout=400) == 0, log.read_text()[-2000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 1 and board.iloc[0]["status"] == "complete"
    results = [json.loads(line) for line in Path(board.iloc[0]["trial_dir"], "result.json").read_text().splitlines() if line]
    epochs = [r["epoch"] for r in results]
    assert epochs[-1] == 6 and epochs == sorted(epochs), f"epochs {epochs}"
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in results), "retried from its checkpoint"


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
