"""Checks of a run's teacher: a teacher that would teach nothing is refused, teacher logits given as files are read
and checked against the dataset before anything trains, and an OS-KDFT2 search that could only rank on its test
trials is refused. A trained teacher's accuracy is known only once it is trained (a Ray trial);
`check_teacher_strength` then refuses a weak one before any student trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from results.distillation import CHANCE_MARGIN
from results.run_record import RECORD
from search.request import RunRequest
from spaces.errors import SpaceError
from trainables.asc.data import AscData, load_prepared
from trainables.asc.evaluation import logits_metrics
from trainables.asc.logits_file import LogitsMismatch, average_logits
from trainables.asc.teacher import STANDARD_ARCH, TeacherConfig
from trainables.speaker.data import load_prepared as load_speakers


class WeakTeacher(SpaceError):
    """A subset's teacher within CHANCE_MARGIN of chance on the validation split, and the space does not allow it."""


def check_scene_teacher(request: RunRequest) -> None:
    """The teacher checks before Ray starts of the `asc_kd` system (search/scene_checks.py)."""
    space, data_dir = request.space, request.data
    if space.uses_teacher and not space.teacher.logits:
        check_teacher_is_trained(request, space.teacher, "teacher.")
    if space.kind == "replication" and space.uses_teacher:
        check_teacher_not_chosen(space.teacher, space.subsets)
    if space.uses_teacher and space.teacher.logits:
        data = load_prepared(data_dir)
        found = check_external_logits(space.teacher, data, space.subsets)
        check_teacher_strength(space.teacher, {s: logits_metrics(logits, data, s) for s, logits in found.items()},
                               len(data.classes))  # fmt: skip


def check_teacher_strength(teacher: TeacherConfig, metrics: dict[int, dict], n_classes: int) -> None:
    """Refuse (WeakTeacher) distilling from a subset's teacher whose validation accuracy (`metrics[subset]`: its
    logits' figures, val_acc) is within CHANCE_MARGIN of chance, unless `teacher.allow_weak`: its logits would pull
    the students towards noise, and the run would look like a finding."""
    if teacher.allow_weak:
        return
    chance = 1.0 / n_classes
    for subset, figures in sorted(metrics.items()):
        value = figures.get("val_acc", math.nan)
        if not math.isfinite(value) or value - chance < CHANCE_MARGIN:
            raise WeakTeacher(f"teacher: the subset {subset}% teacher's validation accuracy is {value:.3f}, within "
                              f"{CHANCE_MARGIN * 100:.0f} points of chance ({chance:.3f} for {n_classes} classes): it "
                              "would teach the students nothing. Train it longer or give it better weights, or set "
                              "teacher.allow_weak: true (--set teacher.allow_weak=true) to distil from it anyway")  # fmt: skip


def check_speaker_run(request: RunRequest) -> None:
    """The `oskdft2` system's checks (System.checks): on real data a teacher with weights; a search with
    validation trials to rank on (never the test trials it reports); a replication on every speaker (none held out)."""
    space, data_dir = request.space, request.data
    info = json.loads((data_dir / "dataset.json").read_text())
    training = space.sections["teacher_training"]
    if not info.get("source", "").startswith("synthetic") and not training.weights and not training.allow_untrained:
        raise SpaceError("teacher_training.weights: on real data the SSL teacher would be trained from scratch; give "
                         "the pretrained teacher (a torchaudio state dict, e.g. HuBERT base) or set "
                         "teacher_training.allow_untrained: true")  # fmt: skip
    if space.kind == "replication":
        data = load_speakers(data_dir)
        held = len(set(data.speakers[data.splits == "val"].tolist()))
        if held or "val" in data.trials:
            raise SpaceError(f"--data {data_dir}: a replication trains on every speaker, as the paper does (nothing "
                             f"is selected, so none is held out for validation), but this dataset holds {held} out for "
                             "validation trials; prepare it with --val-speakers 0 (the embedded data: --set "
                             "data.val_speakers=0)")  # fmt: skip
    if space.kind == "search" and not (data_dir / "trials" / "val.txt").is_file():
        raise SpaceError(f"--data {data_dir}: no validation trials (trials/val.txt), so the search could only rank on "
                         "the test trials it reports; prepare the dataset with --val-speakers N, or make the space "
                         "kind: replication (fixed settings with several seeds, nothing selected)")  # fmt: skip


def check_teacher_not_chosen(teacher: TeacherConfig, subsets: tuple[int, ...]) -> None:
    """Refuse (SpaceError) a replication distilling from a run's exported best teacher (`<run>/best/…`): it was chosen
    on the validation half of the test set, which the replication's figures on the whole of it include."""
    for subset in subsets:
        for path in external_logits_paths(teacher, subset):
            run = next((p.parent for p in Path(path).resolve().parents
                        if p.name == "best" and (p.parent / RECORD).is_file()), None)  # fmt: skip
            if run is not None:
                raise SpaceError(f"teacher.logits: {path} is the best teacher of the run {run}, chosen on the "
                                 "validation half of test.csv, and a replication's figures are taken on all of "
                                 "test.csv, that half included; distil from teachers chosen by nothing "
                                 "(spaces/ntu_pipeline.yaml trains them and averages every one), or make the space a "
                                 "search (kind: search), which reports the other half only")  # fmt: skip


def external_logits_paths(teacher: TeacherConfig, subset: int) -> list[Path]:
    return [Path(path.replace("{subset}", str(subset))) for path in teacher.logits]


def read_external_logits(teacher: TeacherConfig, data: AscData, subset: int) -> np.ndarray:
    """`teacher.logits` of one subset: one file's logits, or the mean of several (LogitsMismatch on a misfit)."""
    paths = external_logits_paths(teacher, subset)
    for path in paths:
        if not path.is_file():
            raise LogitsMismatch(f"teacher.logits: no file at {path}")
    return average_logits(paths, data)


def check_external_logits(teacher: TeacherConfig, data: AscData, subsets: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Read and check `teacher.logits` for every subset before anything trains (LogitsMismatch on a misfit)."""
    return {subset: read_external_logits(teacher, data, subset) for subset in subsets}


def check_teacher_is_trained(request: RunRequest, teacher: TeacherConfig, where: str) -> None:
    """On real data, refuse (SpaceError) a teacher that would start from random weights: a tiny PaSST, a CNN, or PaSST-S
    without AudioSet weights. Its logits would teach the student little, silently; `allow_untrained` says it is meant.
    `where`: the prefix of the teacher's settings in the space ("teacher." for a KD run's, "" for a teacher search's)."""
    if json.loads((request.data / "dataset.json").read_text()).get("source", "").startswith("synthetic"):
        return
    if teacher.allow_untrained or (teacher.arch == STANDARD_ARCH and teacher.weights):
        return
    start = f"{STANDARD_ARCH} without weights" if teacher.arch == STANDARD_ARCH else f"a {teacher.arch} from random weights"
    raise SpaceError(f"{where}arch: on real data the teacher would be {start}; give {where}weights (the AudioSet "
                     f"checkpoint) with arch {STANDARD_ARCH}, distil from files with teacher.logits, or set "
                     f"{where}allow_untrained: true")  # fmt: skip
