"""Ctrl-C in the middle of a search stops it cleanly and --resume finishes it; a second driver of the same
run is refused while the first holds it (issue 18, cases 1 and 2). SIGTERM, to the driver or to its whole process
group, stops a run as Ctrl-C does, and the command printed to continue works from anywhere (issue 26, cases 8 and 9,
in one run: the group's signal reaches the driver too)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from search.run import main
from tests.search.test_resume import ROOT, _command, _epochs_checkpointed, _study


def _wait_for_a_checkpoint(driver: subprocess.Popen, run_dir: Path) -> None:
    """Until the run has checkpointed an epoch, or its driver ended (the caller asserts which)."""
    deadline = time.time() + 240
    while _epochs_checkpointed(run_dir) < 1 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)


def test_ctrl_c_stops_cleanly_and_resume_finishes_the_search(tmp_path, capsys, service_data):
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/kdi{os.getpid()}", "RAY_AUTH_MODE": "disabled"}
    command = _command(storage, service_data, "--samples", "2", "--set", "epochs=3", "--set", "max_concurrent=1")
    log = tmp_path / "driver.log"
    with log.open("w") as output:  # a session of its own: Ctrl-C reaches the driver and everything it started
        driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        _wait_for_a_checkpoint(driver, run_dir)
        assert driver.poll() is None, f"the search ended before Ctrl-C:\n{log.read_text()[-2000:]}"

        # Case 2: while the driver runs, a second run of the same name is refused before it touches anything.
        assert main(command[2:]) == 2
        assert "in use by another run" in capsys.readouterr().err

        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert driver.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    said = log.read_text()
    assert "--resume" in said and "Traceback" not in said, said[-3000:]
    assert not (run_dir / "leaderboard.csv").exists(), "an interrupted search is not ranked"
    assert not (run_dir / ".lock").exists()
    states = {t.state for t in _study(run_dir).trials}
    assert optuna.trial.TrialState.FAIL not in states, "an interrupted trial is not told failed"

    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 2 and (board["status"] == "complete").all(), board[["trial_id", "status", "epochs"]]
    assert sorted(t.state.name for t in _study(run_dir).trials) == ["COMPLETE", "COMPLETE"]


def test_sigterm_to_the_whole_process_group_stops_like_ctrl_c_and_the_printed_command_continues_from_anywhere(
        tmp_path, service_data):  # fmt: skip
    """A cluster scheduler signals the job's process group (`kill -TERM -<pgid>`), which holds the Ray the run
    started: Ray's raylet and GCS must not go down with it and take the driver along (it exited 1, saying nothing).
    The driver, signalled with the rest, stops as on Ctrl-C, and the command it prints continues the run from any
    directory (the user typed `python search/run.py …`, a relative script path)."""
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/kdg{os.getpid()}", "RAY_AUTH_MODE": "disabled"}
    command = _command(storage, service_data, "--samples", "1", "--set", "epochs=2")
    log = tmp_path / "driver.log"
    with log.open("w") as output:  # the driver leads its own process group, as a batch job's shell does
        driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        _wait_for_a_checkpoint(driver, run_dir)
        assert driver.poll() is None, f"the search ended before SIGTERM:\n{log.read_text()[-2000:]}"
        os.killpg(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=120) == 143, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    said = log.read_text()
    hints = [line for line in said.splitlines() if "continue with: " in line]
    assert len(hints) == 1 and "Traceback" not in said and "core_worker" not in said, said[-3000:]
    assert said.rstrip().splitlines()[-1] == f"Interrupted; the trials are saved in {run_dir}", said[-1000:]
    assert not (run_dir / "leaderboard.csv").exists() and not (run_dir / ".lock").exists()
    assert optuna.trial.TrialState.FAIL not in {t.state for t in _study(run_dir).trials}

    again = shlex.split(hints[0].split("continue with: ", 1)[1])
    assert again[-1] == "--resume" and Path(again[1]).is_absolute(), again
    resumed = subprocess.run(again, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 1 and (board["status"] == "complete").all(), board[["trial_id", "status", "epochs"]]


def test_stopped_before_the_run_started_it_says_how_to_start_it_as_typed(tmp_path):
    """Run as `kd-search` and stopped (SIGTERM) while its dataset is generated: no run exists yet to resume."""
    kd_search = Path(sys.executable).parent / "kd-search"
    if not kd_search.is_file():
        pytest.skip("kd-search is not installed next to this Python")
    storage = tmp_path / "runs"
    datasets = storage / "cache" / "datasets"
    log = tmp_path / "driver.log"
    with log.open("w") as output:
        driver = subprocess.Popen([str(kd_search), "--space", "kd", "--storage", str(storage), "--subsets", "5"],
                                  cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not list(datasets.glob(".synthetic-*.partial")) and time.time() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, log.read_text()[-2000:]
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=60) == 143, log.read_text()[-2000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    said = log.read_text()
    assert "Traceback" not in said and "--resume" not in said, said[-2000:]
    (line,) = [line for line in said.splitlines() if line.startswith("Interrupted")]
    assert line.endswith(f"start it again with: kd-search --space kd --storage {storage} --subsets 5"), line
    assert not (storage / "kd").exists() and not list(datasets.iterdir()), "nothing half-made is left"
