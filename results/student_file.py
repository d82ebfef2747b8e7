"""Read an exported student file (`best/subset_<N>/student.pt`) back into a front end and a student.

The file is a dict, loaded with torch.load(path, weights_only=True); results/export.py describes it.
"""

from __future__ import annotations

from pathlib import Path

from trainables.asc.frontend import FrontendConfig, LogMel
from trainables.asc.student import Student, StudentArch
from trainables.asc.synthetic import CLASSES
from trainables.tensor_files import load_tensors


def load_student(path: Path) -> tuple[LogMel, Student, dict]:
    """Rebuild (front end, student, metrics) from an exported file; both modules in eval mode.

    A damaged or hostile file raises UnreadableFile naming it (weights-only: nothing in it runs)."""
    payload = load_tensors(path)
    frontend = LogMel(FrontendConfig(**payload["config"]["frontend"])).eval()
    model = Student(StudentArch.from_dict(payload["config"]["arch"]))
    model.load_state_dict(payload["state_dict"])
    return frontend, model.eval(), payload["metrics"]


def student_classes(path: Path) -> list[str]:
    """The class names of the student's outputs, in order: as its file records them; files written before
    they were recorded are TAU22 students (the dataset's class order)."""
    payload = load_tensors(path)
    if payload.get("classes"):
        return [str(c) for c in payload["classes"]]
    n_classes = StudentArch.from_dict(payload["config"]["arch"]).n_classes
    return list(CLASSES) if n_classes == len(CLASSES) else [f"class{i}" for i in range(n_classes)]


def exported_students(run_dir: Path) -> dict[int, Path]:
    """subset → best/subset_<N>/student.pt, for the subsets that have one."""
    found = {}
    for path in Path(run_dir).glob("best/subset_*/student.pt"):
        suffix = path.parent.name.removeprefix("subset_")
        if suffix.isdigit():
            found[int(suffix)] = path
    return dict(sorted(found.items()))
