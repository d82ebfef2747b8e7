"""(a) The service's overhead: 8 trials through search/run.py, one at a time, against the same 8
trainings of the same settings called directly in one process without Ray. Target: at most 1.10.

    .venv/bin/python tests/benchmarks/bench_service_overhead.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from common import dataset, run_search

from trainables.asc.student_training import StudentConfig, train_student
from trainables.asc.synthetic import SyntheticConfig

DATA = SyntheticConfig(train_segments_per_class=10, val_segments_per_class=1, test_segments_per_class=1,
                       held_out_clips_per_segment=4)  # fmt: skip
FIXED = {"epochs": 3, "batch_size": 32, "kd_lambda": 1.0, "subset": 25}
data_dir, data = dataset(DATA)
LRS = [0.002 * 10 ** (i / 7) for i in range(8)]  # fixed here; the search draws its own


def direct() -> float:
    """The same kind of 8 trainings called directly, one after the other, in this process."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    for lr in LRS:
        train_student(StudentConfig(**FIXED, lr=lr), data, None, lambda m, c: c(), device=torch.device("cpu"))
    return time.perf_counter() - started


# The machine's speed drifts by several percent over minutes: time the direct runs before and after the
# service and compare with their mean.
before = direct()
with tempfile.TemporaryDirectory() as tmp:
    space = Path(tmp) / "overhead.yaml"
    space.write_text(yaml.safe_dump({
        "system": "asc_kd", "samples": 8, "max_concurrent": 1, "compare_without_kd": False,
        "search": {"subset": [25], "lr": {"low": 0.002, "high": 0.02, "log": True}},
        "scheduler": {"type": "fifo"}, "resources": {"cpus_per_trial": 1},
        **{k: v for k, v in FIXED.items() if k != "subset"},
    }))  # fmt: skip
    service = run_search("--space", str(space), "--data", str(data_dir), "--storage", tmp, "--name", "overhead")
    board = pd.read_csv(Path(tmp) / "overhead" / "leaderboard.csv")
    assert len(board) == 8 and (board["status"] == "complete").all()
    # Each trial's own wall time as Tune measured it: what the trials cost, apart from the service around them.
    in_trials = sum(pd.read_json(Path(d) / "result.json", lines=True)["time_total_s"].iloc[-1] for d in board["trial_dir"])
after = direct()
plain = (before + after) / 2
print(f"8 trials through search/run.py (one at a time, whole command): {service:.1f} s; 8 such trainings "
      f"called directly: {before:.1f} s before, {after:.1f} s after; ratio {service / plain:.3f} (target <= 1.10)")
print(f"  inside the 8 Tune trials: {in_trials:.1f} s ({in_trials / plain:.3f} of direct); the rest of the command "
      f"(start-up, Ray, scheduling, leaderboard, export, report): {service - in_trials:.1f} s")
