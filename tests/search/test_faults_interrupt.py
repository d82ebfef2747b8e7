"""One run, stopped every way a run is stopped, then finished:
- kill -9 before Tune's first snapshot: a resume without the searcher's state makes every trial anew, each with the
  run's constants, and tells the killed one failed;
- Ctrl-C in the middle stops it cleanly, and a second driver of the same run is refused while the first holds it
  (issue 18, cases 1 and 2);
- SIGTERM to the driver's whole process group stops it as Ctrl-C does, and the command printed to continue works
  from anywhere (issue 26, cases 8 and 9: the group's signal reaches the driver too).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest

from search.run import main
from tests.search.test_resume import ROOT, _command, _epochs_checkpointed, _study, ray_left


def _wait_for_a_checkpoint(driver: subprocess.Popen, run_dir: Path, beyond: int = 0) -> None:
    """Until some trial of the run has checkpointed more than `beyond` epochs, or its driver ended (the caller
    asserts which)."""
    deadline = time.time() + 240
    while _epochs_checkpointed(run_dir) <= beyond and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)


def _interrupted(command: list[str], cwd: Path, env: dict, log: Path, run_dir: Path, signal_: int, beyond: int = 0,
                 while_running: Callable[[], None] | None = None) -> subprocess.Popen:  # fmt: skip
    """Start `command` as the leader of its own process group (as a terminal or a batch job's shell starts it), wait
    for a checkpoint past `beyond` epochs, call `while_running`, and send `signal_` to the whole group (what Ctrl-C
    in its terminal, or a cluster scheduler, does); the driver, ended."""
    with log.open("w") as output:
        driver = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        _wait_for_a_checkpoint(driver, run_dir, beyond)
        assert driver.poll() is None, f"the search ended before it was signalled:\n{log.read_text()[-2000:]}"
        if while_running is not None:
            while_running()
        os.killpg(driver.pid, signal_)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    return driver


def test_killed_before_its_first_snapshot_then_ctrl_c_then_sigterm_to_the_group_and_the_printed_command_finishes(
        tmp_path, capsys, service_data):  # fmt: skip
    """A driver killed (kill -9) before Tune wrote its first snapshot: Tune keeps the searcher's state only from
    that snapshot on, so the resume makes every trial anew; each must still get the run's constants, and the killed
    trial is kept aside and told failed. Ctrl-C in the middle of that resumed search stops it cleanly, and a second
    driver of the same run is refused while the first holds it. The command it prints continues the run from any
    directory (the user typed `python search/run.py …`, a relative script path); SIGTERM to that driver's whole
    process group, as a cluster scheduler sends it, stops it as Ctrl-C does: Ray's raylet and GCS, in the group, must
    not go down with it and take the driver along. The command printed then finishes the search."""
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/kdi{os.getpid()}", "RAY_AUTH_MODE": "disabled"}
    command = _command(storage, service_data, "--samples", "2", "--set", "epochs=3", "--set", "max_concurrent=1")

    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    while not list((run_dir / "search").glob("subset5_*")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, "the search ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    for snapshot in [*(run_dir / "search").glob("*state*"), *(run_dir / "search").glob(".whole-snapshot.*")]:
        shutil.rmtree(snapshot) if snapshot.is_dir() else snapshot.unlink()  # as if killed before Tune wrote them
    (killed,) = [d.name.rsplit("_", 1)[1] for d in (run_dir / "search").glob("subset5_*")]

    def second_driver_is_refused() -> None:  # case 2, while the first holds the run
        assert main(command[2:]) == 2
        assert "in use by another run" in capsys.readouterr().err

    def failed() -> list[str]:
        return [t.user_attrs["trial_id"] for t in _study(run_dir).trials if t.state == optuna.trial.TrialState.FAIL]

    def own_ray(name: str) -> dict:  # a Ray temp dir for each driver: the processes of each are told apart
        return {**env, "RAY_TMPDIR": f"/tmp/{name}{os.getpid()}"}

    ctrl_c_env = own_ray("kdj")
    driver = _interrupted(command + ["--resume"], ROOT, ctrl_c_env, tmp_path / "ctrl_c.log", run_dir, signal.SIGINT,
                          beyond=_epochs_checkpointed(run_dir), while_running=second_driver_is_refused)  # fmt: skip
    said = (tmp_path / "ctrl_c.log").read_text()
    assert driver.returncode == 130, said[-3000:]
    assert not ray_left(ctrl_c_env["RAY_TMPDIR"]), "the Ray the run started stops with it"
    assert "--resume" in said and "Traceback" not in said, said[-3000:]
    assert not (run_dir / "leaderboard.csv").exists(), "an interrupted search is not ranked"
    assert not (run_dir / ".lock").exists()
    assert [d.name for d in run_dir.glob("search.interrupted-*/subset5_*")] == [f"subset5_{killed}"], "kept aside"
    assert failed() == [], "an interrupted trial is not told failed (the killed one is, once the run ends)"

    hints = [line for line in said.splitlines() if "continue with: " in line]
    assert len(hints) == 1, said[-3000:]
    again = shlex.split(hints[0].split("continue with: ", 1)[1])
    assert again[-1] == "--resume" and Path(again[1]).is_absolute(), again
    done = _epochs_checkpointed(run_dir)
    sigterm_env = own_ray("kdk")
    driver = _interrupted(again, elsewhere, sigterm_env, tmp_path / "sigterm.log", run_dir, signal.SIGTERM, beyond=done)
    said = (tmp_path / "sigterm.log").read_text()
    assert driver.returncode == 143, said[-3000:]
    hints = [line for line in said.splitlines() if "continue with: " in line]
    assert len(hints) == 1 and "Traceback" not in said and "core_worker" not in said, said[-3000:]
    assert said.rstrip().splitlines()[-1] == f"Interrupted; the trials are saved in {run_dir}", said[-1000:]
    assert not (run_dir / "leaderboard.csv").exists() and not (run_dir / ".lock").exists()
    assert not ray_left(sigterm_env["RAY_TMPDIR"])
    assert failed() == []

    final_env = own_ray("kdl")
    resumed = subprocess.run(shlex.split(hints[0].split("continue with: ", 1)[1]), cwd=elsewhere, env=final_env,
                             capture_output=True, text=True, timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert not ray_left(final_env["RAY_TMPDIR"])
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 2 and (board["status"] == "complete").all(), board[["trial_id", "status", "epochs"]]
    assert killed not in set(board["trial_id"]), "the killed trial was made anew, under another id"
    assert sorted(t.state.name for t in _study(run_dir).trials) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert failed() == [killed], "the killed run's trial is told failed, not left running"


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
