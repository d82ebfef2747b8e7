"""Files a reader never sees half of (caches, exports, reports, tables), and damaged caches set aside instead of
trusted.

Every such file or directory is made under a unique temporary name next to its place and renamed
into place when whole: a second process making the same cache at the same moment writes its own
temporary copy (never the other's), and whichever rename comes last leaves an equal, whole cache. A
process killed in the middle leaves only a hidden temporary name, never a truncated file under the
final one. What is made gets the permissions a plain write would give (tempfile's are private).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_file(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) to a unique temporary file next to `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_directory(directory: Path, build: Callable[[Path], None]) -> None:
    """build(work) in a unique temporary directory next to `directory`, then rename it to `directory`.

    If another process put a whole `directory` in place meanwhile, that one is kept and this one dropped."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".partial"))
    try:
        build(work)
        os.chmod(work, 0o777 & ~_UMASK)
        try:
            os.rename(work, directory)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def replace_directory(directory: Path, build: Callable[[Path], None]) -> None:
    """build(work) in a unique temporary directory next to `directory`, then put it in the place of `directory`
    (an earlier one is removed once the new one is there). Killed in between, the earlier one is kept whole under
    a hidden name: whatever is found under `directory` is always a whole one."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".partial"))
    try:
        build(work)
        os.chmod(work, 0o777 & ~_UMASK)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    earlier = None
    try:
        if directory.exists():
            earlier = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".old"))
            os.replace(directory, earlier / directory.name)
        os.rename(work, directory)
    except BaseException:
        if earlier is not None and not directory.exists():
            os.replace(earlier / directory.name, directory)
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if earlier is not None and directory.exists():  # otherwise the earlier one stays, hidden, for a look
            shutil.rmtree(earlier, ignore_errors=True)


def set_aside(path: Path, reason: str) -> Path:
    """Move a damaged cache out of the way (kept, for a look) and say so on stderr; returns where it went."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process set it aside first
        return aside
    print(f"warning: damaged cache {path}: {reason}; moved to {aside.name} and made again", file=sys.stderr, flush=True)
    return aside
