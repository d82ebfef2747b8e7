"""One driver per run: a lock file in the run directory, held for the life of the run.

Two drivers of the same run would both pass the run-directory check, share one Optuna journal and one
Tune experiment, and corrupt both. The lock is an flock on `<run>/.lock`, which the kernel drops when
its holder dies however it dies, so a lock left by a killed driver is simply taken over; the file
records the holder's pid and host for the message a refused run prints.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another driver holds the run's lock."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `<run_dir>/.lock` for the block (RunLocked if another live driver holds it).

    A run directory this call had to create, and that the block left empty, is removed again."""
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    handle = _acquire(path, run_dir, created)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the unlock, so no waiting driver locks a file about to vanish
        os.close(handle)
        if created:
            try:
                run_dir.rmdir()  # only if nothing was written
            except OSError:
                pass


def _acquire(path: Path, run_dir: Path, created: bool) -> int:
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise RunLocked(f"{run_dir} is in use by another run (pid, host: {holder}); wait for it to end, "
                            "or choose another --name") from None  # fmt: skip
        except OSError as err:  # a file system without locks (some NFS mounts): run unguarded, and say so
            print(f"warning: cannot lock {path} ({err.strerror}); make sure no other run uses this --name",
                  file=sys.stderr)  # fmt: skip
            return handle
        try:  # the holder that just ended may have removed the file we locked; then lock the new one
            if os.fstat(handle).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)
    stale = os.pread(handle, 200, 0).decode(errors="replace").strip()
    if stale and not created:
        print(f"Taking over the lock of a run that ended without releasing it ({stale})", flush=True)
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return handle
