"""The stages of the `asc_kd_ensemble` system: NTU's KD-ensemble table in one run (spaces/ntu_pipeline.yaml).

    checks    check_ensemble_run: the teachers' settings and the scene checks, before Ray starts;
    teachers  ensemble_teachers: per subset, `teacher.ensemble` PaSST teachers (search/teachers.py TeacherPlan, as
              a KD search trains its teacher) and `cnn_teachers` baseline-CNN teachers (the students' network trained
              on labels with the `cnn_teacher` section's settings), each member a Ray trial whose logits are cached
              under <storage>/cache/teachers/ by everything that makes it; their raw logits averaged into the file
              the students read. A later run with the same teachers trains none of them again;
    trial     the students: search/trials.py student_trial, in the students' own settings (EnsembleKdConfig.student).
The run then goes on as any other (search/pipeline.py): the students' replication, its table, the report.

Experiments in the run directory: teachers/ (PaSST members), cnn_teachers/ (CNN members), both absent when cached.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
from ray import tune

from results.distillation import write_teachers
from search.console import banner
from search.request import RunRequest
from search.scene_checks import check_scene_run
from search.teacher_checks import check_teacher_strength
from search.teachers import TeacherPlan, _key, fit_teachers, member_name, print_teachers, run_context, teacher_dataset
from search.trial_context import StudentContext, TeacherJob
from search.trials import ranked, save_subset_logits
from spaces.errors import SpaceError
from spaces.space import Space
from trainables.asc.data import AscData, load_prepared
from trainables.asc.ensemble import ensemble_teachers as shared_settings
from trainables.asc.evaluation import eval_batch_size
from trainables.asc.logits_file import LogitsMismatch, aligned_logits, check_logits_cache, read_logits
from trainables.asc.student_training import StudentConfig, exported_logits, train_student
from trainables.atomic import set_aside
from trainables.common import claim_device


def with_teachers(space: Space) -> Space:
    """`space` with its teacher sections as the run trains them: the run's `weights` and `dir_path` where a section
    leaves its own unset."""
    passt, cnn = shared_settings(space.settings, space.teacher, space.sections["cnn_teacher"])
    return dataclasses.replace(space, sections={**space.sections, "teacher": passt, "cnn_teacher": cnn})


def check_ensemble_run(request: RunRequest) -> None:
    """The run trains its teachers, the CNN ones on labels; then the scene checks, on the teachers as trained."""
    space = with_teachers(request.space)
    if space.teacher.logits:
        raise SpaceError("teacher.logits: this run trains its teachers; to distil from logits files use ntu_kd.yaml")
    if space.sections["cnn_teacher"].kd_lambda != 1.0:
        raise SpaceError(f"cnn_teacher.kd_lambda: the CNN teachers learn from labels alone (1.0), got "
                         f"{space.sections['cnn_teacher'].kd_lambda}")  # fmt: skip
    check_scene_run(dataclasses.replace(request, space=space))


def ensemble_teachers(request: RunRequest) -> StudentContext:
    """Every subset's averaged teacher logits in the cache, training (as Ray trials) only the members not there."""
    request = dataclasses.replace(request, space=with_teachers(request.space))
    space = request.space
    if not space.uses_teacher:
        return run_context(request, StudentContext, settings=space.settings.student(), budget=space.budget)
    passt, cnn, count = space.teacher, space.sections["cnn_teacher"], space.settings.cnn_teachers
    banner(f"Teachers: {passt.ensemble} PaSST and {count} CNN per subset, their logits averaged")
    data = load_prepared(request.data)
    plan = TeacherPlan(request, teacher_dataset(request, passt))
    passt_paths = plan.ensure(space.subsets)  # the PaSST members' mean, made by the KD search's own teacher plan
    seeds = range(cnn.seed, cnn.seed + count)
    members = {(s, seed): cnn_member_path(plan.cache, data, cnn, s, seed) for s in space.subsets for seed in seeds}
    cached = {key: _cached(path, data, key[0]) for key, path in members.items()}
    for (subset, seed), path in members.items():
        print(f"CNN teacher for subset {subset}%, seed {seed}: {'cached' if cached[subset, seed] else 'to train'} "
              f"({path})", flush=True)  # fmt: skip
    todo = {key: path for key, path in members.items() if not cached[key]}
    if todo:
        train_cnn_teachers(request, cnn, todo, members)
    paths = {s: average_members(plan.cache, data, s, passt_paths[s], passt.ensemble,
                                [members[s, seed] for seed in seeds]) for s in space.subsets}  # fmt: skip
    print_teachers(paths)
    print(f"Teachers' test figures: {write_teachers(request.run_dir, paths)}", flush=True)
    check_teacher_strength(passt, {s: read_logits(p)["metrics"] for s, p in paths.items()}, len(data.classes))
    return run_context(request, StudentContext, settings=space.settings.student(), teacher_logits=paths,
                       budget=space.budget)  # fmt: skip


def cnn_member_path(cache: Path, data: AscData, cnn: StudentConfig, subset: int, seed: int) -> Path:
    """A CNN teacher's logits file, named by all that makes it: the data, the split, its settings and its seed."""
    settings = {k: v for k, v in dataclasses.asdict(cnn).items() if k not in ("subset", "seed", "eval_batch_size")}
    return cache / f"cnn-{_key(data.fingerprint, subset, settings, seed)}.pt"


def _cached(path: Path, data: AscData, subset: int) -> bool:
    """Whether `path` holds whole, finite logits for every clip `subset` needs; a damaged file is set aside."""
    if not path.exists():
        return False
    try:
        check_logits_cache(path, data, data.teacher_rows(subset))
        return True
    except LogitsMismatch as err:
        set_aside(path, str(err).removeprefix(f"{path}: "))
        return False


def train_cnn_teachers(request: RunRequest, cnn: StudentConfig, todo: dict[tuple[int, int], Path],
                       members: dict[tuple[int, int], Path]) -> None:  # fmt: skip
    """The missing CNN teachers in one experiment (the grid of the subsets and seeds that miss one, as the PaSST
    teachers' is made), with the students' resources: they are the students' network."""
    res = request.space.resources
    subsets, seeds = sorted({s for s, _ in todo}, reverse=True), sorted({seed for _, seed in todo})
    paths = {(s, seed): members[s, seed] for s in subsets for seed in seeds}
    job = TeacherJob(data_dir=request.data, cpus=res.cpus_per_trial, gpus=res.gpus_per_trial, logits_paths=paths)
    fit_teachers(request, "cnn_teachers", cnn_teacher_trial, job, {
        "teacher": dataclasses.asdict(cnn), "stage": "finetune", "subset": tune.grid_search(subsets),
        "seed": tune.grid_search(seeds)}, "CNN teacher",
        functools.partial(member_name, epochs=cnn.epochs, ensemble=request.space.settings.cnn_teachers))  # fmt: skip
    failed = [key for key, path in todo.items() if not path.is_file()]
    if failed:
        raise RuntimeError(f"CNN teacher training failed for (subset, seed) {failed}; see "
                           f"{request.run_dir / 'cnn_teachers'}")  # fmt: skip


def average_members(cache: Path, data: AscData, subset: int, passt: Path, n_passt: int, cnn: list[Path]) -> Path:
    """The mean of every member's raw logits (the PaSST file holds its n_passt members' mean), cached by its
    members' names."""
    path = cache / f"kd-ensemble-{_key(passt.name, [p.name for p in cnn])}.pt"
    if _cached(path, data, subset):
        return path
    rows = data.teacher_rows(subset)
    total = n_passt * aligned_logits(passt, data, rows)[rows].astype(np.float64)
    for member in cnn:
        total += aligned_logits(member, data, rows)[rows]
    save_subset_logits(path, data, subset, (total / (n_passt + len(cnn))).astype(np.float32))
    return path


def cnn_teacher_trial(config: dict, job: TeacherJob) -> None:
    """Train one CNN teacher (the students' network on labels) on its subset; write its logits for the clips of
    `data.teacher_rows(subset)` with their figures."""
    device = claim_device(job.cpus, job.gpus)
    data = load_prepared(job.data_dir)
    subset, seed = int(config["subset"]), int(config["seed"])
    settings = StudentConfig.from_dict({**config["teacher"], "subset": subset, "seed": seed})
    last: dict = {}

    def report(metrics: dict, make_checkpoint) -> None:
        tune.report(metrics)
        if metrics["epoch"] == settings.epochs:
            last["student"] = make_checkpoint()["student"]

    train_student(settings, data, None, ranked(report, "acc"), device=device, held_out=("test",))
    rows = data.teacher_rows(subset)
    batch = eval_batch_size(settings.eval_batch_size, device, on_cpu=32)
    save_subset_logits(job.logits_paths[(subset, seed)], data, subset,
                       exported_logits(last["student"], data, rows, device, batch))  # fmt: skip
