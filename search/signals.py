"""SIGTERM (what a cluster scheduler sends before it kills a job) handled as a Ctrl-C, before and after Ray starts.

Python's default ends the driver at once, and Ray's (installed when it starts) exits with status 15 and a stack
dump of its workers: neither saves the running trials nor says how to continue. Inside a Tune experiment
search/stopping.py asks Tune to stop and save; everywhere else SIGTERM raises Terminated, a KeyboardInterrupt, so
whatever handles a Ctrl-C handles it. Ray-free, so the command line can use it before anything else is imported.
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
