"""Before anything is written: can the storage directory take a run?

A storage path that is a file, lies on a read-only file system, or has no room left would fail
later, after Ray started, with an error from deep inside (NotADirectoryError, OSError, an EOFError
from Ray's error pickle); here it is refused at once, with nothing created.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# A run stops (to continue with --resume) when its storage has less than this free: enough for Tune's
# last snapshot and the trials' last checkpoints. A run starts only with twice as much.
RESERVE_BYTES = 64 * 2**20


class StorageError(RuntimeError):
    """The storage cannot take a run; the message says why."""


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing(path)).free


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_storage(storage: Path) -> None:
    """Refuse a storage that is a file, not writable, or nearly full (StorageError); creates nothing."""
    found = _existing(storage)
    if not found.is_dir():
        raise StorageError(f"--storage {storage}: {found} is a file, not a directory")
    if not os.access(found, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only(found) else "not writable by this user"
        raise StorageError(f"--storage {storage}: {found} is {why}")
    free = free_bytes(found)
    if free < 2 * RESERVE_BYTES:
        raise StorageError(f"--storage {storage}: only {free / 2**20:.0f} MiB free on its file system; a run needs "
                           f"at least {2 * RESERVE_BYTES / 2**20:.0f} MiB")  # fmt: skip


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
