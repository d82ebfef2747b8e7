"""Rank a run's trials per subset by device-wise accuracy, write leaderboard.csv, print the top.

Ranking, within each subset: configurations confirmed with several seeds first, by the mean of
their ranking metric over the seeds; then trials that ran every epoch, then trials stopped early,
then failed ones, each by the ranking metric of their last epoch (validation split).
The `test_*` columns are the test-split figures of the last epoch, present for complete trials; on real data
`full_test_*` are those of all of test.csv, the set of the published tables (the validation half included);
`confirmed_*` columns are means (and `_std` the standard deviation) over the confirmation seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from results.run_record import dimensions, read_record, searched_names
from results.trial_records import TrialRecord, confirmation_experiments, read_experiment
from trainables.asc.metrics import DEVICE_GROUPS, device_sort_key
from trainables.atomic import write_file

_STATUS_ORDER = {"complete": 0, "stopped": 1, "failed": 2}
# Reported keys that are results (the rest is Tune's bookkeeping): device-wise accuracy, EER, sizes.
# A student trial reports its size (params, param_bytes, macs, within_budget: search/trials.py student_trial).
_METRIC_PREFIXES = ("acc", "macro_acc", "test_", "full_test_", "eer", "min_dcf", "student_params", "teacher_params",
                    "params", "param_bytes", "macs", "within_budget",
                    "train_speakers")  # OS-KDFT2: the speakers its training saw
_SUMMARY = ["acc", "acc_seen", "acc_unseen", "macro_acc"]


def device_columns(metrics: dict, prefix: str = "acc_") -> list[str]:
    """Device names found among metric keys like acc_a, acc_s4 (group and summary keys excluded, and spreads over
    seeds: test_acc_std is the spread of test_acc, not a device "std")."""
    devices = [k[len(prefix) :] for k in metrics if k.startswith(prefix)]
    return sorted((d for d in devices if d not in DEVICE_GROUPS and d != "std" and not d.endswith("_std")),
                  key=device_sort_key)  # fmt: skip


def _rows(records: list[TrialRecord], params: list[str]) -> list[dict]:
    rows = []
    for record in records:
        last = record.last
        metrics = {k: v for k, v in last.items() if k.startswith(_METRIC_PREFIXES)}
        row = {"trial_id": record.trial_id, "subset": int(record.config.get("subset", 0)), "status": record.status,
               "epochs": record.epochs_done, **{p: record.config.get(p) for p in params}, **metrics,
               "train_loss": last.get("train_loss"),
               "error": record.error or "", "trial_dir": str(record.directory)}  # fmt: skip
        rows.append(row)
    return rows


def rank(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Sort best first within each subset and number the ranks from 1."""
    if frame.empty:
        return frame.assign(rank=pd.Series(dtype=int))
    sign = -1 if mode == "max" else 1
    key = frame[metric].astype(float) * sign if metric in frame else pd.Series(0.0, index=frame.index)
    confirmed = f"confirmed_{metric}"
    ckey = frame[confirmed].astype(float) * sign if confirmed in frame else pd.Series(math.nan, index=frame.index)
    frame = frame.assign(_unconfirmed=ckey.isna(), _ckey=ckey.fillna(math.inf),
                         _status=frame["status"].map(_STATUS_ORDER), _key=key.fillna(math.inf))  # fmt: skip
    order = ["subset", "_unconfirmed", "_ckey", "_status", "_key"]
    frame = frame.sort_values(order, kind="stable").drop(columns=order[1:])
    frame.insert(0, "rank", frame.groupby("subset").cumcount() + 1)
    return frame.reset_index(drop=True)


def _ordered_columns(frame: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    devices = device_columns(dict.fromkeys(frame.columns))
    test_devices = device_columns(dict.fromkeys(frame.columns), prefix="test_acc_")
    head = ["rank", "trial_id", "subset", "status", "epochs", *params, *[c for c in frame if c.startswith("confirmed_")]]
    groups = ["acc_real", "acc_sim_seen"]
    metrics = ["eer", "min_dcf", "test_eer", "test_min_dcf", *_SUMMARY, *groups, *[f"acc_{d}" for d in devices]]
    tests = [f"{split}_{m}" for split in ("test", "full_test") for m in [*_SUMMARY, *groups]]
    tests += [f"{split}_acc_{d}" for split in ("test", "full_test") for d in test_devices]
    sizes = ["params", "param_bytes", "macs", "within_budget"]
    ordered = [c for c in head + metrics + tests + sizes + ["train_loss", "error", "trial_dir"] if c in frame]
    return frame[ordered + [c for c in frame.columns if c not in ordered]]


def confirmation_runs(run_dir: Path, params: list[str], search: list[TrialRecord]) -> dict[str, list[dict]]:
    """Per search trial id (of `search`, the run's search trials), the last results of the complete confirmation
    runs of its configuration: the runs of the confirmation experiments with its subset and searched values
    (`params`), and another seed."""

    def key(config: dict) -> tuple:
        return (int(config.get("subset", 0)), *(json.dumps(config.get(p)) for p in params))

    trials: dict[tuple, list[str]] = {}
    for record in search:
        trials.setdefault(key(record.config), []).append(record.trial_id)
    runs: dict[str, list[dict]] = {}
    for experiment in confirmation_experiments(run_dir):
        for record in read_experiment(experiment):
            if record.status == "complete":
                for trial_id in trials.get(key(record.config), []):
                    runs.setdefault(trial_id, []).append(record.last)
    return runs


def confirmations(runs: dict[str, list[dict]], metric: str) -> pd.DataFrame:
    """Per confirmed search trial (`runs`: confirmation_runs): mean and spread of its configuration over the seeds."""
    rows = []
    for trial_id, results in runs.items():
        row = {"trial_id": trial_id, "confirmed_runs": len(results)}
        for name in (metric, "test_acc", "test_macro_acc", "test_acc_unseen"):
            values = pd.Series([r.get(name, math.nan) for r in results], dtype=float)
            row[f"confirmed_{name}"] = values.mean()
            row[f"confirmed_{name}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def build_leaderboard(run_dir: Path, metric: str, mode: str, experiment: str = "search") -> pd.DataFrame:
    record = read_record(run_dir)
    params = list(dimensions(record))
    trials = read_experiment(Path(run_dir) / experiment)
    frame = pd.DataFrame(_rows(trials, params))
    if frame.empty:
        return frame
    confirmed = pd.DataFrame()
    if experiment == "search":
        confirmed = confirmations(confirmation_runs(run_dir, params, trials), metric)
    if not confirmed.empty:
        frame = frame.merge(confirmed, on="trial_id", how="left")
    return _ordered_columns(rank(frame, metric, mode), params)


def summary(board: pd.DataFrame) -> dict:
    """DCASE's rank score: the mean over subsets of each subset's best (confirmed, if confirmed) test macro accuracy."""
    subsets = {}
    for subset, rows in board[board["status"] == "complete"].groupby("subset"):
        best = rows.iloc[0]
        confirmed = "confirmed_test_macro_acc" in best and not pd.isna(best["confirmed_test_macro_acc"])
        subsets[int(subset)] = {
            "trial_id": str(best["trial_id"]),
            "test_macro_acc": float(best["confirmed_test_macro_acc"] if confirmed else best.get("test_macro_acc", math.nan)),
            "test_macro_acc_std": float(best["confirmed_test_macro_acc_std"]) if confirmed else None,
            "confirmed_runs": int(best["confirmed_runs"]) if confirmed else 0,
        }  # fmt: skip
    score = sum(s["test_macro_acc"] for s in subsets.values()) / len(subsets) if subsets else math.nan
    return {"rank_score": score, "subsets": subsets}


def comparison(run_dir: Path, metric: str, mode: str) -> pd.DataFrame:
    """Per subset: the best student's test figures next to the same configuration trained with kd_lambda = 1.

    Where a side ran with several seeds (the best configuration's confirmation seeds; the references' seeds),
    each test_* figure is their mean, `<figure>_std` their standard deviation and `runs` their number."""
    board = build_leaderboard(run_dir, metric, mode)
    references = build_leaderboard(run_dir, metric, mode, experiment="no_kd")
    if board.empty or references.empty:
        return pd.DataFrame()
    confirmed = confirmation_runs(run_dir, searched_names(run_dir), read_experiment(Path(run_dir) / "search"))
    rows = []
    for subset, best in board[board["status"] == "complete"].groupby("subset"):
        reference = references[(references["subset"] == subset) & (references["status"] == "complete")]
        if reference.empty:
            continue
        kd = best.iloc[0]
        kd_runs = confirmed.get(str(kd["trial_id"])) or [kd.to_dict()]
        for label, trial_id, runs in (("kd", kd["trial_id"], kd_runs),
                                      ("no_kd", reference.iloc[0]["trial_id"], [r.to_dict() for _, r in reference.iterrows()])):
            rows.append({"subset": subset, "student": label, "trial_id": trial_id, "runs": len(runs),
                         **seed_statistics(runs, [c for c in best.columns if c.startswith("test_")])})  # fmt: skip
    return pd.DataFrame(rows)


def seed_statistics(runs: list[dict], columns: list[str]) -> dict[str, float]:
    """Each column's mean over `runs`, and its standard deviation as `<column>_std` (NaN for a single run)."""
    stats: dict[str, float] = {}
    for column in columns:
        values = pd.Series([r.get(column, math.nan) for r in runs], dtype=float)
        stats[column] = float(values.mean())
        stats[f"{column}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return stats


def write_tables(run_dir: Path, metric: str, mode: str) -> pd.DataFrame:
    board = build_leaderboard(run_dir, metric, mode)
    write_file(Path(run_dir) / "leaderboard.csv", lambda tmp: board.to_csv(tmp, index=False))
    if not board.empty and "test_macro_acc" in board:
        text = json.dumps(summary(board), indent=1)
        write_file(Path(run_dir) / "summary.json", lambda tmp: tmp.write_text(text))
    compared = comparison(run_dir, metric, mode)
    if not compared.empty:
        write_file(Path(run_dir) / "comparison.csv", lambda tmp: compared.to_csv(tmp, index=False))
    return board


def _format(value) -> str:
    if isinstance(value, float):
        return "  -  " if math.isnan(value) else f"{value:.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


def print_leaderboard(board: pd.DataFrame, metric: str, params: list[str], top: int = 3) -> None:
    """Each subset's top trials with their key figures; per-device columns are in leaderboard.csv and the report."""
    if board.empty:
        print("No trials finished.")
        return
    confirmed = [f"confirmed_{metric}", f"confirmed_{metric}_std"] if f"confirmed_{metric}" in board else []
    columns = list(dict.fromkeys(["rank", "trial_id", "status", "epochs", *params, *confirmed, "eer", "min_dcf",
                                  "test_eer", "test_min_dcf", metric, "acc", "acc_seen", "acc_unseen", "test_acc",
                                  "test_acc_unseen"]))  # fmt: skip (a metric among the usual columns is shown once)
    print(f"Leaderboard (validation split, ranked by {metric}; test_* from the test split; every column in leaderboard.csv)")
    for subset, rows in board.groupby("subset"):
        counts = rows["status"].value_counts()
        tally = ", ".join(f"{counts[s]} {s}" for s in _STATUS_ORDER if s in counts)
        title = f"Subset {subset}%" if subset else "All trials"
        print(f"{title}: {len(rows)} trials ({tally})" + (f", top {top}" if len(rows) > top else ""))
        shown = rows.head(top)[[c for c in columns if c in rows]]
        print(shown.to_string(index=False, formatters={c: _format for c in shown.columns}))


def print_summary(board: pd.DataFrame) -> None:
    if board.empty:
        return
    result = summary(board)
    cells = ", ".join(f"{s}%: {v['test_macro_acc']:.3f}" + (f" ± {v['test_macro_acc_std']:.3f} ({v['confirmed_runs']} seeds)"
                      if v["confirmed_runs"] else " (single run)") for s, v in result["subsets"].items())  # fmt: skip
    print(f"DCASE rank score (mean over subsets of the best test macro accuracy): {result['rank_score']:.4f}  [{cells}]")


def print_comparison(run_dir: Path, metric: str, mode: str) -> None:
    compared = comparison(run_dir, metric, mode)
    if compared.empty:
        return
    figures = ["test_acc", "test_acc_seen", "test_acc_unseen", "test_macro_acc"]
    print("What distillation did (test split; no_kd: the same configuration with kd_lambda = 1; mean ± std over "
          "`runs` seeds; per device in report.html)")  # fmt: skip
    shown = compared[[c for c in ["subset", "student", "trial_id", "runs"] if c in compared]].copy()
    for column in [c for c in figures if c in compared]:
        spread = compared.get(f"{column}_std", pd.Series(math.nan, index=compared.index))
        shown[column] = [_format(m) + ("" if math.isnan(s) else f" ± {s:.3f}") for m, s in zip(compared[column], spread)]
    print(shown.to_string(index=False, formatters={c: _format for c in shown.columns}))
