"""SIGTERM (what a cluster scheduler sends before it kills a job) handled as a Ctrl-C, before and after Ray starts.

Python's default ends the driver at once, and Ray's (installed when it starts) exits with status 15 and a stack
dump of its workers: neither saves the running trials nor says how to continue. Inside a Tune experiment
search/stopping.py asks Tune to stop and save; everywhere else SIGTERM raises Terminated, a KeyboardInterrupt, so
whatever handles a Ctrl-C handles it. Ray-free, so the command line can use it before anything else is imported.

A scheduler that stops a job sends SIGTERM to its whole process group (`kill -TERM -<pgid>`), and the Ray that
a run starts is in that group: its raylet and GCS would shut down at once, and Ray would end the driver (exit 1)
before it could save a trial or say a word. `sigterm_shielded` starts them with SIGTERM blocked, as Ray itself
starts them with SIGINT blocked, so the group's SIGTERM reaches the driver alone, which stops them after saving.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The exit status of a run stopped by SIGTERM (128 + 15, what a shell reports for a process SIGTERM ended);
# Ctrl-C stays 130.
TERMINATED_STATUS = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a Tune experiment: handled wherever a Ctrl-C is."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """In the block, SIGTERM raises Terminated, in place of Ray's or Python's default (main thread only: signals
    reach no other)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_shielded() -> Iterator[None]:
    """Processes started in the block (and what they start) never receive SIGTERM: they inherit this thread's signal
    mask, with SIGTERM blocked. SIGKILL still ends them, and so does the driver's death (Ray's fate-sharing).

    A SIGTERM sent to this process meanwhile waits until the block ends; it then goes to the handler that was in
    place before it, not to one the block installed (Ray's start installs one that exits with status 15)."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGTERM, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
