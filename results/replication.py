"""A replication's figures beside the published table it reproduces.

A replication (a space of kind: replication) trains fixed settings with several seeds and selects
nothing, so every figure may be taken on the whole test set: all of TAU22's test.csv on real data
(`full_test_*`), the test split on the embedded data, Vox1-O for OS-KDFT2 (`test_*`). Per subset this
gives the published figure, this run's mean ± standard deviation over its seeds (n complete runs),
and the difference in points; in percent, as the tables print them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from results.leaderboard import build_leaderboard
from results.run_record import is_replication, read_record

REPLICATION = "replication.csv"


def figure_column(board: pd.DataFrame, metric: str) -> str:
    """The column a replication reports: all of test.csv where the data has it, else the test split."""
    full = f"full_test_{metric}"
    complete = board[board["status"] == "complete"]
    return full if full in complete and complete[full].notna().all() and not complete.empty else f"test_{metric}"


def replication_table(run_dir: Path) -> pd.DataFrame:
    """Per subset: runs (complete of planned), this run's mean and std in percent, the published figure and the
    difference (this run − published, points). Empty for a run that is no replication."""
    record = read_record(run_dir)
    if not is_replication(record):
        return pd.DataFrame()
    published = record.get("published") or {}
    metric = published.get("metric", record["metric"])
    board = build_leaderboard(run_dir, record["metric"], record["mode"])
    if board.empty:
        return pd.DataFrame()
    column = figure_column(board, metric)
    planned = int(record.get("seeds", 1))
    rows = []
    for subset, trials in board.groupby("subset"):
        values = 100.0 * trials.loc[trials["status"] == "complete", column].astype(float).dropna()
        key = int(subset) if int(subset) else "all"
        reference = (published.get("figures") or {}).get(key, math.nan)
        mean = float(values.mean()) if len(values) else math.nan
        rows.append({"subset": int(subset), "figure": column, "runs": len(values), "planned": planned,
                     "published": float(reference), "mean": mean,
                     "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                     "difference": mean - float(reference),
                     "seeds": " ".join(str(int(s)) for s in trials.loc[values.index, "seed"])})  # fmt: skip
    return pd.DataFrame(rows)


def replication_summary(run_dir: Path, table: pd.DataFrame) -> dict:
    """summary.json of a replication: each subset's row, and DCASE's rank score from the same figures (the mean
    over subsets of each subset's mean macro accuracy, as a fraction) where the figure is a macro accuracy."""
    record = read_record(run_dir)
    published = record.get("published") or {}
    subsets = {str(row.subset): {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in row._asdict().items() if k != "Index"}
               for row in table.itertuples()}  # fmt: skip
    figure = str(table["figure"].iloc[0]) if not table.empty else ""
    score = float(table["mean"].mean()) / 100.0 if figure.endswith("macro_acc") and not table.empty else None
    return {"kind": "replication", "figure": figure, "published_source": published.get("source"),
            "rank_score": score, "subsets": subsets}  # fmt: skip


def write_replication(run_dir: Path) -> pd.DataFrame:
    """replication.csv and summary.json of a replication run; nothing for a search."""
    table = replication_table(run_dir)
    if not table.empty:
        table.to_csv(Path(run_dir) / REPLICATION, index=False)
        (Path(run_dir) / "summary.json").write_text(json.dumps(replication_summary(run_dir, table), indent=1))
    return table


def _cell(value: float, spread: float = math.nan) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.2f}" + ("" if math.isnan(spread) else f" ± {spread:.2f}")


def replication_lines(run_dir: Path, table: pd.DataFrame) -> list[str]:
    """The console's table: one line per subset, the number to set beside the published one."""
    if table.empty:
        return []
    record = read_record(run_dir)
    source = (record.get("published") or {}).get("source")
    figure = str(table["figure"].iloc[0])
    where = "all of test.csv" if figure.startswith("full_test_") else "the test split"
    lines = [f"Replication: {figure} on {where}, in percent, mean ± std over each subset's seeds"
             + (f"; published: {source}" if source else "; no published figures in the space")]
    shown = pd.DataFrame({
        "subset": [f"{s}%" if s else "all" for s in table["subset"]],
        "published": [_cell(v) for v in table["published"]],
        "this run": [_cell(m, s) for m, s in zip(table["mean"], table["std"])],
        "runs": [f"{r} of {p}" for r, p in zip(table["runs"], table["planned"])],
        "difference": [("–" if math.isnan(d) else f"{d:+.2f}") for d in table["difference"]],
    })  # fmt: skip
    lines += shown.to_string(index=False).splitlines()
    summary = replication_summary(run_dir, table)
    if summary["rank_score"] is not None:
        lines.append(f"DCASE rank score from these figures (mean over subsets): {summary['rank_score']:.4f}")
    return lines
