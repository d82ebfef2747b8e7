"""The teacher's training loop and its logits for the clips asked (plain PyTorch)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainables.asc.augment import DeviceImpulseResponses, freq_mixstyle, time_roll
from trainables.asc.data import AscData
from trainables.asc.evaluation import eval_batch_size, predict, split_metrics
from trainables.asc.loader import Batch, epoch_batches
from trainables.asc.teacher import SCHEDULES, Teacher, TeacherConfig, build_teacher, is_head
from trainables.common import (
    FINITE_CHECK_EVERY,
    check_finite,
    resolve_device,
    exp_warmup_linear_down_factor,
    per_epoch,
    warmup_cosine,
)  # fmt: skip
from trainables.precision import allow_tf32, autocast, grad_scaler, resolve, scaled_step

# Evaluation batch on a CPU: 32 clips keep the STFT's working set in cache; 128 made the demo's CNN teacher 2.4×
# slower (157 against 371 clips/s on 2 cores) and a tiny PaSST no faster.
CPU_EVAL_BATCH = 32


def teacher_loss(model: Teacher, batch: Batch, labels: torch.Tensor, config: TeacherConfig, precision: str,
                 dirs: DeviceImpulseResponses | None = None, is_device_a: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """One step's cross-entropy on an augmented batch (DIR, time roll, the front end's masks, Freq-MixStyle),
    all on the batch's device; `labels` [clips] live there too, `is_device_a` [clips] on the host."""
    waveform = batch.waveform
    if dirs is not None:
        waveform = dirs(waveform, is_device_a[batch.rows])
    waveform = model.waveform_at_rate(time_roll(waveform, int(config.roll_sec * model.source_rate)))
    spec = freq_mixstyle(model.spectrogram(waveform), config.mixstyle_p, config.mixstyle_alpha)
    with autocast(precision, spec.device):
        logits = model.classify(spec)
    return F.cross_entropy(logits.float(), labels[batch.index])


def lr_schedule(config: TeacherConfig, optimizer: torch.optim.Optimizer,
                steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:  # fmt: skip
    """The teacher's schedule, stepped per batch."""
    if config.schedule == "exp_warmup_linear_down":
        return per_epoch(optimizer, steps_per_epoch, lambda epoch: exp_warmup_linear_down_factor(
            epoch, config.warmup_epochs, config.rampdown_start, config.rampdown_epochs, config.lr_floor))
    if config.schedule == "cosine":
        total = steps_per_epoch * config.epochs
        return warmup_cosine(optimizer, int(config.warmup_fraction * total), total)
    raise ValueError(f"teacher schedule {config.schedule!r}: expected one of {', '.join(SCHEDULES)}")


def train_teacher(
    config: TeacherConfig,
    data: AscData,
    subset: int,
    on_epoch: Callable[[dict[str, float], Teacher], None] = lambda metrics, model: None,
    device: torch.device | None = None,
    init_state: dict | None = None,
) -> tuple[Teacher, dict[str, float]]:
    """Train a teacher on one training subset; return it with its last validation metrics.

    on_epoch(metrics, model): called after every epoch with the validation figures.
    init_state: a previous teacher's state dict (e.g. after CochlScene, SIT's first stage) to continue
        from; its classification heads (LayerNorm included) start afresh, since the task differs. The
        backbone learns at lr · backbone_lr_ratio, the heads at head_lr (or lr).
    A stage of several (SIT's CochlScene stage) passes its own settings: `config.stage("sit")`.
    """
    device = resolve_device(device)
    allow_tf32(device)
    precision = resolve(config.precision, device)
    torch.manual_seed(config.seed)
    epochs = config.epochs
    model = build_teacher(config, len(data.classes))
    model.source_rate = data.sample_rate
    if init_state is not None:
        kept = {k: v for k, v in init_state.items() if not is_head(k)}
        missing, unexpected = model.load_state_dict(kept, strict=False)
        if unexpected or any(not is_head(k) for k in missing):
            raise ValueError(f"the SIT checkpoint does not fit this teacher: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model = model.to(device)
    rows = data.splits[f"split{subset}"]
    train_devices = data.train_devices(subset)
    steps_per_epoch = -(-config.train_steps // epochs) if config.train_steps else -(-len(rows) // config.batch_size)
    named = list(model.named_parameters())
    backbone_lr, head_lr = config.rates()
    groups = [
        {"params": [p for n, p in named if not is_head(n)], "lr": backbone_lr},
        {"params": [p for n, p in named if is_head(n)], "lr": head_lr},
    ]
    optimizer = torch.optim.Adam(groups, weight_decay=config.weight_decay)
    scheduler = lr_schedule(config, optimizer, steps_per_epoch)
    scaler = grad_scaler(precision, device)
    labels = torch.as_tensor(data.labels).to(device)
    dirs = DeviceImpulseResponses(Path(config.dir_path), data.sample_rate, config.dir_prob) if config.dir_path else None
    is_device_a = torch.from_numpy(data.devices == "a")
    eval_batch = eval_batch_size(config.eval_batch_size, device, on_cpu=CPU_EVAL_BATCH)
    metrics: dict[str, float] = {}
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        loss_sum, seen = torch.zeros((), device=device), 0
        for step, batch in enumerate(epoch_batches(data, rows, config.batch_size, steps_per_epoch, device)):
            loss = teacher_loss(model, batch, labels, config, precision, dirs, is_device_a)
            scaled_step(loss, optimizer, scaler, scheduler)
            loss_sum += loss.detach() * len(batch.rows)
            seen += len(batch.rows)
            if step % FINITE_CHECK_EVERY == 0:
                check_finite(loss_sum, epoch + 1, step)
        check_finite(loss_sum, epoch + 1, steps_per_epoch - 1)
        model.eval()
        val = data.splits["val"]
        val_logits = predict(lambda w: model.logits(w, precision), data, val, eval_batch, device)
        metrics = split_metrics(val_logits, data, val, train_devices)
        metrics.update(train_loss=loss_sum.item() / seen, epoch=epoch + 1, seconds=time.perf_counter() - started)
        on_epoch(metrics, model)
    return model, metrics


def teacher_logits(model: Teacher, data: AscData, device: torch.device, batch_size: int = 0, precision: str = "auto",
                   rows: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """fp32 logits [len(rows), classes] for `rows` of the dataset (default: every clip, in row order), without
    augmentation, on `device` (the model's); the network runs in `precision` (auto: bf16 on a GPU)."""
    model.eval()
    model.source_rate = data.sample_rate
    rows = np.arange(len(data.filenames)) if rows is None else rows
    logits = predict(lambda w: model.logits(w, resolve(precision, device)), data, rows,
                     eval_batch_size(batch_size, device, on_cpu=CPU_EVAL_BATCH), device)  # fmt: skip
    return logits.numpy()
