"""Numeric precision of a training loop: fp32, or bf16 / fp16 mixed precision through torch.autocast.

The front ends (STFT, mel, log) always run in fp32, outside autocast: a bf16 power spectrum loses the
quiet bins the log front end exists to show. Only the networks run under autocast.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
RESOLVED = ("fp32", "bf16", "fp16")  # what `auto` resolves to; the speaker loops take only these
PRECISIONS = ("auto", *RESOLVED)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(precision: str, device: torch.device, on_cuda: str = "bf16") -> str:
    """The precision a loop runs in: `auto` is `on_cuda` on a GPU and fp32 elsewhere (a CPU without bf16
    units runs autocast slower than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return on_cuda if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16 / fp16; nothing for fp32 (autocast knows no `meta` device, which tests train on)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler is then a no-op)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def allow_tf32(device: torch.device) -> None:
    """fp32 matmuls and convolutions on a GPU may use TF32 tensor cores (10-bit mantissa inputs, fp32 sums),
    and cuDNN picks its fastest kernels for the loop's few fixed shapes once (benchmark mode)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def scaled_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:  # fmt: skip
    """One optimiser step from `loss`, through the gradient scaler (a pass-through unless fp16), then the schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
