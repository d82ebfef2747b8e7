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
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.leaderboard import build_leaderboard  # noqa: E402
from results.trial_records import latest_checkpoint  # noqa: E402
from trainables.frontend import FrontendConfig, LogMel  # noqa: E402
from trainables.student import Student, StudentArch  # noqa: E402
from trainables.tensor_files import UnreadableFile, load_tensors  # noqa: E402


def load_student(path: Path) -> tuple[LogMel, Student, dict]:
    """Rebuild (front end, student, metrics) from an exported file; both modules in eval mode.

    A damaged or hostile file raises UnreadableFile naming it (weights-only: nothing in it runs)."""
    payload = load_tensors(path)
    frontend = LogMel(FrontendConfig(**payload["config"]["frontend"])).eval()
    model = Student(StudentArch.from_dict(payload["config"]["arch"]))
    model.load_state_dict(payload["state_dict"])
    return frontend, model.eval(), payload["metrics"]


def export_best(run_dir: Path, metric: str, mode: str) -> list[Path]:
    """Copy the top complete trial's last checkpoint of each subset to best/subset_<N>/.

    A student search exports student.pt; a teacher search its logits (logits.pt keyed by filename,
    logits_meta_order.pt in the seed systems' format), ready for `teacher.logits` of a KD search.
    """
    board = build_leaderboard(run_dir, metric, mode)
    exported = []
    if board.empty:
        return exported
    for subset, rows in board[board["status"] == "complete"].groupby("subset"):
        best = rows.iloc[0]
        checkpoint = latest_checkpoint(Path(best["trial_dir"]))
        if checkpoint is None:
            continue
        target = Path(run_dir) / "best" / (f"subset_{subset}" if subset else "")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for source in sorted(checkpoint.iterdir()):
            if source.name == "train_state.pt":  # resuming state, not a result
                continue
            if source.name == "student.pt":
                payload = torch.load(source, map_location="cpu", weights_only=True)
                payload["trial_id"] = str(best["trial_id"])
                torch.save(payload, target / source.name)
            else:
                shutil.copy2(source, target / source.name)
            exported.append(target / source.name)
    return exported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/export.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory, <storage>/<name>")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    record = run_dir / "space.yaml"
    if not record.is_file() or not (run_dir / "search").is_dir():
        print(f"error: {run_dir} is not a run directory (no space.yaml or search/)", file=sys.stderr)
        return 2
    settings = yaml.safe_load(record.read_text())
    paths = export_best(run_dir, settings["metric"], settings["mode"])
    if not paths:
        print(f"error: {run_dir} has no complete trial to export", file=sys.stderr)
        return 2
    for path in paths:
        print(f"Exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
