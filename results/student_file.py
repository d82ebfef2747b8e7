"""Read an exported student file (`best/subset_<N>/student.pt`) back into a front end and a student.

The file is a dict, loaded with torch.load(path, weights_only=True); results/export.py describes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainables.asc.frontend import FrontendConfig, LogMel
from trainables.asc.student import Student, StudentArch
from trainables.asc.synthetic import CLASSES
from trainables.tensor_files import UnreadableFile, load_tensors

CLIP_SECONDS = 1.0  # a student classifies 1-s clips; a longer input is classified as the mean over its 1-s windows


def read_student(path: Path) -> dict:
    """The payload of a student file, its layout checked; a file that is no student file (a planted pickle, random
    bytes, another torch.save file) raises UnreadableFile '<path>: not a student file (why)'. Nothing in it runs."""
    try:
        payload = load_tensors(path)
    except UnreadableFile as err:
        raise UnreadableFile(f"{path}: not a student file ({str(err).removeprefix(f'{path}: ')})") from None
    problem = _layout_problem(payload)
    if problem:
        raise UnreadableFile(f"{path}: not a student file ({problem})")
    return payload


def _layout_problem(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return f"it holds a {type(payload).__name__}, not the dict results/export.py writes"
    state, config = payload.get("state_dict"), payload.get("config")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "no state_dict of tensors in it"
    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("arch", "frontend")):
        return "no config with arch and frontend in it"
    return None


def load_student(path: Path) -> tuple[LogMel, Student, dict]:
    """Rebuild (front end, student, metrics) from an exported file; both modules in eval mode.

    A damaged or hostile file raises UnreadableFile naming it (weights-only: nothing in it runs)."""
    payload = read_student(path)
    try:
        frontend = LogMel(FrontendConfig(**payload["config"]["frontend"])).eval()
        model = Student(StudentArch.from_dict(payload["config"]["arch"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:  # settings or weights that fit no student
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UnreadableFile(f"{path}: not a student file (its config and weights do not make a student: {detail})") \
            from None
    metrics = payload.get("metrics")
    return frontend, model.eval(), metrics if isinstance(metrics, dict) else {}


def student_classes(path: Path) -> list[str]:
    """The class names of the student's outputs, in order: as its file records them; files written before
    they were recorded are TAU22 students (the dataset's class order)."""
    payload = read_student(path)
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
