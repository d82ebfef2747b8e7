"""What both wings' training loops share: schedules, the finiteness check, device choice, parameter count."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

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


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The one device a loop trains on, resolved once at its entry: None is the GPU when there is one, else the
    CPU; a GPU always gets its index (`cuda` becomes `cuda:<current>`).

    Below the entry nothing guesses a device: CUDA calls such as torch.cuda.set_device (which the batch feeder's
    thread makes) refuse a device without an index, so an index-less one would crash the first GPU batch."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def claim_device(cpus: float, gpus: float) -> torch.device:
    """A trial's entry: use its CPUs as torch's threads, resolve its device, and keep a fractional-GPU trial
    inside its share of GPU memory (several trials packed on one GPU must not starve each other)."""
    torch.set_num_threads(max(1, int(cpus)))
    device = resolve_device()
    if device.type == "cuda" and 0 < gpus < 1:
        torch.cuda.set_per_process_memory_fraction(float(gpus), device)
    return device


def rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """The random streams a loop draws from, for its checkpoint: the CPU generator (shuffles, augmentations),
    and on a GPU the device's own (dropout there draws from it), so a resumed trial continues both."""
    on_gpu = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"rng": torch.get_rng_state(), "cuda_rng": on_gpu}


def restore_rng_state(state: dict, device: torch.device) -> None:
    """Continue the streams `rng_state` saved; a GPU stream saved on another kind of device is not restored."""
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    """Fail on a NaN or infinite loss (or running sum of losses, up to `step`); waits for the device."""
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"training loss became {loss.item()} in epoch {epoch}, step {step}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# What a trainer hands each epoch to its caller: the epoch's metrics, and a function that makes its checkpoint
# (called only when the caller keeps one). Ray's trainables report both to Tune; tests collect them in a list.
EpochCallback = Callable[[dict[str, float], Callable[[], dict]], None]
