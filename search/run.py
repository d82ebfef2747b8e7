"""Run a knowledge-distillation hyperparameter search.

    python search/run.py --space kd.yaml [--data DIR] [--storage runs] [--name NAME] [--samples N]
                         [--subsets 5,25] [--set KEY=VALUE ...] [--gpus-per-trial F] [--cpus-per-trial F]
                         [--address auto|HOST:PORT] [--resume] [--verbose]

Every problem with the input ends in one short message and exit status 2, before Ray starts.
Exit status 1: the run ended but no trial completed; 130: stopped by Ctrl-C (continue with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.preflight import check_storage  # noqa: E402
from search.record import as_space, read_record, recorded_dataset  # noqa: E402
from search.space import SpaceError, apply_override, build_space, read_space_file, shown  # noqa: E402
from trainables.prepared import DatasetError  # noqa: E402
from trainables.asc.data import check_splits, is_prepared, load_prepared  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors also exit 2, but with the usage block
        raise SpaceError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="search/run.py", description="Knowledge-distillation hyperparameter search on Ray Tune.")
    parser.add_argument("--space", help="space file; a bare name is looked up in spaces/ (a run's space.yaml too); "
                                        "not needed with --resume --name NAME")  # fmt: skip
    parser.add_argument("--data", help="TAU22 root (meta.csv + audio/) or a prepared dataset (default: embedded synthetic)")
    parser.add_argument("--splits", help="folder of the DCASE24 split files split5.csv … test.csv (default: in --data)")
    parser.add_argument("--storage", default="runs", help="where runs and caches go (default: ./runs)")
    parser.add_argument("--name", help="run name (default: the space file's name)")
    parser.add_argument("--samples", type=int, help="trials per subset")
    parser.add_argument("--subsets", help="comma-separated training subsets in percent, e.g. 5,25")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fixed setting of the space; dotted keys for sections (teacher.epochs=1)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per student trial; 0.25 packs four on one GPU")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per student trial")
    parser.add_argument("--address", help="join a running Ray cluster (auto or HOST:PORT)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run of the same name")
    parser.add_argument("--verbose", action="store_true", help="also show Ray Tune's own progress output")
    return parser.parse_args(argv)


def make_request(args: argparse.Namespace):
    """Validate everything the user gave into a RunRequest; raises SpaceError or DatasetError."""
    from search.service import RunRequest

    storage = Path(args.storage).resolve()
    record = None
    if args.space is None:
        if not (args.resume and args.name):
            raise SpaceError("--space is required (only --resume --name NAME reads the settings the run recorded)")
        record = read_record(storage / args.name)
    raw = as_space(record if record is not None else read_space_file(args.space))
    for assignment in args.overrides:
        apply_override(raw, assignment)
    if args.samples is not None:
        if args.samples < 1:
            raise SpaceError(f"--samples must be at least 1, got {args.samples}")
        raw["samples"] = args.samples
    if args.subsets is not None:
        try:
            raw.setdefault("search", {})["subset"] = [int(s) for s in args.subsets.split(",") if s.strip()]
        except (ValueError, AttributeError):
            raise SpaceError(f"--subsets: expected comma-separated integers such as 5,25, got {shown(args.subsets)}") \
                from None
    resources = raw.setdefault("resources", {})
    if not isinstance(resources, dict):
        raise SpaceError("resources: must be a mapping")
    if args.gpus_per_trial is not None:
        resources["gpus_per_trial"] = args.gpus_per_trial
    if args.cpus_per_trial is not None:
        resources["cpus_per_trial"] = args.cpus_per_trial
    space = build_space(raw)
    check_storage(storage)  # before anything (a TAU22 cache, the run directory) is written there
    # A teacher search reads real data at its teacher's rate (NTU's: 44.1 kHz); everything else at the students' 32 kHz.
    rate = space.settings.sample_rate if space.system == "asc_teacher" else 32000
    data = None if args.data is None else _dataset(Path(args.data), args.splits, storage, space.system, rate)
    if data is None and record is not None:
        data = recorded_dataset(record, storage)
    if data is not None and space.schema.by_subset:
        prepared = load_prepared(data)
        check_splits(prepared)
        available = prepared.splits
        missing = [s for s in space.subsets if f"split{s}" not in available]
        if missing:
            raise DatasetError(f"--data {args.data}: no split file for subsets {missing}; choose others with --subsets")
    name = args.name or Path(args.space).stem
    if not name or "/" in name or name in (".", "..", "cache"):
        raise SpaceError(f"--name {shown(name)}: use a plain directory name")
    return RunRequest(space=space, storage=storage, name=name, data=data, address=args.address, resume=args.resume,
                      verbose=args.verbose)  # fmt: skip


def _dataset(path: Path, splits: str | None, storage: Path, system: str, sample_rate: int = 32000) -> Path:
    """A prepared dataset directory for --data: as given, or TAU22 read and cached (stops on a bad file)."""
    from trainables.asc.tau22 import is_tau22_root, prepare_tau22

    if not path.is_dir():
        raise DatasetError(f"--data {path}: no such directory")
    if system == "oskdft2":
        from trainables.speaker.data import is_prepared as is_speakers

        if not is_speakers(path):
            raise DatasetError(f"--data {path}: holds no prepared speaker dataset (make one with "
                               "python -m trainables.speaker.data, see the README)")  # fmt: skip
        return path.resolve()
    if is_prepared(path):
        return path.resolve()
    if is_tau22_root(path):
        splits_dir = None if splits is None else Path(splits)
        if splits_dir is not None and not splits_dir.is_dir():
            raise DatasetError(f"--splits {splits}: no such directory")
        return prepare_tau22(path, storage / "cache" / "datasets", splits_dir, sample_rate=sample_rate)
    raise DatasetError(f"--data {path}: holds no dataset (neither a TAU22 root with meta.csv nor a prepared dataset)")


def prepare(request):
    """The checks before Ray starts, and the dataset: the request with its prepared dataset (raises on bad input)."""
    from search.console import banner, duration
    from search.service import check_run_dir, prepare_dataset

    check_run_dir(request)
    banner("Dataset")
    started = time.monotonic()
    request = dataclasses.replace(request, data=prepare_dataset(request))
    took = time.monotonic() - started
    print(f"Dataset: {request.data}" + (f" (ready in {duration(took)})" if took > 1 else ""), flush=True)
    if request.space.system in ("asc_kd", "asc_teacher"):
        from search.teachers import check_external_logits, check_teacher_is_trained

        check_teacher_is_trained(request.space, request.data)
        if request.space.system == "asc_kd" and request.space.teacher.logits:
            check_external_logits(request.space.teacher, load_prepared(request.data), request.space.subsets)
    return request


def main(argv: list[str] | None = None) -> int:
    from search.preflight import StorageError
    from search.run_lock import RunLocked, run_lock
    from search.service import RunFailed
    from trainables.asc.logits_file import LogitsMismatch

    argv = sys.argv[1:] if argv is None else argv
    try:
        request = make_request(parse_args(argv))
        with run_lock(request.run_dir):
            return _run(prepare(request), argv)
    except (SpaceError, DatasetError, LogitsMismatch, RunLocked, StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in _STORAGE_ERRORS:
            raise
        print(f"error: {err.filename or 'storage'}: {err.strerror}; free space (or fix the storage) and continue "
              "with --resume", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:  # a Ctrl-C outside the Tune experiments (Ray starting, caches being written)
        print(f"\nInterrupted. Continue with: {_resume_command(argv)}", file=sys.stderr)
        return 130


_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _run(request, argv: list[str]) -> int:
    from search.service import run
    from search.stopping import Interrupted, StorageFull

    try:
        run(request)
    except SpaceError as err:  # found once Ray knows the cluster (an impossible resource request)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted:
        print(f"Interrupted; the trials are saved in {request.run_dir}. Continue with: {_resume_command(argv)}",
              file=sys.stderr)  # fmt: skip
        return 130
    except StorageFull as err:
        print(f"error: {err}: {_resume_command(argv)}", file=sys.stderr)
        return 2
    return 0


def _resume_command(argv: list[str]) -> str:
    return shlex.join([sys.executable, "search/run.py", *argv, *([] if "--resume" in argv else ["--resume"])])


if __name__ == "__main__":
    sys.exit(main())
