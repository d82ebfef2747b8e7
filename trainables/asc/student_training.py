"""Train one DCASE24 baseline student with knowledge distillation: plain PyTorch, no Ray.

`train_student` reads top to bottom: build the front end and model, then for each epoch shuffle
the subset, augment, compute the KD loss against cached teacher logits, step AdamW and the
warm-up/cosine schedule, evaluate device-wise accuracy on the validation split (and, after the
last epoch, on the test split), and hand the epoch's metrics and a checkpoint to `on_epoch`.
The Ray trainable in search/ passes an `on_epoch` that reports to Tune; tests pass a list.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.asc.augment import IMPULSE_RESPONSES, DeviceImpulseResponses, freq_mixstyle, frequency_mask, mixup, time_roll
from trainables.asc.data import SUBSETS, AscData
from trainables.asc.evaluation import eval_batch_size, predict, split_metrics
from trainables.asc.frontend import MASKED_LOG_MEL, FrontendConfig, LogMel
from trainables.asc.loader import Batch, epoch_batches
from trainables.asc.losses import DEFAULT_KD_LAMBDA, DEFAULT_TEMPERATURE, MAX_TEMPERATURE, MIN_TEMPERATURE, kd_loss
from trainables.asc.metrics import confusion_matrix
from trainables.asc.student import Student, StudentArch
from trainables.common import (
    FINITE_CHECK_EVERY, EpochCallback, check_finite, resolve_device, restore_rng_state, rng_state, warmup_cosine,
)
from trainables.precision import PRECISIONS, allow_tf32, autocast, grad_scaler, resolve, scaled_step
from trainables.settings import MAX_LR, Rule, Settings, check_step_budget, flag, path_setting, seed_setting, setting


# The student's depth as a space file writes it: blocks per stage, for its three stages.
N_BLOCKS = Rule(kind="text", pattern=r"[1-9](,[1-9]){2}", means="must be three block counts 1–9 such as 3,2,1")


@dataclass(frozen=True)
class StudentConfig(Settings):
    """One student trial's settings; defaults are the DCASE24 baseline's and the seeds' KD defaults."""

    subset: int = setting(100, choices=SUBSETS)  # training split in percent
    epochs: int = setting(10, low=1)
    train_steps: int = setting(0, low=0)  # optimiser steps of the whole run, the same at every subset (0: `epochs`
    # passes over the subset); split evenly over `epochs` rounds, which stay the unit of reports, checkpoints and ASHA
    batch_size: int = setting(32, low=1)
    lr: float = setting(0.005, low=0.0, low_open=True, high=MAX_LR)  # peak learning rate of AdamW
    weight_decay: float = setting(1e-4, low=0.0)
    warmup_fraction: float = setting(0.05, low=0.0, high=1.0, high_open=True)  # share of all steps spent warming up
    warmup_steps: int | None = setting(None, low=0)  # warm-up in optimiser steps (the baseline: 2,000 at every
    # split); overrides warmup_fraction, and is capped at all the run's steps
    temperature: float = setting(DEFAULT_TEMPERATURE, low=MIN_TEMPERATURE, high=MAX_TEMPERATURE)  # KD temperature T
    kd_lambda: float = setting(DEFAULT_KD_LAMBDA, low=0.0, high=1.0)  # weight of the label loss; 1 = no distillation
    roll_sec: float = setting(0.1, low=0.0)  # maximum time roll, seconds
    freqm: int = setting(48, low=0)  # maximum frequency-mask width, mel bins
    mixstyle_p: float = setting(0.4, low=0.0, high=1.0)  # probability of Freq-MixStyle per batch
    mixstyle_alpha: float = setting(0.3, low=0.0, low_open=True)
    dir_path: str | None = path_setting("dir", holds=IMPULSE_RESPONSES)  # folder of device impulse responses (wav) for
    # DIR augmentation; None: off
    dir_prob: float = setting(0.6, low=0.0, high=1.0)  # probability of convolving a device-a clip with one of them
    mixup_alpha: float = setting(0.0, low=0.0)  # mixup of spectrograms and targets with Beta(α, α) weights; 0: off
    # inputs_and_targets: mixup proper. targets: only the targets are mixed and the network sees the unmixed batch,
    # as NTU's CNN-teacher scripts do (seanyeo300/dcase2024_task1 run_training_FMS_DIR.py:205-210: mixup_data's mixed
    # inputs are discarded and y_hat = self.model(x)); kept as a named option to reproduce their teachers.
    mixup_mixes: str = setting("inputs_and_targets", choices=("inputs_and_targets", "targets"))
    # (NTU's CNN teachers: 1)
    base_channels: int = setting(32, low=1)  # width …
    channels_multiplier: float = setting(1.8, low=0.0, low_open=True)
    expansion_rate: float = setting(2.1, low=0.0, low_open=True)
    n_blocks: str = setting("3,2,1", rule=N_BLOCKS)  # … and depth: blocks per stage, three counts 1–9, comma-separated
    eval_batch_size: int = setting(0, low=0)  # 0: 1024 on a GPU; 32 on a CPU, where smaller batches evaluate faster
    # (the 4096-point STFT stays in cache) and keep each trial's memory down: 128 clips at once cost 0.5 GB more
    precision: str = setting("fp32", choices=PRECISIONS)  # fp32, bf16 or fp16 (torch.autocast; the front end stays
    # fp32), or auto (fp32 here)
    compile: bool = flag(False)  # torch.compile the network (not the front end)
    seed: int = seed_setting()  # confirmations and no-KD references train seed + 1 … seed + confirm_seeds

    def __post_init__(self) -> None:
        super().__post_init__()
        check_step_budget(self.train_steps, self.epochs)

    @property
    def uses_teacher(self) -> bool:
        """Distillation needs a teacher's logits; kd_lambda = 1 is plain supervised training."""
        return self.kd_lambda < 1.0

    def steps_per_epoch(self, clips: int) -> int:
        """Optimiser steps of one epoch (one round of `train_steps`, or one pass over `clips`)."""
        if self.train_steps:
            return -(-self.train_steps // self.epochs)
        return -(-clips // self.batch_size)

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps of a run of `total_steps` optimiser steps."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        return int(self.warmup_fraction * total_steps)

    def arch(self, n_classes: int) -> StudentArch:
        return StudentArch(
            n_classes=n_classes,
            base_channels=self.base_channels,
            channels_multiplier=self.channels_multiplier,
            expansion_rate=self.expansion_rate,
            n_blocks=tuple(int(n) for n in self.n_blocks.split(",")),
        )


@dataclass
class StudentStep:
    """What one training step computes: augment a batch on its device, run the student, return the KD loss.

    Everything lives on one device; labels and teacher logits move there once, and each step gathers
    its rows there. Tests run it on the `meta` device, which fails on any tensor left on the CPU.
    """

    config: StudentConfig
    model: Student
    network: Callable[[torch.Tensor], torch.Tensor]  # the model, or its torch.compile'd form
    frontend: LogMel
    labels: torch.Tensor  # int64 [clips]
    targets: torch.Tensor | None  # float32 [clips, classes] teacher logits; None without distillation
    dirs: DeviceImpulseResponses | None
    is_device_a: torch.Tensor  # bool [clips], on the host (DIR picks device-a clips)
    max_shift: int  # time roll, samples
    precision: str  # resolved: fp32, bf16 or fp16

    @classmethod
    def build(cls, config: StudentConfig, data: AscData, teacher_logits: np.ndarray | None,
              device: torch.device) -> "StudentStep":  # fmt: skip
        # channels_last makes the depthwise convolutions about 1.5× faster on CPU.
        model = Student(config.arch(len(data.classes))).to(device, memory_format=torch.channels_last)
        targets = None if teacher_logits is None else torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32))
        dirs = DeviceImpulseResponses(Path(config.dir_path), data.sample_rate, config.dir_prob) if config.dir_path else None
        return cls(
            config=config, model=model, network=torch.compile(model) if config.compile else model,
            frontend=LogMel(FrontendConfig(sample_rate=data.sample_rate)).to(device),
            labels=torch.as_tensor(data.labels).to(device), targets=None if targets is None else targets.to(device),
            dirs=dirs, is_device_a=torch.from_numpy(data.devices == "a"),
            max_shift=int(config.roll_sec * data.sample_rate), precision=resolve(config.precision, device, on_cuda="fp32"),
        )  # fmt: skip

    def loss(self, batch: Batch) -> torch.Tensor:
        config, waveform = self.config, batch.waveform
        if self.dirs is not None:
            waveform = self.dirs(waveform, self.is_device_a[batch.rows])
        spec = frequency_mask(self.frontend(time_roll(waveform, self.max_shift)), config.freqm, fill=MASKED_LOG_MEL)
        spec = freq_mixstyle(spec, config.mixstyle_p, config.mixstyle_alpha)
        labels = self.labels[batch.index]
        teacher = None if self.targets is None else self.targets[batch.index]
        mix = mixup(spec.shape[0], config.mixup_alpha, spec.device)
        if mix is not None and config.mixup_mixes == "inputs_and_targets":
            spec = mix.weight * spec + (1 - mix.weight) * spec[mix.perm]
        with autocast(self.precision, waveform.device):
            logits = self.network(spec.contiguous(memory_format=torch.channels_last)).float()
        loss = kd_loss(logits, labels, teacher, config.temperature, config.kd_lambda)
        if mix is None:
            return loss
        other = kd_loss(logits, labels[mix.perm], None if teacher is None else teacher[mix.perm], config.temperature,
                        config.kd_lambda)  # fmt: skip
        return mix.weight * loss + (1 - mix.weight) * other

    def logits(self, waveform: torch.Tensor) -> torch.Tensor:
        """The student's logits for clean waveforms (evaluation)."""
        spec = self.frontend(waveform).contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, waveform.device):
            return self.network(spec)




def student_export(model: Student, frontend: FrontendConfig, config: StudentConfig, metrics: dict,
                   classes: list[str], test_confusion: np.ndarray | None = None) -> dict:  # fmt: skip
    """The self-contained student file: everything that rebuilds the model and its front end, its figures,
    and (after the last epoch) its confusion matrix on the test split, rows and columns in `classes` order."""
    export = {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": {"arch": model.arch.as_dict(), "frontend": frontend.as_dict(), "train": asdict(config)},
        "metrics": dict(metrics),
        "classes": list(classes),
    }
    if test_confusion is not None:
        export["test_confusion"] = torch.from_numpy(np.asarray(test_confusion, dtype=np.int64))
    return export


def exported_logits(export: dict, data: AscData, rows: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    """fp32 logits [len(rows), classes] of an exported student (`student_export`'s dict) for `rows` of `data`: a
    trained student as a teacher (NTU's CNN teachers)."""
    frontend = LogMel(FrontendConfig(**export["config"]["frontend"])).to(device).eval()
    model = Student(StudentArch.from_dict(export["config"]["arch"]))
    model.load_state_dict(export["state_dict"])
    model = model.to(device).eval()
    return predict(lambda waveform: model(frontend(waveform)), data, rows, batch_size, device).numpy()


def train_student(
    config: StudentConfig,
    data: AscData,
    teacher_logits: np.ndarray | None,
    on_epoch: EpochCallback,
    resume: dict | None = None,
    device: torch.device | None = None,
    held_out: tuple[str, ...] = ("test", "full_test"),
) -> dict[str, float]:
    """Train and return the last epoch's metrics.

    teacher_logits: [clips, classes] aligned with `data` rows, or None when kd_lambda == 1.
    on_epoch(metrics, make_checkpoint): called after every epoch; make_checkpoint() returns a dict
        (`student` = the export format of `student_export`, `train_state` = what `resume` takes).
    resume: a previous `train_state`, to continue after its epoch.
    held_out: the splits reported after the last epoch, where the dataset has them: the test split, and on real
        data full_test (all of test.csv, the published tables' set, which holds the validation half too: a
        search that selects on validation leaves it out).
    device: where to train; the GPU when there is one.
    """
    device = resolve_device(device)
    allow_tf32(device)
    torch.manual_seed(config.seed)
    step = StudentStep.build(config, data, teacher_logits, device)
    model = step.model
    train_rows = data.splits[f"split{config.subset}"]
    train_devices = data.train_devices(config.subset)
    steps_per_epoch = config.steps_per_epoch(len(train_rows))
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine(optimizer, config.warmup(total_steps), total_steps)
    scaler = grad_scaler(step.precision, device)
    eval_batch = eval_batch_size(config.eval_batch_size, device, on_cpu=32)
    first_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])  # before the optimizer, whose state follows the parameters' device
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        restore_rng_state(resume, device)
        first_epoch = int(resume["epoch"])

    metrics: dict[str, float] = {}
    for epoch in range(first_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        loss_sum, seen = torch.zeros((), device=device), 0
        for number, batch in enumerate(epoch_batches(data, train_rows, config.batch_size, steps_per_epoch, device)):
            loss = step.loss(batch)
            scaled_step(loss, optimizer, scaler, scheduler)
            loss_sum += loss.detach() * len(batch.rows)
            seen += len(batch.rows)
            if number % FINITE_CHECK_EVERY == 0:
                check_finite(loss_sum, epoch + 1, number)
        check_finite(loss_sum, epoch + 1, steps_per_epoch - 1)  # also waits for the epoch's last step
        train_seconds = time.perf_counter() - started

        model.eval()
        val_rows = data.splits["val"]
        metrics = split_metrics(predict(step.logits, data, val_rows, eval_batch, device), data, val_rows, train_devices)
        metrics.update(train_loss=loss_sum.item() / seen, epoch=epoch + 1, lr=scheduler.get_last_lr()[0],
                       clips_per_second=seen / train_seconds)  # fmt: skip
        confusion = None
        # After the last epoch, the figures to report: the test split, and on real data the whole of test.csv
        # (full_test, the published tables' set). Neither ever ranks a trial.
        for split in [name for name in held_out if epoch + 1 == config.epochs and name in data.splits]:
            rows = data.splits[split]
            logits = predict(step.logits, data, rows, eval_batch, device)
            metrics.update({f"{split}_{k}": v for k, v in split_metrics(logits, data, rows, train_devices).items()})
            if split == "test":
                confusion = confusion_matrix(data.labels[rows], logits.argmax(dim=1).numpy(), len(data.classes))

        def make_checkpoint(epoch_done: int = epoch + 1, epoch_metrics: dict = dict(metrics), confusion=confusion) -> dict:
            return {
                "student": student_export(model, step.frontend.config, config, epoch_metrics, data.classes, confusion),
                # state_dict()s hold the live tensors: copy, so the checkpoint stays the epoch's.
                "train_state": copy.deepcopy({
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    **rng_state(device),
                    "epoch": epoch_done,
                }),
            }

        on_epoch(metrics, make_checkpoint)
    return metrics
