"""Stopping a run cleanly: on Ctrl-C (SIGINT) or SIGTERM (what a cluster scheduler sends before it kills a job),
or when its storage is about to fill up.

Tune's own SIGINT handler ends an experiment after saving its state, but returns as if it had
finished; the run would then rank the cut-off trials and tell Optuna they failed, which makes it
impossible to resume. Here a stop request asks Tune for that same stop through its other stop
signal (SIGUSR1), and the experiment then raises the request (Interrupted, StorageFull), with the
trials left as Tune saved them, for --resume. A second SIGINT or SIGTERM stops at once.
Outside an experiment search/signals.py makes SIGTERM a Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ray.tune import Callback

from search.preflight import RESERVE_BYTES, free_bytes
from search.signals import Terminated

_requests: list[Exception] = []
_resume_hint: list[str] = []


def set_resume_hint(command: str) -> None:
    """The command that continues the run, for the line SIGTERM prints at once: a scheduler kills the job a grace
    period after its SIGTERM, perhaps before the trials are saved and the run can say more."""
    _resume_hint[:] = [command]


class Interrupted(Exception):
    """The user stopped the run (`signum`: SIGINT or SIGTERM); Tune saved what is needed to continue it with --resume."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StorageFull(Exception):
    """The storage ran low on space (`free` bytes left); the run stopped while Tune could still save its state."""

    def __init__(self, storage: Path, free: int):
        super().__init__(f"--storage {storage}: only {free / 2**20:.0f} MiB free; the run stopped and can continue "
                         "with --resume once space is freed")  # fmt: skip
        self.free = free


def storage_full(storage: Path) -> StorageFull | None:
    """The stop for `storage`, if it has less than RESERVE_BYTES free; None while it has room."""
    free = free_bytes(storage)
    return StorageFull(storage, free) if free < RESERVE_BYTES else None


def _request_stop(reason: Exception) -> None:
    tune_handler = signal.getsignal(signal.SIGUSR1)
    if _requests or not callable(tune_handler):  # a second request, or Tune is not running its loop yet
        raise Terminated if getattr(reason, "signum", None) == signal.SIGTERM else KeyboardInterrupt
    _requests.append(reason)
    os.kill(os.getpid(), signal.SIGUSR1)


class _WhileRoomy(logging.Filter):
    """Lets Tune's log records through only while the storage has room: once it is full, each trial that cannot
    write its checkpoint fails with a traceback nobody can act on; the run says it in one line instead."""

    def __init__(self, storage: Path):
        super().__init__()
        self.storage = storage

    def filter(self, record: logging.LogRecord) -> bool:
        return storage_full(self.storage) is None


@contextmanager
def stoppable(storage: Path) -> Iterator[None]:
    """Run a Tune experiment writing to `storage` in the block; raise the stop request made during it, if any,
    after it ended. An error the experiment raises while `storage` is full (Tune reading back the error file a
    trial could not write) is that StorageFull."""
    quiet = _WhileRoomy(storage)
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    controller.addFilter(quiet)
    try:
        with _stop_requests():
            try:
                yield
            except Exception as err:
                full = storage_full(storage)
                if full is None:
                    raise
                raise full from err
    finally:
        controller.removeFilter(quiet)


@contextmanager
def _stop_requests() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield
        return

    def on_stop(signum, frame) -> None:
        if signum == signal.SIGINT:
            said = "Stopping: the running trials are saved for --resume (Ctrl-C again stops at once) …"
        else:
            hint = f"; continue with: {_resume_hint[0]}" if _resume_hint else ""
            said = f"Stopping on SIGTERM: the running trials are saved for --resume{hint}"
        print(f"\n{said}", file=sys.stderr, flush=True)
        _request_stop(Interrupted(signum))

    _requests.clear()
    previous_handler = signal.signal(signal.SIGINT, on_stop)
    previous_term = signal.signal(signal.SIGTERM, on_stop)
    # Cleared until Tune installs its handler for this experiment (a finished one's would stop nothing).
    previous_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune's handler would replace ours, and not tell us it fired
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGUSR1, previous_usr1)
        if previous_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env
    if _requests:
        raise _requests[0]


class StorageWatch(Callback):
    """Stops the experiment once the storage has less than RESERVE_BYTES free: past that point trials fail
    to write their checkpoints (and are lost to the search) and Tune cannot save the state a resume needs."""

    def __init__(self, storage: Path):
        self.storage = storage
        self.checked = 0.0

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.checked < 1.0:  # Tune steps many times a second; the disk fills slower
            return
        self.checked = time.monotonic()
        full = storage_full(self.storage)
        if full is not None and not _requests:
            print(f"\nStopping: {self.storage} has {full.free / 2**20:.0f} MiB free …", file=sys.stderr, flush=True)
            _request_stop(full)
