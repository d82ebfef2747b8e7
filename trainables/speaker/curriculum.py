"""OS-KDFT2's data curriculum: the share of target-domain audio in the distillation branch.

The distillation branch starts mostly on out-of-domain speech (LibriSpeech, what the teacher was
trained on) and ends on the target domain (VoxCeleb). The share `p` of target-domain utterances
grows from `p0` at the first epoch to 1 at the last; within an epoch it is constant and every
distillation utterance is drawn from the target domain with probability `p` (the notes' §2).

Epochs are **1-based**: epoch 1 is the first, epoch `epochs` the last. With s = (epoch − 1) /
(epochs − 1) the progress in [0, 1] (s = 1 when there is a single epoch):

- `linear` (the paper's): p = p0 + (1 − p0) · s. With p0 = 1/epochs this is exactly OS-KDFT2's
  p = epoch / epochs (1 % at epoch 1 of 100, 100 % at epoch 100).
- `cosine`: p = p0 + (1 − p0) · (1 − cos(π s)) / 2: slow at both ends, fastest midway.
- `exponential`: p = p0 · (1 / p0)^s, geometric growth (doubling at a constant rate); needs p0 > 0.
- `step`: p0 for the first half of training (s < 0.5), 1 from the middle on: the abrupt switch
  of the PostComp baseline (which switches at 90 %), as a contrast to the gradual schedules.
- `constant`: p0 throughout, the ablation without a curriculum (the one schedule that does not
  reach 1 at the last epoch unless p0 = 1).

Every other schedule gives exactly 1.0 at the last epoch.
"""

from __future__ import annotations

import math

SCHEDULES = ("linear", "cosine", "exponential", "step", "constant")


def target_share(schedule: str, p0: float, epoch: int, epochs: int) -> float:
    """Probability that a distillation utterance comes from the target domain in `epoch` (1-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if not 0.0 <= p0 <= 1.0:
        raise ValueError(f"p0 must be in [0, 1], got {p0}")
    if epochs < 1 or not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be in 1..{epochs}, got {epoch}")
    s = 1.0 if epochs == 1 else (epoch - 1) / (epochs - 1)
    if schedule == "constant":
        return p0
    if s >= 1.0:
        return 1.0
    if schedule == "linear":
        return p0 + (1.0 - p0) * s
    if schedule == "cosine":
        return p0 + (1.0 - p0) * (1.0 - math.cos(math.pi * s)) / 2.0
    if schedule == "exponential":
        if p0 <= 0.0:
            raise ValueError("the exponential schedule needs p0 > 0")
        return p0 ** (1.0 - s)
    return p0 if s < 0.5 else 1.0
