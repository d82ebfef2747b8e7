"""The checks of a run before Ray starts, and its dataset: every refusal here is one line and exit status 2.

- The storage: a path that is a file, lies on a read-only file system, or has no room left would fail
  later, after Ray started, with an error from deep inside (NotADirectoryError, OSError, an EOFError
  from Ray's error pickle); here it is refused at once, with nothing created.
- The run directory: a finished or started run is never overwritten; a resume must keep its settings.
- The dataset: --data as given (a TAU22 root is prepared and cached), or the system's embedded one,
  generated once into the cache; then the system's own checks of its teacher.
- The cluster of --address: one that is not there would make Ray raise, or retry forever; here it is refused
  after a few seconds at most.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from results.run_record import (
    RECORD,
    LinkedRunError,
    RecordError,
    read_record,
    refuse_links,
    settings_of,
)
from search.console import banner, duration, working
from search.request import RunRequest
from spaces.errors import SpaceError, shown
from spaces.space import differences, plain, to_mapping
from trainables.asc.tau22 import is_tau22_root, prepare_tau22
from trainables.atomic import build_directory, set_aside
from trainables.prepared import DatasetError

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


# How long a cluster's head may take to accept a connection before --address is refused.
ADDRESS_WAIT_S = 5.0


def check_address(address: str | None) -> None:
    """Refuse (SpaceError) an --address with no Ray cluster behind it: `auto` with none found, a HOST:PORT (or
    ray://HOST:PORT) nothing accepts within ADDRESS_WAIT_S. Ray itself would raise, or retry without end."""
    if address is None:
        return
    target = _auto_address() if address == "auto" else address
    host, port = _host_port(target, address)
    try:
        with socket.create_connection((host, port), timeout=ADDRESS_WAIT_S):
            pass
    except TimeoutError:
        raise SpaceError(f"--address {shown(address)}: {host}:{port} did not answer within {ADDRESS_WAIT_S:g} s; is the "
                         "Ray head running there and reachable from here?") from None  # fmt: skip
    except OSError as err:
        raise SpaceError(f"--address {shown(address)}: no Ray cluster at {host}:{port} ({err.strerror or err}); start "
                         "one with ray start --head, or leave out --address to run Ray here") from None  # fmt: skip


def _auto_address() -> str:
    # Ray's own lookup (RAY_ADDRESS, the address `ray start` recorded, a running head on this machine), so that
    # `auto` means here what it means to ray.init. Imported only for --address auto: the rest of the checks
    # before a run stay free of Ray.
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except (ConnectionError, ValueError) as err:
        found = str(err).split(". ")[0]
        raise SpaceError(f"--address auto: no running Ray cluster found ({found}); start one with ray start --head, "
                         "give its HOST:PORT, or leave out --address to run Ray here") from None  # fmt: skip


def _host_port(target: str, given: str) -> tuple[str, int]:
    host, colon, port = target.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:6379
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpaceError(f"--address {shown(given)}: expected auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    return host, int(port)


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def check_run_links(run_dir: Path) -> None:
    """Refuse a run directory that is a symbolic link or holds one where the run writes (StorageError): the run
    would write through it, outside its directory. Before anything, the run's lock included, is written there."""
    try:
        refuse_links(run_dir)
    except LinkedRunError as err:
        raise StorageError(str(err)) from None


def check_run_dir(request: RunRequest) -> None:
    """Refuse to overwrite a finished or started run, a run directory with links out of it, and a resume whose
    settings changed (before Ray starts)."""
    check_run_links(request.run_dir)
    if request.resume:
        check_resumable(request)
    elif (request.run_dir / RECORD).exists():
        raise SpaceError(f"{request.run_dir} already holds a run; pass --resume to continue it or choose another --name")


def check_resumable(request: RunRequest) -> None:
    """Refuse a resume whose settings differ from the record, naming each difference."""
    try:
        recorded = settings_of(read_record(request.run_dir))
    except RecordError as err:
        raise SpaceError(f"--resume: {request.run_dir} holds no run to resume ({err})") from None
    current = plain(to_mapping(request.space))
    if isinstance(recorded.get("samples"), int) and current.get("samples", 0) > recorded["samples"]:
        recorded["samples"] = current["samples"]  # --resume --samples N grows the search
    elif isinstance(recorded.get("samples"), int) and current.get("samples", 0) < recorded["samples"]:
        raise SpaceError(f"--resume: {request.run_dir} searches {recorded['samples']} trials per subset; a resume can "
                         f"add trials (--samples above {recorded['samples']}), not take them away")  # fmt: skip
    changed = differences(recorded, current)
    if changed:
        shown = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise SpaceError(f"--resume: the settings differ from those {request.run_dir} was started with ({shown}); "
                         "resume with the same settings (or just --resume --name NAME, which reads them), or use a "
                         "new --name")  # fmt: skip


def given_dataset(request: RunRequest, path: Path, splits: str | None) -> Path:
    """The prepared dataset for --data: as given, or a TAU22 root read and cached (stops on a bad file)."""
    kind = request.space.spec.dataset
    if not path.is_dir():
        raise DatasetError(f"--data {path}: no such directory")
    if kind.is_prepared(path):
        return path.resolve()
    if kind.reads_tau22 and is_tau22_root(path):
        splits_dir = None if splits is None else Path(splits)
        if splits_dir is not None and not splits_dir.is_dir():
            raise DatasetError(f"--splits {splits}: no such directory")
        rate = request.space.spec.sample_rate(request.space.settings)
        return prepare_tau22(path, request.cache_dir / "datasets", splits_dir, sample_rate=rate)
    raise DatasetError(f"--data {path}: holds {kind.prepare_hint}")


def prepare_dataset(request: RunRequest) -> Path:
    """The prepared dataset the trials read: --data as given, or the embedded one, generated once and cached."""
    if request.data is not None:
        return request.data
    kind, settings = request.space.spec.dataset, request.space.data
    directory = request.cache_dir / "datasets" / f"{kind.cache_prefix}-{settings.fingerprint()}"
    return cached_dataset(directory, settings, kind.generate, kind.load)


def cached_dataset(directory: Path, config, make: Callable, load: Callable,
                   label: str = "the embedded synthetic dataset") -> Path:  # fmt: skip
    """`directory`, generated from `config` unless a whole copy is there; a damaged copy is set aside and made again.

    Generated under a temporary name and renamed when whole, so a run starting meanwhile never reads half of it."""
    if directory.exists():
        try:
            found = load(directory).fingerprint
            if found == config.fingerprint():
                return directory
            reason = f"made from other settings (fingerprint {found[:20]})"
        except (ValueError, KeyError, OSError, EOFError) as err:  # each loader's DatasetError is a ValueError
            reason = str(err)[:200]
        set_aside(directory, reason)
    with working(f"Generating {label} into {directory}"):
        build_directory(directory, lambda work: make(config, work))
    return directory


def prepare(request: RunRequest) -> RunRequest:
    """The checks before Ray starts, and the dataset: the request with its prepared dataset (raises on bad input)."""
    check_run_dir(request)
    banner("Dataset")
    started = time.monotonic()
    request = dataclasses.replace(request, data=prepare_dataset(request))
    took = time.monotonic() - started
    print(f"Dataset: {request.data}" + (f" (ready in {duration(took)})" if took > 1 else ""), flush=True)
    if request.space.spec.checks is not None:
        request.space.spec.checks(request)
    return request
