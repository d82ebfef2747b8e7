"""What distillation did, read from a run directory: KD against no-KD per subset and device, the teachers'
accuracy, and the warnings a researcher must see before believing either.

All figures here are the test split (as comparison.csv): reported, never used to choose.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from results.leaderboard import build_leaderboard, comparison, device_columns
from trainables.asc.data import load_prepared
from trainables.asc.logits_file import read_logits
from trainables.atomic import write_file
from trainables.prepared import DatasetError

CHANCE_MARGIN = 0.05  # a subset whose best student is within 5 points of chance has not learned to tell scenes apart
ALWAYS_UNSEEN = ("s4", "s5", "s6")  # TAU22's devices that occur in no training subset
_GROUPS = {"acc": "mean", "acc_seen": "seen", "acc_unseen": "unseen"}


def unseen_devices(subsets: list[int], devices: list[str], data_dir: Path | None) -> dict[int, set[str]]:
    """Per subset, the devices none of its training clips come from: from the dataset when it is at hand,
    else TAU22's s4–s6 (a subset may miss more of b, c, s1–s3 than that)."""
    data = None
    if data_dir is not None:
        try:
            data = load_prepared(data_dir)
        except (DatasetError, OSError):
            data = None
    found = {}
    for subset in subsets:
        if data is not None and f"split{subset}" in data.splits:
            found[subset] = set(devices) - set(data.train_devices(subset))
        else:
            found[subset] = {d for d in devices if d in ALWAYS_UNSEEN}
    return found


def _figures(row: dict | pd.Series) -> list[tuple[str, str]]:
    """(label, test column) for the mean, seen, unseen and each device, in that order."""
    keys = row.keys() if isinstance(row, dict) else row.index
    devices = device_columns(dict.fromkeys(keys), prefix="test_acc_")
    return [(label, f"test_{k}") for k, label in _GROUPS.items() if f"test_{k}" in keys] + [
        (d, f"test_acc_{d}") for d in devices]  # fmt: skip


def kd_effect(run_dir: Path, metric: str, mode: str) -> pd.DataFrame:
    """One row per subset and figure (mean, seen, unseen, each device): the best KD student's test accuracy
    (mean and standard deviation over its confirmation seeds when it was confirmed), the same configuration
    trained with kd_lambda = 1 (mean and standard deviation over the references' seeds), and KD − no-KD."""
    compared = comparison(run_dir, metric, mode)
    if compared.empty:
        return pd.DataFrame()
    rows = []
    for subset, pair in compared.groupby("subset", sort=True):
        kd = pair[pair["student"] == "kd"].iloc[0]
        reference = pair[pair["student"] == "no_kd"].iloc[0]
        for label, column in _figures(kd):
            rows.append({"subset": int(subset), "figure": label, "kd": float(kd[column]),
                         "kd_std": float(kd.get(f"{column}_std", math.nan)), "kd_runs": int(kd.get("runs", 1)),
                         "no_kd": float(reference.get(column, math.nan)),
                         "no_kd_std": float(reference.get(f"{column}_std", math.nan)),
                         "no_kd_runs": int(reference.get("runs", 1)),
                         "delta": float(kd[column]) - float(reference.get(column, math.nan)),
                         "kd_trial": str(kd["trial_id"]), "no_kd_trial": str(reference["trial_id"])})  # fmt: skip
    return pd.DataFrame(rows)


TEACHERS = "teachers.csv"


def write_teachers(run_dir: Path, paths: dict[int, Path]) -> Path:
    """teachers.csv: per subset, the test figures of the teacher its students distil from, under the students'
    column names (test_acc, test_macro_acc, test_acc_unseen, test_acc_<device>, test_acc_seen), and its logits file."""
    rows = []
    for subset, path in sorted(paths.items()):
        metrics = read_logits(path)["metrics"]
        devices = [f"test_acc_{d}" for d in device_columns(metrics, prefix="test_acc_")]
        columns = ["test_acc", "test_macro_acc", "test_acc_unseen", *devices, "test_acc_seen"]
        rows.append({"subset": int(subset), **{c: float(metrics.get(c, math.nan)) for c in columns}, "logits": str(path)})
    target = Path(run_dir) / TEACHERS
    write_file(target, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    return target


def teacher_accuracy(run_dir: Path) -> pd.DataFrame:
    """Per subset, the teacher the students distilled from (teachers.csv): its test accuracy overall, seen, unseen,
    per device."""
    table = Path(run_dir) / TEACHERS
    if not table.is_file():
        return pd.DataFrame()
    rows = []
    for _, teacher in pd.read_csv(table).iterrows():
        figures = teacher.dropna()
        rows.append({"subset": int(teacher["subset"]), **{label: float(figures[c]) for label, c in _figures(figures)}})
    return pd.DataFrame(rows)


def print_warnings(run_dir: Path, metric: str, mode: str, n_classes: int) -> None:
    """The report's warnings, on the console too: a new user reads the screen before the report."""
    board = build_leaderboard(run_dir, metric, mode)
    for line in warnings(board, kd_effect(run_dir, metric, mode), teacher_accuracy(run_dir), n_classes):
        print(f"Warning: {line}")


def warnings(board: pd.DataFrame, effect: pd.DataFrame, teachers: pd.DataFrame, n_classes: int) -> list[str]:
    """What makes a result not worth reading as it stands: students at chance, teachers below no-KD students."""
    found = []
    chance = 1.0 / n_classes
    if not board.empty:
        for subset, rows in board[board["status"] == "complete"].groupby("subset", sort=True):
            best = rows.iloc[0]
            column = "test_acc" if "test_acc" in best and pd.notna(best["test_acc"]) else "acc"
            # A confirmed configuration is judged by its seeds' mean, as it is ranked, not by its one search run.
            value = best.get(f"confirmed_{column}", math.nan)
            value = best.get(column, math.nan) if pd.isna(value) else value
            if pd.notna(value) and float(value) - chance < CHANCE_MARGIN:
                found.append(f"Subset {subset}%: the best student's {column.replace('_', ' ')} {float(value):.3f} "
                             f"is within {CHANCE_MARGIN * 100:.0f} points of chance ({chance:.3f} for {n_classes} "
                             "classes): it has not learned the scenes, so its ranking and the KD comparison say "
                             "nothing yet. Train longer (epochs) or on more data.")  # fmt: skip
    if not teachers.empty and not effect.empty:
        means = effect[effect["figure"] == "mean"].set_index("subset")
        for _, teacher in teachers.iterrows():
            subset = int(teacher["subset"])
            if subset in means.index and "mean" in teacher and teacher["mean"] < means.loc[subset, "no_kd"]:
                found.append(f"Subset {subset}%: the teacher ({teacher['mean']:.3f} test accuracy) is weaker than "
                             f"the student trained without it ({means.loc[subset, 'no_kd']:.3f}): distilling from it "
                             "can only pull the student down. Train the teacher longer or give it better weights.")  # fmt: skip
    return found
