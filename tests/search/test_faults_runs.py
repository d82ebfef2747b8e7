"""Runs that go wrong as a whole: no trial completes, or the storage fills up in the middle
(issue 18, cases 9 and 14), to the last byte, with a $TMPDIR too small for a checkpoint (issue 26, cases 4 and 6)."""

from __future__ import annotations

import os

import optuna
import pandas as pd

from search.per_subset import journal_storage
from search.run import main
from tests.search.test_faults_input import _in_namespace, needs_mounts
from tests.search.test_resume import _command


def test_a_run_in_which_no_trial_completed_fails(tmp_path, capsys, ray_session, service_data):
    storage = tmp_path / "runs"
    # A budget no student fits: every trial is refused before it trains, quickly.
    argv = _command(storage, service_data, "--samples", "2", "--set", "budget.param_bytes=1000")[2:]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "no trial completed (trials: 2 failed)" in lines[0] and "budget" in lines[0], err
    board = pd.read_csv(storage / "crash" / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "failed").all()
    assert (storage / "crash" / "report.html").is_file()
    assert not (storage / "crash" / ".lock").exists()


@needs_mounts
def test_a_storage_that_fills_up_stops_the_run_and_resume_completes_it(tmp_path, service_data):
    """A small file system of its own, filled to the last byte by another writer while the search runs (as a full
    disk is); checkpoints never pass through $TMPDIR, here a file system with no room for one."""
    storage, out, scratch = tmp_path / "runs", tmp_path / "out", tmp_path / "tmp"
    for directory in (storage, out, scratch):
        directory.mkdir()
    command = _command(storage, service_data, "--samples", "1", "--set", "epochs=3")[1:]
    script = '''
        python=$1; storage=$2; out=$3; scratch=$4; shift 4
        mount -t tmpfs -o size=160m tmpfs "$storage"
        mount -t tmpfs -o size=64k tmpfs "$scratch"; export TMPDIR=$scratch
        "$python" "$@" > "$out/first.log" 2>&1 & driver=$!
        for _ in $(seq 1200); do ls -d "$storage"/crash/search/*/checkpoint_* > /dev/null 2>&1 && break; sleep 0.2; done
        free=$(df --output=avail -B1 "$storage" | tail -1)
        fallocate -l "$free" "$storage/ballast" || true
        dd if=/dev/zero of="$storage/ballast2" bs=64k 2> /dev/null || true   # whatever is left, to the last byte
        code=0; wait $driver || code=$?; echo "first $code"
        ls "$storage/crash" > "$out/after_first.txt"
        rm -f "$storage/ballast" "$storage/ballast2"
        code=0; "$python" "$@" --resume > "$out/second.log" 2>&1 || code=$?; echo "second $code"
        ls "$storage/crash" > "$out/after_second.txt"
        cp "$storage/crash/leaderboard.csv" "$storage/crash/optuna.journal" "$out/"
    '''
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/kdf{os.getpid()}", "RAY_AUTH_MODE": "disabled"}
    done = _in_namespace(script, str(storage), str(out), str(scratch), *command, timeout=500, env=env)
    first = (out / "first.log").read_text()
    assert "first 2" in done.stdout, done.stdout + done.stderr + first[-3000:]
    errors = [line for line in first.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "MiB free" in errors[0] and "--resume" in errors[0], first[-3000:]
    assert "Traceback" not in first, first[-3000:]
    assert "leaderboard.csv" not in (out / "after_first.txt").read_text()
    second = (out / "second.log").read_text()
    assert "second 0" in done.stdout, done.stdout + second[-3000:]
    board = pd.read_csv(out / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 1 and (board["status"] == "complete").all(), board
    # Resumed, not started again: the trial the first run made is the one that completed.
    assert "interrupted" not in (out / "after_second.txt").read_text(), second[-3000:]
    study = optuna.load_study(study_name="crash/subset5", storage=journal_storage(out / "optuna.journal"))
    told = [(t.state.name, t.user_attrs["trial_id"]) for t in study.trials]
    # Stopped by the storage watch, the trial continues as it was; had it failed to write its checkpoint before the
    # watch looked, it failed and was rerun from its last checkpoint as a new Optuna trial.
    trial_id = board.iloc[0]["trial_id"]
    assert told[-1] == ("COMPLETE", trial_id) and set(told[:-1]) <= {("FAIL", trial_id)}, told


_ON_A_FULL_STORAGE = r'''
import logging, sys
from pathlib import Path
from search.stopping import StorageFull, stoppable

seen = []
handler = logging.Handler()
handler.emit = lambda record: seen.append(record.getMessage())
controller = logging.getLogger("ray.tune.execution.tune_controller")
controller.addHandler(handler)
for storage in map(Path, sys.argv[1:]):
    try:
        with stoppable(storage):
            controller.error("Trial task failed for trial t")
            raise EOFError("Ran out of input")  # Tune reading back an error file the trial could not write
    except StorageFull as err:
        print(f"{storage.name}: StorageFull ({err}) from {type(err.__cause__).__name__}; logged {seen}")
    except EOFError:
        print(f"{storage.name}: EOFError; logged {seen}")
    seen.clear()
'''


@needs_mounts
def test_an_experiment_that_fails_on_a_full_storage_stops_as_storage_full_without_tunes_tracebacks(tmp_path):
    """A trial that cannot write its checkpoint fails before the storage watch looks again; Tune logs its traceback
    and then raises reading the error file the trial could not write either. Both are the full storage: one line,
    and --resume. On a storage with room, the same error and log line pass unchanged."""
    full, roomy = tmp_path / "full", tmp_path / "roomy"
    for directory in (full, roomy):
        directory.mkdir()
    done = _in_namespace('mount -t tmpfs -o size=1m tmpfs "$2"\n"$1" -c "$4" "$2" "$3"', str(full), str(roomy),
                         _ON_A_FULL_STORAGE)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    said = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert said["full"].startswith(f"StorageFull (--storage {full}: only 1 MiB free;"), said
    assert "--resume" in said["full"] and said["full"].endswith("from EOFError; logged []"), said
    assert said["roomy"] == "EOFError; logged ['Trial task failed for trial t']", said
