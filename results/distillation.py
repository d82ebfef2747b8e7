"""What distillation did, read from a run directory: KD against no-KD per subset and device, the teachers'
accuracy, and the warnings a researcher must see before believing either.

All figures here are the test split (as comparison.csv): reported, never used to choose.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from results.leaderboard import comparison, device_columns
from results.trial_records import read_experiment
from trainables.prepared import DatasetError
from trainables.asc.data import load_prepared
from trainables.asc.logits_file import read_logits

CHANCE_MARGIN = 0.05  # a subset whose best student is within 5 points of chance has not learned to tell scenes apart
ALWAYS_UNSEEN = ("s4", "s5", "s6")  # TAU22's devices that occur in no training subset
_GROUPS = {"acc": "mean", "acc_seen": "seen", "acc_unseen": "unseen"}


def recorded_dataset(run_dir: Path) -> Path | None:
    """The prepared dataset the run read, as its record names it (relative to the storage, which holds the run)."""
    record = Path(run_dir) / "space.yaml"
    if not record.is_file():
        return None
    value = (yaml.safe_load(record.read_text()) or {}).get("dataset")
    path = Path(run_dir).resolve().parent / value if value else None
    return path if path is not None and path.is_dir() else None


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
    trained with kd_lambda = 1, and KD − no-KD."""
    compared = comparison(run_dir, metric, mode)
    if compared.empty:
        return pd.DataFrame()
    seeds: dict[str, list[dict]] = {}
    for record in read_experiment(Path(run_dir) / "confirm"):
        if record.status == "complete":
            seeds.setdefault(str(record.config["confirms"]), []).append(record.last)
    rows = []
    for subset, pair in compared.groupby("subset", sort=True):
        kd = pair[pair["student"] == "kd"].iloc[0]
        reference = pair[pair["student"] == "no_kd"].iloc[0]
        runs = seeds.get(str(kd["trial_id"]), [])
        for label, column in _figures(kd):
            values = pd.Series([r.get(column, math.nan) for r in runs] or [kd[column]], dtype=float)
            mean = float(values.mean())
            rows.append({"subset": int(subset), "figure": label, "kd": mean,
                         "kd_std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                         "kd_runs": max(1, len(runs)), "no_kd": float(reference.get(column, math.nan)),
                         "delta": mean - float(reference.get(column, math.nan)), "kd_trial": str(kd["trial_id"]),
                         "no_kd_trial": str(reference["trial_id"])})  # fmt: skip
    return pd.DataFrame(rows)


def _teacher_file(path: str, run_dir: Path) -> Path | None:
    """A teacher's logits file as a trial's config names it; found in this storage's cache if the storage moved."""
    named = Path(path)
    if named.is_file():
        return named
    moved = Path(run_dir).resolve().parent / "cache" / "teachers" / named.name
    return moved if moved.is_file() else None


def teacher_accuracy(run_dir: Path) -> pd.DataFrame:
    """Per subset, the teacher the students distilled from: its test accuracy overall, seen, unseen, per device."""
    paths: dict[str, str] = {}
    for record in read_experiment(Path(run_dir) / "search"):
        paths.update(record.config.get("teacher_logits") or {})
    rows = []
    for subset, path in sorted(paths.items(), key=lambda item: int(item[0])):
        found = _teacher_file(path, run_dir)
        if found is None:
            continue
        metrics = read_logits(found)["metrics"]
        row = {"subset": int(subset)}
        row.update({label: float(metrics[column]) for label, column in _figures(metrics)})
        rows.append(row)
    return pd.DataFrame(rows)


def warnings(board: pd.DataFrame, effect: pd.DataFrame, teachers: pd.DataFrame, n_classes: int) -> list[str]:
    """What makes a result not worth reading as it stands: students at chance, teachers below no-KD students."""
    found = []
    chance = 1.0 / n_classes
    if not board.empty:
        for subset, rows in board[board["status"] == "complete"].groupby("subset", sort=True):
            best = rows.iloc[0]
            column = "test_acc" if "test_acc" in best and pd.notna(best["test_acc"]) else "acc"
            if column in best and pd.notna(best[column]) and float(best[column]) - chance < CHANCE_MARGIN:
                found.append(f"Subset {subset}%: the best student's {column.replace('_', ' ')} {float(best[column]):.3f} "
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
