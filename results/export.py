"""Export the best student of each subset, and rebuild a student from an exported file.

    python results/export.py RUN_DIR        # re-export from any finished run directory

An exported file `<run>/best/subset_<N>/student.pt` is a dict, loadable with
torch.load(path, weights_only=True):
    state_dict   the student's weights
    config       {"arch": StudentArch fields, "frontend": FrontendConfig fields, "train": StudentConfig fields}
    metrics      the last epoch's validation figures (acc, acc_<device>, …) and test figures (test_*)
    classes      the scene classes, in the order of the model's outputs
    test_confusion  int64 [classes, classes]: test-split clip counts, rows true class, columns predicted
    trial_id     the trial it comes from
Beside it, student.ts and student.onnx run without this project (results/formats.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.leaderboard import build_leaderboard
from results.run_record import LinkedRunError, RecordError, read_record, refuse_links
from results.student_file import load_student  # noqa: F401  (documented here: from results.export import load_student)
from results.trial_records import latest_checkpoint
from search.system import System
from search.systems import system_of
from spaces.errors import SpaceError
from trainables.atomic import replace_directory


def export_best(run_dir: Path, metric: str, mode: str) -> list[Path]:
    """Copy the top complete trial's last checkpoint of each subset to best/subset_<N>/.

    A student search exports student.pt, and beside a scene classifier student.ts (TorchScript) and
    student.onnx, each the front end and the student as one waveform → logits model (results/formats.py);
    a teacher search its logits (logits.pt keyed by filename, logits_meta_order.pt in the seed systems'
    format), ready for `teacher.logits` of a KD search.
    """
    board = build_leaderboard(run_dir, metric, mode)
    formats = _system(read_record(run_dir)).formats
    exported = []
    if board.empty:
        return exported
    for subset, rows in board[board["status"] == "complete"].groupby("subset"):
        best = rows.iloc[0]
        checkpoint = latest_checkpoint(Path(best["trial_dir"]))
        if checkpoint is None:
            continue
        target = Path(run_dir) / "best" / (f"subset_{subset}" if subset else "")
        names: list[str] = []
        # Made whole beside the export before it and put in its place: a run stopped while exporting leaves the
        # earlier export, never a truncated one.
        trial_id = str(best["trial_id"])
        replace_directory(target, lambda work, checkpoint=checkpoint, names=names, trial_id=trial_id:
                          names.extend(_export_checkpoint(checkpoint, trial_id, work, formats)))  # fmt: skip
        exported += [target / name for name in names]
    return exported


def _system(record: dict) -> System:
    """The registry's entry of the system the run searched: what its students are exported as."""
    try:
        return system_of(record)
    except SpaceError as err:
        raise RecordError(f"the run's record: {err}") from None


def _export_checkpoint(checkpoint: Path, trial_id: str, target: Path,
                       formats: Callable[[Path, Path], list[Path]] | None) -> list[str]:  # fmt: skip
    """Write a checkpoint's results to `target` (the student with its trial id, and its TorchScript and ONNX
    files); the names written."""
    names = []
    for source in sorted(checkpoint.iterdir()):
        if source.name == "train_state.pt":  # resuming state, not a result
            continue
        if source.name == "student.pt":
            payload = torch.load(source, map_location="cpu", weights_only=True)
            payload["trial_id"] = trial_id
            torch.save(payload, target / source.name)
            names.append(source.name)
            if formats is not None:  # the system's other formats of its student (a scene classifier's graph)
                names += [path.name for path in formats(target / source.name, target)]
        else:
            shutil.copy2(source, target / source.name)
            names.append(source.name)
    return names


def export_lines(paths: list[Path], run_dir: Path) -> list[str]:
    """One line per exported folder: "Exported best/subset_25/: student.pt, student.ts, student.onnx"."""
    folders: dict[Path, list[str]] = {}
    for path in paths:
        folders.setdefault(Path(path).parent, []).append(Path(path).name)
    lines = []
    for folder, names in folders.items():
        shown = folder.relative_to(run_dir) if folder.is_relative_to(run_dir) else folder
        lines.append(f"Exported {run_dir / shown}/: {', '.join(names)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/export.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory, <storage>/<name>")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        refuse_links(run_dir)
        record = read_record(run_dir)
    except (RecordError, LinkedRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not (run_dir / "search").is_dir():
        print(f"error: {run_dir} is not a run directory (no search/)", file=sys.stderr)
        return 2
    paths = export_best(run_dir, record["metric"], record["mode"])
    if not paths:
        print(f"error: {run_dir} has no complete trial to export", file=sys.stderr)
        return 2
    for line in export_lines(paths, run_dir):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
