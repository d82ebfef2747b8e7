"""Does mixed precision move accuracy? The same student (and tiny PaSST teacher) trained with several seeds in
fp32 and in bf16 autocast; the difference of the means against the seed-to-seed spread.

    .venv/bin/python tests/benchmarks/bench_precision.py [--seeds 3] [--epochs 6] [--device cuda]

On a CPU bf16 autocast is emulated and slow; the question is numerical, so the CPU answers it too.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import dataset

from trainables.asc.student_training import StudentConfig, train_student
from trainables.asc.teacher import TeacherConfig
from trainables.asc.teacher_training import train_teacher

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, default=3)
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--device", default="cpu")
parser.add_argument("--teacher", action="store_true", help="also the tiny PaSST teacher")
args = parser.parse_args()
device = torch.device(args.device)
torch.set_num_threads(1)
_, data = dataset()


def student(seed: int, precision: str) -> float:
    config = StudentConfig(subset=100, epochs=args.epochs, batch_size=32, kd_lambda=1.0, seed=seed, precision=precision)
    return train_student(config, data, None, lambda m, c: None, device=device)["test_acc"]


def teacher(seed: int, precision: str) -> float:
    config = TeacherConfig(epochs=args.epochs, seed=seed, precision=precision)
    return train_teacher(config, data, 100, device=device)[1]["acc"]


for name, train in [("student", student)] + ([("teacher", teacher)] if args.teacher else []):
    found = {p: np.array([train(seed, p) for seed in range(args.seeds)]) for p in ("fp32", "bf16")}
    spread = max(found["fp32"].std(ddof=1), found["bf16"].std(ddof=1))
    shift = found["bf16"].mean() - found["fp32"].mean()
    print(f"{name}: fp32 {found['fp32'].mean():.3f} ± {found['fp32'].std(ddof=1):.3f}, bf16 {found['bf16'].mean():.3f} "
          f"± {found['bf16'].std(ddof=1):.3f} over {args.seeds} seeds ({args.device}); bf16 moves the mean by "
          f"{shift:+.3f}, the seed spread (std) is {spread:.3f}: {'within' if abs(shift) < spread else 'OUTSIDE'} it",
          flush=True)  # fmt: skip
