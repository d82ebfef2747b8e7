"""(d) Search efficiency: the trial-epochs ASHA + TPE needs to come within 1 point of the best
accuracy an exhaustive grid finds, against the grid's trial-epochs.

    .venv/bin/python tests/benchmarks/bench_search_efficiency.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from common import ROOT, dataset
from trainables.synthetic_asc import SyntheticConfig

DATA = SyntheticConfig(seed=3, train_segments_per_class=6, val_segments_per_class=1, test_segments_per_class=1,
                       held_out_clips_per_segment=4)  # fmt: skip
EPOCHS = 4
GRID = {"lr": [0.002, 0.006, 0.02], "temperature": [1.0, 2.5, 4.0], "kd_lambda": [0.05, 0.3, 1.0]}
data_dir, _ = dataset(DATA)
env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
base = {"system": "asc_kd", "compare_without_kd": False, "epochs": EPOCHS, "batch_size": 32, "seed": 0,
        "teacher": {"pretrain": "none", "epochs": 4}}  # fmt: skip


def run(storage: str, name: str, space: dict) -> pd.DataFrame:
    path = Path(storage) / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, **space}))
    subprocess.run([sys.executable, "search/run.py", "--space", str(path), "--data", str(data_dir), "--storage", storage,
                    "--name", name], cwd=ROOT, check=True, capture_output=True, env=env)  # fmt: skip
    return pd.read_csv(Path(storage) / name / "leaderboard.csv")


with tempfile.TemporaryDirectory() as tmp:
    grid = run(tmp, "grid", {"sampler": "grid", "scheduler": {"type": "fifo"}, "search": {"subset": [10], **GRID}})
    assert len(grid) == 27 and len({tuple(r) for r in grid[list(GRID)].to_numpy()}) == 27
    best = grid["acc"].max()
    grid_epochs = int(grid["epochs"].sum())
    asha = run(tmp, "asha", {"samples": 27, "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
                             "search": {"subset": [10], **{k: {"low": min(v), "high": max(v)} for k, v in GRID.items()}}})
    # Trials in the order they started; count every epoch spent until one complete trial is within 1 point.
    asha["started"] = [json.loads(Path(d, "result.json").read_text().splitlines()[0])["timestamp"] for d in asha["trial_dir"]]
    asha = asha.sort_values("started")
    spent, reached = 0, None
    for _, row in asha.iterrows():
        spent += int(row["epochs"])
        if row["status"] == "complete" and row["acc"] >= best - 0.01:
            reached = spent
            break
total = int(asha["epochs"].sum())
if reached is None:
    print(f"grid best acc {best:.3f} in {grid_epochs} trial-epochs; ASHA+TPE did not come within 1 point in "
          f"{total} trial-epochs (its best {asha['acc'].max():.3f})")
else:
    print(f"grid best acc {best:.3f} in {grid_epochs} trial-epochs (27 configs x {EPOCHS}); ASHA+TPE came within "
          f"1 point after {reached} trial-epochs: ratio {reached / grid_epochs:.3f} ({total} trial-epochs in all)")
