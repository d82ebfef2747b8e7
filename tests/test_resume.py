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
SETTINGS = ["epochs=4", "batch_size=50", "eval_batch_size=300", "compare_without_kd=false",
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
    return argv + list(extra)


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
    assert restored >= 1, "at least one trial continued from its checkpoint"
    study = optuna.load_study(study_name="subset5", storage=JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal"))))
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials), "Optuna state kept"
