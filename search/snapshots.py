"""Tune's snapshot of an experiment, and a copy of its last whole one to resume from.

Tune writes its snapshot (`experiment_state-<session>.json`, the search algorithm's and the callbacks' states) in a
staging folder and then copies it over the copy in the run directory, in place. A storage that fills up, or a
driver killed, in the middle of that copy leaves the run's snapshot cut short, and the experiment could only
start again. SnapshotKeeper keeps, in the experiment directory, a copy of the newest snapshot that reads whole
(`.whole-snapshot.<ns>/`, made under a temporary name and renamed), and a resume falls back on it.
"""

from __future__ import annotations

import json
import pickletools
import shutil
import time
from pathlib import Path

from ray import tune

from trainables.atomic import build_directory, write_file

KEPT_PREFIX = ".whole-snapshot."


def session_files(experiment_dir: Path, session: str) -> list[Path]:
    """The files of Tune's snapshot of one driver session (`*-<session>.*`)."""
    return [f for f in Path(experiment_dir).glob(f"*-{session}.*") if f.is_file()]


def newest_session(experiment_dir: Path) -> str | None:
    """The session of the newest `experiment_state-<session>.json` (the one a resume reads)."""
    newest = max(Path(experiment_dir).glob("experiment_state-*.json"), default=None)
    return None if newest is None else newest.name.removeprefix("experiment_state-").removesuffix(".json")


def _whole_pickle(path: Path) -> bool:
    # Read as opcodes only, nothing is built: a pickle cut short never reaches its STOP.
    try:
        for _ in pickletools.genops(path.read_bytes()):
            pass
        return True
    except (OSError, ValueError):
        return False


def whole_snapshot(files: list[Path], with_searcher: bool = True) -> bool:
    """Whether `files` (one session's) are a snapshot Tune can resume from: its experiment state reads as JSON, the
    search algorithm's state is there when `with_searcher`, and every pickled state reads to its end."""
    states = [f for f in files if f.name.startswith("experiment_state-")]
    try:
        if len(states) != 1:
            return False
        json.loads(states[0].read_text())
    except (OSError, ValueError):
        return False
    if with_searcher and not any(f.name.startswith("search_gen_state-") for f in files):
        return False
    pickled = [f for f in files if f.suffix == ".pkl" or f.name.startswith("search_gen_state-")]
    return all(_whole_pickle(f) for f in pickled)


def kept_snapshots(experiment_dir: Path) -> list[Path]:
    """SnapshotKeeper's copies in `experiment_dir`, newest first."""
    found = [d for d in Path(experiment_dir).glob(f"{KEPT_PREFIX}*") if d.is_dir() and d.name[len(KEPT_PREFIX):].isdigit()]
    return sorted(found, key=lambda d: int(d.name[len(KEPT_PREFIX):]), reverse=True)


def restore_kept_snapshot(experiment_dir: Path) -> str | None:
    """Put the newest whole kept snapshot back in `experiment_dir`; when it was taken (local time), None if none is."""
    for kept in kept_snapshots(experiment_dir):
        files = [f for f in kept.iterdir() if f.is_file()]
        if not whole_snapshot(files):
            continue
        for file in files:
            write_file(Path(experiment_dir) / file.name, lambda tmp, file=file: shutil.copyfile(file, tmp))
        return time.strftime("%H:%M:%S", time.localtime(int(kept.name[len(KEPT_PREFIX):]) / 1e9))
    return None


class SnapshotKeeper(tune.Callback):
    """Copies Tune's snapshot of the experiment, each time it changed and reads whole, to `.whole-snapshot.<ns>/`
    beside it, and drops the copy before. A copy the storage has no room for is not made; the last one stays."""

    def __init__(self) -> None:
        self._stamp: tuple = ()
        self._checked = 0.0

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if not trials or time.monotonic() - self._checked < 1.0:  # Tune steps many times a second
            return
        self._checked = time.monotonic()
        self.keep(Path(trials[0].path).parent)

    def on_experiment_end(self, trials: list, **info) -> None:
        if trials:
            self.keep(Path(trials[0].path).parent)

    def keep(self, experiment_dir: Path) -> None:
        session = newest_session(experiment_dir)
        if session is None:
            return
        files = sorted(session_files(experiment_dir, session))
        try:
            stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        except OSError:  # replaced while looked at
            return
        if stamp == self._stamp or not whole_snapshot(files):  # unchanged, or Tune is copying it right now
            return

        def copy(work: Path) -> None:
            for file in files:
                shutil.copyfile(file, work / file.name)
            if not whole_snapshot(list(work.iterdir())):  # Tune rewrote a file while it was copied
                raise ValueError("snapshot changed while copied")

        try:
            build_directory(experiment_dir / f"{KEPT_PREFIX}{time.time_ns()}", copy)
        except (OSError, ValueError):
            return
        self._stamp = stamp
        for older in kept_snapshots(experiment_dir)[1:]:
            shutil.rmtree(older, ignore_errors=True)
