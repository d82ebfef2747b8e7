"""Rank a run's trials per subset by device-wise accuracy, write leaderboard.csv, print the top.

Ranking, within each subset: trials that ran every epoch first, then trials stopped early, then
failed ones; inside each group by the ranking metric of their last epoch (validation split).
The `test_*` columns are the test-split figures of the last epoch, present for complete trials.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from results.trial_records import TrialRecord, read_experiment
from trainables.metrics import device_sort_key

_STATUS_ORDER = {"complete": 0, "stopped": 1, "failed": 2}
_SUMMARY = ["acc", "acc_seen", "acc_unseen", "macro_acc"]


def searched_names(run_dir: Path) -> list[str]:
    record = yaml.safe_load((Path(run_dir) / "space.yaml").read_text())
    return [d["name"] for d in record["search"]]


def device_columns(metrics: dict, prefix: str = "acc_") -> list[str]:
    """Device names found among metric keys like acc_a, acc_s4 (group and summary keys excluded)."""
    devices = [k[len(prefix) :] for k in metrics if k.startswith(prefix)]
    return sorted((d for d in devices if d not in ("seen", "unseen")), key=device_sort_key)


def _rows(records: list[TrialRecord], params: list[str]) -> list[dict]:
    rows = []
    for record in records:
        last = record.last
        metrics = {k: v for k, v in last.items() if k.startswith(("acc", "macro_acc", "test_"))}
        row = {"trial_id": record.trial_id, "subset": int(record.config["subset"]), "status": record.status,
               "epochs": record.epochs_done, **{p: record.config.get(p) for p in params}, **metrics,
               "train_loss": last.get("train_loss"), "error": record.error or "",
               "trial_dir": str(record.directory)}  # fmt: skip
        rows.append(row)
    return rows


def rank(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Sort best first within each subset and number the ranks from 1."""
    if frame.empty:
        return frame.assign(rank=pd.Series(dtype=int))
    sign = -1 if mode == "max" else 1
    key = frame[metric].astype(float) * sign if metric in frame else pd.Series(0.0, index=frame.index)
    frame = frame.assign(_status=frame["status"].map(_STATUS_ORDER), _key=key.fillna(math.inf))
    frame = frame.sort_values(["subset", "_status", "_key"], kind="stable").drop(columns=["_status", "_key"])
    frame.insert(0, "rank", frame.groupby("subset").cumcount() + 1)
    return frame.reset_index(drop=True)


def _ordered_columns(frame: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    devices = device_columns(dict.fromkeys(frame.columns))
    test_devices = device_columns(dict.fromkeys(frame.columns), prefix="test_acc_")
    head = ["rank", "trial_id", "subset", "status", "epochs", *params]
    metrics = _SUMMARY + [f"acc_{d}" for d in devices]
    tests = [f"test_{m}" for m in _SUMMARY] + [f"test_acc_{d}" for d in test_devices]
    ordered = [c for c in head + metrics + tests + ["train_loss", "error", "trial_dir"] if c in frame]
    return frame[ordered + [c for c in frame.columns if c not in ordered]]


def build_leaderboard(run_dir: Path, metric: str, mode: str, experiment: str = "search") -> pd.DataFrame:
    params = searched_names(run_dir)
    frame = pd.DataFrame(_rows(read_experiment(Path(run_dir) / experiment), params))
    if frame.empty:
        return frame
    return _ordered_columns(rank(frame, metric, mode), params)


def comparison(run_dir: Path, metric: str, mode: str) -> pd.DataFrame:
    """Per subset: the best student's test figures next to the same configuration trained with kd_lambda = 1."""
    board = build_leaderboard(run_dir, metric, mode)
    references = build_leaderboard(run_dir, metric, mode, experiment="no_kd")
    if board.empty or references.empty:
        return pd.DataFrame()
    rows = []
    for subset, best in board[board["status"] == "complete"].groupby("subset"):
        reference = references[(references["subset"] == subset) & (references["status"] == "complete")]
        if reference.empty:
            continue
        for label, row in (("kd", best.iloc[0]), ("no_kd", reference.iloc[0])):
            rows.append({"subset": subset, "student": label, "trial_id": row["trial_id"],
                         **{c: row[c] for c in row.index if c.startswith("test_")}})  # fmt: skip
    return pd.DataFrame(rows)


def write_tables(run_dir: Path, metric: str, mode: str) -> pd.DataFrame:
    board = build_leaderboard(run_dir, metric, mode)
    board.to_csv(Path(run_dir) / "leaderboard.csv", index=False)
    compared = comparison(run_dir, metric, mode)
    if not compared.empty:
        compared.to_csv(Path(run_dir) / "comparison.csv", index=False)
    return board


def _format(value) -> str:
    if isinstance(value, float):
        return "  -  " if math.isnan(value) else f"{value:.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


def print_leaderboard(board: pd.DataFrame, metric: str, params: list[str], top: int = 3) -> None:
    if board.empty:
        print("No trials finished.")
        return
    devices = device_columns(dict.fromkeys(board.columns))
    columns = ["rank", "trial_id", "status", *params, "acc", "acc_unseen", *[f"acc_{d}" for d in devices]]
    print(f"\nLeaderboard (validation split, ranked by {metric}; full table in leaderboard.csv)")
    for subset, rows in board.groupby("subset"):
        failed = int((rows["status"] == "failed").sum())
        print(f"\nSubset {subset}%: {len(rows)} trials" + (f", {failed} failed" if failed else ""))
        shown = rows.head(top)[[c for c in columns if c in rows]]
        print(shown.to_string(index=False, formatters={c: _format for c in shown.columns}))


def print_comparison(run_dir: Path, metric: str, mode: str) -> None:
    compared = comparison(run_dir, metric, mode)
    if compared.empty:
        return
    devices = device_columns(dict.fromkeys(compared.columns), prefix="test_acc_")
    columns = ["subset", "student", "test_acc", "test_acc_unseen", *[f"test_acc_{d}" for d in devices]]
    print("\nWhat distillation did (test split; no_kd = the best configuration retrained with kd_lambda = 1)")
    shown = compared[[c for c in columns if c in compared]]
    print(shown.to_string(index=False, formatters={c: _format for c in shown.columns}))
