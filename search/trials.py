"""Ray Tune function trainables: thin wrappers that run the plain-PyTorch trainers and report.

Each is an ordinary function of its config (what the search suggests for the trial) and of the run's constants,
which `tune.with_parameters` hands over once as a typed `TrialContext` (or `TeacherJob`): the space's settings,
where the dataset and the teacher are, the budget, the trial's resources. A trial's settings are the space's with
the suggestion in place, `replace(context.settings, **config)`, checked by their type's rules as they are made.
Everything else about Ray stays here.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ray import tune

from search.trial_context import SpeakerContext, StudentContext, TeacherJob, TeacherSearchContext
from trainables.asc.data import AscData, load_prepared
from trainables.asc.evaluation import logits_metrics
from trainables.asc.logits_file import aligned_logits, save_logits, write_seed_logits
from trainables.asc.student import check_budget
from trainables.asc.student_training import StudentConfig, train_student
from trainables.asc.teacher import TeacherConfig
from trainables.asc.teacher_training import teacher_logits, train_teacher
from trainables.atomic import write_file
from trainables.common import claim_device
from trainables.speaker.data import load_prepared as load_speakers
from trainables.speaker.student_training import OskdftConfig, train_oskdft2
from trainables.speaker.teacher import SslConfig
from trainables.speaker.teacher_training import TeacherTrainConfig, train_ssl_teacher


def student_trial(config: dict, context: StudentContext) -> None:
    """Train one student; report every epoch's metrics with a checkpoint (student.pt + train_state.pt)."""
    config, context = context.with_arm(config)
    settings: StudentConfig = replace(context.settings, **config)
    device = claim_device(context.cpus, context.gpus)
    data = load_prepared(context.data_dir)
    found = check_budget(settings.arch(len(data.classes)), data.sample_rate, context.budget)
    # within_budget: check_budget refused any student over the budget before it trained
    sizes = {"params": found.params, "param_bytes": found.param_bytes(context.budget.bits), "macs": found.macs,
             "within_budget": True}  # fmt: skip
    logits = None
    if settings.uses_teacher:
        path = context.teacher_logits[settings.subset]
        logits = aligned_logits(path, data, data.splits[f"split{settings.subset}"])
    report = ranked(_report_with_checkpoint, context.metric, {"epochs": settings.epochs, **sizes})
    train_student(settings, data, logits, report, resume=_resume_state(), device=device, held_out=context.held_out)


class NonFiniteMetric(RuntimeError):
    """An epoch's ranking metric is NaN or infinite: the trial fails rather than rank as a result."""


def ranked(report: Callable, metric: str | None, constant: dict | None = None) -> Callable:
    """`report`, every epoch's metrics with `constant` (what each report of the trial carries: its planned `epochs`,
    by which its record tells a complete trial from a stopped one; a student's size), refusing (NonFiniteMetric) an
    epoch whose ranking metric is not a finite number: Tune would keep it as a result, rank it, and could export it
    as the best student."""

    def checked(metrics: dict, *rest) -> None:
        value = metrics.get(metric, math.nan) if metric else 0.0
        if not math.isfinite(value):
            raise NonFiniteMetric(f"the ranking metric {metric} is {value} at epoch {metrics.get('epoch')} (no "
                                  "validation clip it is computed from, or NaN predictions): nothing to rank by")  # fmt: skip
        report({**metrics, **(constant or {})}, *rest)

    return checked


def _resume_state() -> dict | None:
    """The train_state of the trial's latest checkpoint when Tune restores or retries it; None on a fresh start."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / "train_state.pt", map_location="cpu", weights_only=True)


def _report_with_checkpoint(metrics: dict, make_checkpoint) -> None:
    """Report an epoch with its checkpoint: student.pt (the export format) and train_state.pt (to resume)."""
    state = make_checkpoint()
    # In the experiment's directory in the storage, which the disk watchdog watches, not in $TMPDIR.
    with tempfile.TemporaryDirectory(dir=tune.get_context().get_storage().experiment_fs_path) as directory:
        torch.save(state["student"], Path(directory) / "student.pt")
        torch.save(state["train_state"], Path(directory) / "train_state.pt")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def oskdft2_trial(config: dict, context: SpeakerContext) -> None:
    """Train one OS-KDFT2 student (student + feature tuner) against the cached teacher; report EER each epoch."""
    config, context = context.with_arm(config)
    settings: OskdftConfig = replace(context.settings, **config)
    device = claim_device(context.cpus, context.gpus)
    data = load_speakers(context.data_dir)
    teacher = torch.load(context.teacher_state, map_location="cpu", weights_only=True)
    report = ranked(_report_with_checkpoint, context.metric, {"epochs": settings.epochs})
    train_oskdft2(settings, data, teacher, report, resume=_resume_state(), device=device)


def ssl_teacher_trial(config: dict, job: TeacherJob) -> None:
    """Train the embedded default's SSL teacher on the synthetic data; save its state dict to the job's state_path."""
    device = claim_device(job.cpus, job.gpus)
    data = load_speakers(job.data_dir)
    state = train_ssl_teacher(SslConfig.from_dict(config["ssl"]), TeacherTrainConfig.from_dict(config["training"]),
                              data, on_epoch=tune.report, device=device)  # fmt: skip
    save_state(state, job.state_path)


def save_state(state: dict, path: Path) -> None:
    tensors = {k: v.cpu() for k, v in state.items()}
    write_file(path, lambda tmp: torch.save(tensors, tmp))


def teacher_trial(config: dict, job: TeacherJob) -> None:
    """Train one teacher stage (config: the teacher's settings, its stage, subset and seed) and write what it
    produced: a state dict for a later stage, and/or its logits with their device-wise figures (for the clips
    of its subset and the held-out splits: AscData.teacher_rows)."""
    device = claim_device(job.cpus, job.gpus)
    data = load_prepared(job.data_dir)
    subset, seed = int(config["subset"]), int(config["seed"])
    settings = TeacherConfig.from_dict({**config["teacher"], "seed": seed}).stage(config["stage"])
    init = None if job.init_path is None else torch.load(job.init_path, map_location="cpu", weights_only=True)
    model, _ = train_teacher(settings, data, subset, on_epoch=lambda metrics, _: tune.report(metrics), device=device,
                             init_state=init)  # fmt: skip
    if job.state_path is not None:
        save_state(model.state_dict(), job.state_path)
    if (subset, seed) in job.logits_paths:
        logits = teacher_logits(model, data, device, settings.eval_batch_size, settings.precision,
                                data.teacher_rows(subset))  # fmt: skip
        save_subset_logits(job.logits_paths[(subset, seed)], data, subset, logits)


def save_subset_logits(path: Path, data: AscData, subset: int, logits: np.ndarray) -> None:
    """Write a subset's teacher logits, one row per clip of `data.teacher_rows(subset)`, with their figures."""
    rows = data.teacher_rows(subset)
    save_logits(path, [data.filenames[r] for r in rows], logits, logits_metrics(logits, data, subset, rows))


def teacher_search_trial(config: dict, context: TeacherSearchContext) -> None:
    """One teacher fine-tuning of a teacher search: every epoch's validation figures; after the last,
    its test figures and a checkpoint with its logits for every clip in both formats."""
    config, context = context.with_arm(config)
    subset = int(config["subset"])  # not a teacher setting: the data it trains on
    settings: TeacherConfig = replace(context.settings, **{k: v for k, v in config.items() if k != "subset"})
    device = claim_device(context.cpus, context.gpus)
    data = load_prepared(context.data_dir)
    init = None if context.init_path is None else torch.load(context.init_path, map_location="cpu", weights_only=True)

    def report(metrics: dict, model) -> None:
        if metrics["epoch"] < settings.epochs:
            tune.report(metrics)
            return
        logits = teacher_logits(model, data, device, settings.eval_batch_size, settings.precision)
        found = logits_metrics(logits, data, subset)
        test = {k: v for k, v in found.items() if k.startswith(tuple(f"{split}_" for split in context.held_out))}
        with tempfile.TemporaryDirectory(dir=tune.get_context().get_storage().experiment_fs_path) as directory:
            save_logits(Path(directory) / "logits.pt", data.filenames, logits, found)
            write_seed_logits(Path(directory) / "logits_meta_order.pt", logits)
            tune.report({**metrics, **test},
                        checkpoint=tune.Checkpoint.from_directory(directory))  # fmt: skip

    train_teacher(settings, data, subset, on_epoch=ranked(report, context.metric, {"epochs": settings.epochs}),
                  device=device, init_state=init)  # fmt: skip
