"""The DCASE 2024 Task 1 baseline student: a simplified CP-Mobile.

Mirrors the published architecture table (CPJKU/dcase2024_task1_baseline, README):

| stage   | block | in → out | expansion | stride (freq, time) | shortcut      |
|---------|-------|----------|-----------|---------------------|---------------|
| in_c    | conv  | 1 → 8    | –         | (2, 2)              | –             |
| in_c    | conv  | 8 → 32   | –         | (2, 2)              | –             |
| stage 1 | b1    | 32 → 32  | 64        | (1, 1)              | identity      |
| stage 1 | b2    | 32 → 32  | 64        | (1, 1)              | identity      |
| stage 1 | b3    | 32 → 32  | 64        | (1, 2)              | AvgPool(3, s) |
| stage 2 | b4    | 32 → 56  | 64        | (2, 1)              | none          |
| stage 2 | b5    | 56 → 56  | 120       | (1, 1)              | identity      |
| stage 3 | b6    | 56 → 104 | 120       | (1, 1)              | none          |
| head    | 1×1   | 104 → 10 | –         | –                   | BN, avg pool  |

With the defaults this is 61,148 parameters and 29,419,156 multiply-accumulates for a
1×256×65 input (one second of audio through the front end in `frontend.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from trainables.asc.frontend import FrontendConfig
from trainables.common import count_parameters
from trainables.settings import Rule, Settings, setting


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor`, never more than 10 % below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class StudentArch(Settings):
    """Everything that rebuilds the student network (not its front end)."""

    n_classes: int = setting(10, low=2)  # a classifier tells two classes apart at least
    in_channels: int = setting(1, low=1)
    base_channels: int = setting(32, low=1)  # rounded to a multiple of 8 (at least 8)
    channels_multiplier: float = setting(1.8, low=0.0, low_open=True)  # each stage's width over the one before
    expansion_rate: float = setting(2.1, low=0.0, low_open=True)  # a block's inner width over its input's
    # blocks per stage: three stages (the strides are the published model's), as StudentConfig.n_blocks spells them
    n_blocks: tuple[int, int, int] = setting((3, 2, 1), rule=Rule(kind="items", item=Rule(low=1, high=9), length=(3, 3)))

    def as_dict(self) -> dict:
        return {**asdict(self), "n_blocks": list(self.n_blocks)}


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride=1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Block(nn.Module):
    """Inverted bottleneck: 1×1 expand, 3×3 depthwise (maybe strided), 1×1 project, ReLU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, expansion_rate: float, stride: tuple[int, int]):
        super().__init__()
        expanded = make_divisible(in_ch * expansion_rate, 8)
        self.block = nn.Sequential(
            _conv_bn(in_ch, expanded, 1),
            _conv_bn(expanded, expanded, 3, stride=stride, groups=expanded),
            _conv_bn(expanded, out_ch, 1, relu=False),
        )
        self.shortcut: nn.Module | None = None
        if in_ch == out_ch:
            strided = stride != (1, 1)
            self.shortcut = nn.AvgPool2d(3, stride=stride, padding=1) if strided else nn.Identity()
        self.after = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.after(y)


# Block strides of the published model, by 1-based global block index; unlisted blocks use (1, 1).
_STRIDES = {3: (1, 2), 4: (2, 1)}


class Student(nn.Module):
    """Maps a log-mel spectrogram [B, 1, n_mels, frames] to class logits [B, n_classes]."""

    def __init__(self, arch: StudentArch = StudentArch()):
        super().__init__()
        self.arch = arch
        base = make_divisible(arch.base_channels, 8)
        self.in_c = nn.Sequential(
            _conv_bn(arch.in_channels, base // 4, 3, stride=2),
            _conv_bn(base // 4, base, 3, stride=2),
        )
        stage_channels = [make_divisible(base * arch.channels_multiplier**i, 8) for i in range(len(arch.n_blocks))]
        stages: list[nn.Module] = []
        in_ch, index = base, 0
        for out_ch, count in zip(stage_channels, arch.n_blocks):
            blocks = []
            for _ in range(count):
                index += 1
                blocks.append(Block(in_ch, out_ch, arch.expansion_rate, _STRIDES.get(index, (1, 1))))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.Conv2d(in_ch, arch.n_classes, 1, bias=False),
            nn.BatchNorm2d(arch.n_classes),
            nn.AdaptiveAvgPool2d(1),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.in_c(x))).flatten(1)


@dataclass(frozen=True)
class Complexity:
    """What DCASE24 limits: parameters (and their memory) and MACs of one 1-s clip, front end excluded."""

    params: int
    macs: int

    def param_bytes(self, bits: int = 16) -> int:
        """Parameter memory in bytes at `bits` per parameter (16: fp16, 8: int8)."""
        return self.params * bits // 8


@dataclass(frozen=True)
class Budget(Settings):
    """A complexity limit; 0 means no limit. DCASE24: 128,000 bytes of parameters at 16 bits, 30 MMACs."""

    param_bytes: int = setting(0, low=0)  # bytes of parameter memory at `bits` per parameter
    bits: int = setting(16, choices=(8, 16, 32))
    macs: int = setting(0, low=0)  # multiply-accumulates per 1-s clip, front end excluded

    def violations(self, found: Complexity) -> list[str]:
        """One sentence per exceeded limit; empty when `found` fits."""
        reasons = []
        if self.param_bytes and found.param_bytes(self.bits) > self.param_bytes:
            reasons.append(f"{found.params:,} parameters = {found.param_bytes(self.bits):,} bytes at {self.bits} bits "
                           f"> {self.param_bytes:,}")  # fmt: skip
        if self.macs and found.macs > self.macs:
            reasons.append(f"{found.macs:,} MACs > {self.macs:,}")
        return reasons


DCASE24_BUDGET = Budget(param_bytes=128_000, bits=16, macs=30_000_000)


def complexity(arch: StudentArch, input_shape: tuple[int, int] = (256, 65)) -> Complexity:
    """Complexity of a student for one clip whose spectrogram is input_shape (mel bins, frames)."""
    model = Student(arch)
    return Complexity(count_parameters(model), count_macs(model, (1, arch.in_channels, *input_shape)))


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass, counted the way DCASE's NeSsi (torchinfo) counts them.

    A convolution costs its weight (and bias) count times the output's spatial size; any other
    module with parameters costs its parameter count once per example.
    """
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, nn.Conv2d):
            total += own * output.shape[0] * output.shape[2] * output.shape[3]
        elif own:
            total += own * output.shape[0]

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


class OverBudget(RuntimeError):
    """A student configuration over the space's complexity budget; it is not trained."""


def check_budget(arch: StudentArch, sample_rate: int, limit: Budget) -> Complexity:
    """The complexity of a student for 1-s clips at `sample_rate`; OverBudget, before training, over the budget."""
    frontend = FrontendConfig(sample_rate=sample_rate)
    found = complexity(arch, (frontend.n_mels, sample_rate // frontend.hop_length + 1))
    reasons = limit.violations(found)
    if reasons:
        raise OverBudget("over the complexity budget: " + "; ".join(reasons))
    return found
