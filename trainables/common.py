"""Small pieces both training loops (teacher and student) use: schedule, finiteness, evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from trainables.asc_data import AscData
from trainables.loader import clip_batches
from trainables.metrics import device_metrics

# Steps between two looks at the running loss. Each look waits for the GPU; a NaN or inf loss stays NaN in
# the running sum, so looking every few dozen steps still catches it, in the epoch it happened.
FINITE_CHECK_EVERY = 50


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the trial is a failure, not a result."""


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to zero at `total_steps` (stepped per batch)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def exp_warmup_linear_down_factor(epoch: int, warmup: int, rampdown_start: int, rampdown_epochs: int,
                                  floor: float) -> float:  # fmt: skip
    """CP-JKU's PaSST schedule, per epoch: an exponential warm-up exp(−5 (1 − e/warmup)²) over `warmup` epochs
    (epoch 0 counted as half an epoch), then a linear decay from epoch `rampdown_start` to `floor` over
    `rampdown_epochs` epochs, where it stays."""
    rise = 1.0
    if epoch < warmup:
        phase = 1.0 - max(epoch, 0.5) / warmup
        rise = math.exp(-5.0 * phase * phase)
    if epoch <= rampdown_start:
        fall = 1.0
    elif epoch - rampdown_start < rampdown_epochs:
        fall = floor + (1.0 - floor) * (rampdown_epochs - (epoch - rampdown_start)) / rampdown_epochs
    else:
        fall = floor
    return rise * fall


def per_epoch(optimizer: torch.optim.Optimizer, steps_per_epoch: int,
              factor: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:  # fmt: skip
    """A per-epoch schedule, stepped per batch like warmup_cosine: the factor changes at epoch boundaries."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step // steps_per_epoch))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def eval_batch_size(configured: int, device: torch.device, on_cpu: int) -> int:
    """`configured`, or when 0 the device's own: large batches on a GPU, `on_cpu` on a CPU."""
    return configured or (1024 if device.type == "cuda" else on_cpu)


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor], data: AscData, rows: np.ndarray, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits [len(rows), classes] (fp32, on the CPU) of a model that maps waveforms to logits, in `rows` order.

    The logits stay on the device until the last batch, so evaluation waits for the GPU once."""
    outputs = [model(batch.waveform).float() for batch in clip_batches(data, rows, batch_size, False, device)]
    return torch.cat(outputs).cpu() if outputs else torch.empty(0, len(data.classes))


def split_metrics(logits: torch.Tensor, data: AscData, rows: np.ndarray, train_devices: list[str]) -> dict[str, float]:
    return device_metrics(
        logits.argmax(dim=1).numpy(), data.labels[rows], data.devices[rows], train_devices, len(data.classes)
    )


def logits_metrics(logits: np.ndarray, data: AscData, subset: int) -> dict[str, float]:
    """Device-wise figures of precomputed logits [clips, classes] on val, test and (real data) the whole of
    test.csv (keys val_*, test_*, full_test_*)."""
    metrics: dict[str, float] = {}
    for split in ("val", "test", "full_test"):
        if split in data.splits:
            rows = data.splits[split]
            found = split_metrics(torch.from_numpy(np.asarray(logits[rows])), data, rows, data.train_devices(subset))
            metrics.update({f"{split}_{k}": v for k, v in found.items()})
    return metrics


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    """Fail on a NaN or infinite loss (or running sum of losses, up to `step`); waits for the device."""
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"training loss became {loss.item()} in epoch {epoch}, step {step}")
