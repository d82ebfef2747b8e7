"""(a) The service's overhead: 8 trials through search/run.py, one at a time, against the same 8
trainings called directly in one process without Ray. Target: at most 1.10.

    .venv/bin/python tests/benchmarks/bench_service_overhead.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from common import ROOT, dataset
from trainables.student_training import StudentConfig, train_student
from trainables.synthetic_asc import SyntheticConfig

DATA = SyntheticConfig(train_segments_per_class=10, val_segments_per_class=1, test_segments_per_class=1,
                       held_out_clips_per_segment=4)  # fmt: skip
FIXED = {"epochs": 3, "batch_size": 32, "kd_lambda": 1.0, "subset": 25}
data_dir, data = dataset(DATA)

with tempfile.TemporaryDirectory() as tmp:
    space = Path(tmp) / "overhead.yaml"
    space.write_text(yaml.safe_dump({
        "system": "asc_kd", "samples": 8, "max_concurrent": 1, "compare_without_kd": False,
        "search": {"subset": [25], "lr": {"low": 0.002, "high": 0.02, "log": True}},
        "scheduler": {"type": "fifo"}, "resources": {"cpus_per_trial": 1},
        **{k: v for k, v in FIXED.items() if k != "subset"},
    }))  # fmt: skip
    command = [sys.executable, "search/run.py", "--space", str(space), "--data", str(data_dir), "--storage", tmp,
               "--name", "overhead"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    service = time.perf_counter() - started
    board = pd.read_csv(Path(tmp) / "overhead" / "leaderboard.csv")

torch.set_num_threads(1)
started = time.perf_counter()
for lr in board["lr"]:
    train_student(StudentConfig(**FIXED, lr=float(lr)), data, None, lambda m, c: c(), device=torch.device("cpu"))
direct = time.perf_counter() - started
print(f"8 trials through search/run.py (one at a time, whole command): {service:.1f} s; the same 8 trainings "
      f"called directly: {direct:.1f} s; ratio {service / direct:.3f} (target <= 1.10)")
