"""What a run prints besides trial progress (search/progress.py): stage banners, durations, and nothing of Ray's.

Ray Tune's own reporter prints a box of every trial's config as it starts, a "current best trial" across
subsets (which must never be compared) and a TensorBoard hint into /tmp/ray. `quiet_ray` switches all of
that off, and the callbacks here print the few lines a researcher reads instead; `--verbose` adds Ray's
output as it was.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import optuna

# Tune's legacy engine is the one that prints nothing at verbose=0 (the newer one still announces every
# experiment with a TensorBoard path inside /tmp/ray); read by Tune at every fit.
_QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0"}
_QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air")


def quiet_ray(verbose: bool) -> None:
    """Switch Ray's and Optuna's own output off for this process, unless `verbose`."""
    if verbose:
        return
    os.environ.update(_QUIET_ENV)
    for name in _QUIET_LOGGERS:
        # Errors stay visible; Ray's INFO lines (a local instance started, a run time) and warnings about its own
        # defaults do not help a researcher. A failed trial is reported by the progress callback instead.
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)  # "Trials did not complete": said per trial
    # A storage that filled up: Tune's traceback of its failed snapshot, and one of each trial that could not write
    # its checkpoint (an error nobody waits for any more); the run says it in one line and resumes from the last
    # whole snapshot (search/snapshots.py).
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created", once per subset


def banner(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def say(text: str) -> None:
    print(text, flush=True)


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@contextmanager
def working(what: str) -> Iterator[None]:
    """A step that shows no progress of its own: a line with its elapsed time, ticking on a terminal."""
    start = time.monotonic()
    done = threading.Event()
    tty = sys.stdout.isatty()

    def tick() -> None:
        while not done.wait(1.0):
            print(f"\r{what} … {duration(time.monotonic() - start)}", end="", flush=True)

    thread = threading.Thread(target=tick, daemon=True) if tty else None
    print(f"{what} …", end="" if tty else "\n", flush=True)
    if thread:
        thread.start()
    try:
        yield
    finally:
        done.set()
        if thread:
            thread.join()
        print(f"{chr(13) if tty else ''}{what}: done in {duration(time.monotonic() - start)}", flush=True)
