"""Run a knowledge-distillation hyperparameter search.

    python search/run.py --space kd.yaml [--data DIR] [--storage runs] [--name NAME] [--samples N]
                         [--subsets 5,25] [--set KEY=VALUE ...] [--gpus-per-trial F] [--cpus-per-trial F]
                         [--address auto|HOST:PORT] [--resume] [--verbose]

Every problem with the input ends in one short message and exit status 2, before Ray starts.
Exit status 1: the run ended but no trial completed; 130: stopped by Ctrl-C, 143: by SIGTERM (continue either
with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import shlex
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.run_record import DATASET, RECORD, RecordError, read_record, recorded_dataset, settings_of
from search.preflight import StorageError, check_address, check_run_links, check_storage, given_dataset, prepare
from search.request import RunRequest, check_run_name
from search.run_lock import RunLocked, run_lock
from search.signals import TERMINATED_STATUS, Terminated, terminate_as_interrupt
from search.systems import build_space, system_of
from spaces.errors import SpaceError, shown
from spaces.space_file import apply_override, read_space_file
from trainables.asc.logits_file import LogitsMismatch
from trainables.prepared import DatasetError


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


def make_request(args: argparse.Namespace) -> RunRequest:
    """Validate everything the user gave into a RunRequest; raises SpaceError or DatasetError."""
    storage = Path(args.storage).resolve()
    if args.space is None:
        if not (args.resume and args.name):
            raise SpaceError("--space is required (only --resume --name NAME reads the settings the run recorded)")
        try:
            raw = read_record(storage / args.name)
        except RecordError:
            raise SpaceError(f"--resume: {storage / args.name} holds no run to resume") from None
    else:
        raw = read_space_file(args.space)
    recorded = raw.get(DATASET)  # a run's record names its dataset; it is itself a space file
    raw = settings_of(raw)
    for assignment in args.overrides:
        apply_override(raw, assignment, system_of(raw))
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
    check_address(args.address)
    name = check_run_name(args.name or Path(args.space).stem)
    check_run_links(storage / name)  # before the run's lock is written there
    request = RunRequest(space=space, storage=storage, name=name, data=None, address=args.address, resume=args.resume,
                         verbose=args.verbose)  # fmt: skip
    data = None
    if args.data is not None:
        data = given_dataset(request, Path(args.data), args.splits)
    elif recorded:
        try:
            data = recorded_dataset(recorded, storage)
        except RecordError as err:
            raise SpaceError(f"--resume: {err}") from None
    if data is not None and space.spec.dataset.check_subsets is not None:
        space.spec.dataset.check_subsets(data, space.subsets)
    return dataclasses.replace(request, data=data)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = None
    try:
        with terminate_as_interrupt():
            request = make_request(parse_args(argv))
            run_dir = request.run_dir
            with run_lock(request.run_dir):
                return _run(prepare(request), argv)
    except (SpaceError, DatasetError, LogitsMismatch, RunLocked, StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in _STORAGE_ERRORS:
            raise
        print(f"error: {err.filename or 'storage'}: {err.strerror}; free space (or fix the storage) and "
              f"{_continue_with(argv, run_dir)}", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM outside the Tune experiments (Ray starting, caches written)
        print(f"\nInterrupted; {_continue_with(argv, run_dir)}", file=sys.stderr)
        return TERMINATED_STATUS if isinstance(stop, Terminated) else 130


_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _run(request: RunRequest, argv: list[str]) -> int:
    # The one place Ray is imported: once every check passed, so that bad input is refused at once.
    from search.pipeline import RunFailed, run
    from search.stopping import Interrupted, StorageFull, set_resume_hint

    set_resume_hint(_command(argv, resume=True))
    try:
        run(request)
    except SpaceError as err:  # found once Ray knows the cluster (an impossible resource request)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        if stop.signum == signal.SIGTERM:  # the command is on the line SIGTERM printed at once
            print(f"Interrupted; the trials are saved in {request.run_dir}", file=sys.stderr)
            return TERMINATED_STATUS
        print(f"Interrupted; the trials are saved in {request.run_dir}; {_continue_with(argv, request.run_dir)}",
              file=sys.stderr)  # fmt: skip
        return 130
    except StorageFull as err:
        print(f"error: {err}: {_command(argv, resume=True)}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _continue_with(argv: list[str], run_dir: Path | None) -> str:
    """How to go on: the command with --resume once the run recorded itself (before that, a resume is refused:
    the same command starts it)."""
    if run_dir is not None and (run_dir / RECORD).is_file():
        return f"continue with: {_command(argv, resume=True)}"
    return f"the run had not started; start it again with: {_command(argv, resume=False)}"


def _command(argv: list[str], resume: bool) -> str:
    """The command that runs this again from where the user stands: `kd-search …` when run as that, else this
    Python with this script's absolute path (a relative one fails from another directory)."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    head = [program] if program == "kd-search" else [sys.executable, str(Path(__file__).resolve())]
    args = [a for a in argv if a != "--resume"] + (["--resume"] if resume else [])
    return shlex.join([*head, *args])


if __name__ == "__main__":
    sys.exit(main())
