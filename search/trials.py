"""Ray Tune function trainables: thin wrappers that run the plain-PyTorch trainers and report.

Each is an ordinary function of a config dict. The config carries the trial's settings plus
where to find the prepared dataset (`data_dir`), the teacher logits (`teacher_logits`) or the
place to write them (`cache_path`). Everything else about Ray stays in this file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from ray import tune

from trainables.asc.data import load_prepared
from trainables.atomic import write_file
from trainables.asc.logits_file import aligned_logits, save_logits, write_seed_logits
from trainables.common import default_device
from trainables.asc.evaluation import logits_metrics
from trainables.asc.student_training import StudentConfig, train_student
from trainables.asc.student import check_budget
from trainables.asc.teacher import TeacherConfig
from trainables.asc.teacher_training import teacher_logits, train_teacher


def _claim_device(config: dict) -> torch.device:
    """Use the trial's CPU threads, and keep a fractional-GPU trial inside its share of GPU memory."""
    torch.set_num_threads(max(1, int(config.get("cpus_per_trial", 1))))
    device = default_device()
    fraction = float(config.get("gpus_per_trial", 0))
    if device.type == "cuda" and 0 < fraction < 1:
        torch.cuda.set_per_process_memory_fraction(fraction)
    return device


def student_trial(config: dict) -> None:
    """Train one student; report every epoch's metrics with a checkpoint (student.pt + train_state.pt)."""
    device = _claim_device(config)
    data = load_prepared(Path(config["data_dir"]))
    settings = StudentConfig.from_dict(config)
    check_budget(settings.arch(len(data.classes)), data.sample_rate, config.get("budget"))
    logits = None
    if settings.kd_lambda < 1.0:
        path = Path(config["teacher_logits"][str(settings.subset)])
        logits = aligned_logits(path, data, data.splits[f"split{settings.subset}"])
    train_student(settings, data, logits, _report_with_checkpoint, resume=_resume_state(), device=device)


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
    with tempfile.TemporaryDirectory() as directory:
        torch.save(state["student"], Path(directory) / "student.pt")
        torch.save(state["train_state"], Path(directory) / "train_state.pt")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def oskdft2_trial(config: dict) -> None:
    """Train one OS-KDFT2 student (student + feature tuner) against the cached teacher; report EER each epoch."""
    from trainables.speaker.data import load_prepared as load_speakers
    from trainables.speaker.student_training import OskdftConfig, train_oskdft2

    device = _claim_device(config)
    data = load_speakers(Path(config["data_dir"]))
    teacher = torch.load(config["teacher_state"], map_location="cpu", weights_only=True)
    settings = OskdftConfig.from_dict(config)
    train_oskdft2(settings, data, teacher, _report_with_checkpoint, resume=_resume_state(), device=device)


def ssl_teacher_trial(config: dict) -> None:
    """Train the embedded default's SSL teacher on the synthetic data; save its state dict to `state_path`."""
    from trainables.speaker.data import load_prepared as load_speakers
    from trainables.speaker.teacher import SslConfig
    from trainables.speaker.teacher_training import TeacherTrainConfig, train_ssl_teacher

    device = _claim_device(config)
    data = load_speakers(Path(config["data_dir"]))
    state = train_ssl_teacher(SslConfig.from_dict(config["ssl"]), TeacherTrainConfig.from_dict(config["training"]),
                              data, on_epoch=tune.report, device=device)  # fmt: skip
    _save_state(state, Path(config["state_path"]))


def _save_state(state: dict, path: Path) -> None:
    tensors = {k: v.cpu() for k, v in state.items()}
    write_file(path, lambda tmp: torch.save(tensors, tmp))


def teacher_trial(config: dict) -> None:
    """Train one teacher stage and write what it produced: a state dict (`state_path`) for a later stage,
    and/or its logits for every clip (`logits_path`) with their device-wise figures."""
    device = _claim_device(config)
    data = load_prepared(Path(config["data_dir"]))
    settings = TeacherConfig.from_dict({**config["teacher"], "seed": config.get("seed", config["teacher"]["seed"])})
    settings = settings.stage(config.get("stage", "finetune"))
    init = None
    if config.get("init_path"):
        init = torch.load(config["init_path"], map_location="cpu", weights_only=True)
    subset = int(config["subset"])
    model, _ = train_teacher(settings, data, subset, on_epoch=lambda metrics, _: tune.report(metrics), device=device,
                             init_state=init)  # fmt: skip
    if config.get("state_path"):
        _save_state(model.state_dict(), Path(config["state_path"]))
    if config.get("logits_path"):
        logits = teacher_logits(model, data, settings.eval_batch_size, settings.precision)
        save_logits(Path(config["logits_path"]), data.filenames, logits, logits_metrics(logits, data, subset))


def teacher_search_trial(config: dict) -> None:
    """One teacher fine-tuning of a teacher search: every epoch's validation figures; after the last,
    its test figures and a checkpoint with its logits for every clip in both formats."""
    device = _claim_device(config)
    data = load_prepared(Path(config["data_dir"]))
    settings = TeacherConfig.from_dict(config)
    init = torch.load(config["init_path"], map_location="cpu", weights_only=True) if config.get("init_path") else None
    subset = int(config["subset"])

    def report(metrics: dict, model) -> None:
        if metrics["epoch"] < settings.epochs:
            tune.report(metrics)
            return
        logits = teacher_logits(model, data, settings.eval_batch_size, settings.precision)
        found = logits_metrics(logits, data, subset)
        test = {k.removeprefix("test_"): v for k, v in found.items() if k.startswith("test_")}
        with tempfile.TemporaryDirectory() as directory:
            save_logits(Path(directory) / "logits.pt", data.filenames, logits, found)
            write_seed_logits(Path(directory) / "logits_meta_order.pt", logits)
            tune.report({**metrics, **{f"test_{k}": v for k, v in test.items()}},
                        checkpoint=tune.Checkpoint.from_directory(directory))  # fmt: skip

    train_teacher(settings, data, subset, on_epoch=report, device=device, init_state=init)
