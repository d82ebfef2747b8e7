"""(d) Search efficiency: the trial-epochs ASHA + TPE needs to come within 1 point of the best
accuracy an exhaustive grid finds, against the grid's trial-epochs.

Both searches run through search/run.py on the same data, subset and teacher (trained once, cached):
the grid tries all 27 combinations of three values each of lr, temperature and kd_lambda for every
epoch; TPE searches the same ranges as continuous intervals with 27 trials while ASHA stops weak
ones early. Epochs are counted in the order they were reported, until ASHA + TPE holds a complete
trial whose validation accuracy is within 1 point of the grid's best.

    .venv/bin/python tests/benchmarks/bench_search_efficiency.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from common import dataset, run_search

from trainables.asc.synthetic import SyntheticConfig

# ~820 training clips; a validation split of 1,800 clips (2 segments per scene, 10 clips of each of
# the 9 devices), so one point of accuracy is about 18 clips rather than noise.
DATA = SyntheticConfig(seed=3, train_segments_per_class=6, val_segments_per_class=2, test_segments_per_class=1,
                       held_out_clips_per_segment=10)  # fmt: skip
EPOCHS = 6
SUBSET = 100
GRID = {"lr": [0.002, 0.006, 0.02], "temperature": [1.0, 2.5, 4.0], "kd_lambda": [0.05, 0.3, 1.0]}
data_dir, _ = dataset(DATA)
base = {"system": "asc_kd", "compare_without_kd": False, "epochs": EPOCHS, "batch_size": 32, "seed": 0,
        "teacher": {"pretrain": "none", "epochs": 6}}  # fmt: skip


def run(storage: str, name: str, space: dict) -> pd.DataFrame:
    path = Path(storage) / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, **space}))
    seconds = run_search("--space", str(path), "--data", str(data_dir), "--storage", storage, "--name", name)
    print(f"{name}: {seconds:.0f} s", flush=True)
    return pd.read_csv(Path(storage) / name / "leaderboard.csv", dtype={"trial_id": str})


def epochs_until(board: pd.DataFrame, target: float) -> int | None:
    """Trial-epochs reported, in time order, up to the last epoch of the first complete trial reaching `target`."""
    complete = dict(zip(board["trial_id"], board["status"] == "complete"))
    events = []
    for trial_dir in board["trial_dir"]:
        for line in Path(trial_dir, "result.json").read_text().splitlines():
            if line.strip():
                result = json.loads(line)
                events.append((result["timestamp"], result["time_total_s"], result))
    events.sort(key=lambda event: event[:2])
    for spent, (_, _, result) in enumerate(events, 1):
        if complete[result["trial_id"]] and result["training_iteration"] == EPOCHS and result["acc"] >= target:
            return spent
    return None


with tempfile.TemporaryDirectory() as tmp:
    grid = run(tmp, "grid", {"sampler": "grid", "scheduler": {"type": "fifo"}, "search": {"subset": [SUBSET], **GRID}})
    assert len(grid) == 27 and len({tuple(r) for r in grid[list(GRID)].to_numpy()}) == 27
    assert (grid["status"] == "complete").all()
    best = float(grid["acc"].max())
    grid_epochs = int(grid["epochs"].sum())
    ranges = {k: {"low": min(v), "high": max(v), "log": k == "lr"} for k, v in GRID.items()}
    asha = run(tmp, "asha", {"samples": 27, "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
                             "search": {"subset": [SUBSET], **ranges}})  # fmt: skip
    reached = epochs_until(asha, best - 0.01)

total = int(asha["epochs"].sum())
print(f"grid: best validation acc {best:.3f} in {grid_epochs} trial-epochs (27 configurations x {EPOCHS} epochs)")
print(f"ASHA + TPE: {total} trial-epochs in all, {int((asha['status'] == 'complete').sum())} of 27 trials complete, "
      f"its best {asha['acc'].max():.3f}")
if reached is None:
    print("ASHA + TPE never came within 1 point of the grid's best")
else:
    print(f"ASHA + TPE came within 1 point after {reached} trial-epochs: ratio {reached / grid_epochs:.3f}")
