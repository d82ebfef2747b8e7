"""kill -9 of the driver in the middle of a search, then the same command with --resume finishes it."""

from __future__ import annotations

import json
import os
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

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ["epochs=4", "batch_size=50", "compare_without_kd=false",
            "scheduler.type=fifo",
            "data.seed=3", "data.train_segments_per_class=3", "data.test_segments_per_class=1",
            "data.held_out_clips_per_segment=4"]  # fmt: skip


def _space(directory: Path) -> Path:
    """The kd space searching only the learning rate, without a teacher (kd_lambda = 1), for speed."""
    raw = yaml.safe_load((ROOT / "spaces" / "kd.yaml").read_text())
    raw["search"] = {"subset": [5], "lr": {"low": 0.002, "high": 0.02, "log": True}}
    raw["kd_lambda"] = 1.0
    path = directory / "crash.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _command(storage: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "search/run.py", "--space", str(_space(storage.parent)), "--storage", str(storage),
            "--name", "crash", "--samples", "3"]  # fmt: skip
    for setting in SETTINGS:
        argv += ["--set", setting]
    return argv + list(extra)  # a later --samples wins (argparse keeps the last)


def _checkpoints(run_dir: Path) -> int:
    return len(list((run_dir / "search").glob("*/checkpoint_*")))


def test_kill_minus_nine_then_resume(tmp_path):
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    # A Ray of its own: the driver's local cluster dies with it, as on a real crash.
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/kdc{os.getpid()}", "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(_command(storage), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    while _checkpoints(run_dir) < 2 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    assert driver.poll() is None, "the search ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
    driver.wait()
    assert _checkpoints(run_dir) >= 2
    assert not (run_dir / "leaderboard.csv").exists()

    resumed = subprocess.run(_command(storage, "--resume"), cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 3 and (board["status"] == "complete").all()
    restored = 0
    for trial_dir in board["trial_dir"]:
        results = [json.loads(line) for line in Path(trial_dir, "result.json").read_text().splitlines() if line]
        epochs = [r["epoch"] for r in results]
        assert epochs == sorted(epochs) and epochs[-1] == 4, f"{trial_dir}: epochs {epochs} restarted"
        restored += any(r["iterations_since_restore"] < r["training_iteration"] for r in results)
        assert len(list(Path(trial_dir).glob("checkpoint_*"))) <= 2, "only the latest and the best checkpoint"
    assert restored >= 1, "at least one trial continued from its checkpoint"
    study = optuna.load_study(study_name="subset5", storage=JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal"))))
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials), "Optuna state kept"


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


def test_a_trial_whose_worker_dies_is_retried_from_its_checkpoint(tmp_path):
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    temp_dir = f"/tmp/kdw{os.getpid()}"
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled"}
    command = _command(storage, "--samples", "1", "--set", "max_failures=1")
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    try:
        # Tune registers an epoch's checkpoint in a second call to the worker, after the epoch's result; once
        # the next epoch's checkpoint is on disk, the first is registered and a retry must continue from it.
        deadline = time.time() + 240
        while _checkpoints(run_dir) < 2 and time.time() < deadline and driver.poll() is None:
            time.sleep(0.3)
        workers = _trial_workers(temp_dir)
        assert workers, "no trial process found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert driver.wait(timeout=400) == 0
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 1 and board.iloc[0]["status"] == "complete"
    results = [json.loads(line) for line in Path(board.iloc[0]["trial_dir"], "result.json").read_text().splitlines() if line]
    assert [r["epoch"] for r in results][-1] == 4
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in results), "retried from its checkpoint"
