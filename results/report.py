"""Write a run's report: one self-contained HTML page, and its figures as PNG files beside it.

    python results/report.py RUN_DIR [--data PREPARED_DIR] [--top N]

Writes `<run>/report.html` and `<run>/report/*.png`. The page reads offline: inline CSS, no script,
every figure embedded as a base64 PNG (the same bytes as the file in report/). Every table fits a 1,400-px page,
its column names wrapping between words only. It holds:
- warnings, first: a subset whose best student is within 5 points of chance, a teacher weaker than
  the student trained without it;
- the best student of each subset: its validation and test accuracy (over its confirmation seeds, mean ± std,
  when it was confirmed), its size and MACs against the DCASE24 budget;
- what distillation did: per subset and device, the best student's test accuracy (± over its
  confirmation seeds) against the same configuration without a teacher, and the difference;
- each teacher's test accuracy per device;
- the leaderboard (leaderboard.csv; validation split, test_* columns from the test split): its key
  columns (a confirmed configuration's over its seeds), every column folded below in tables that fit;
- per-device validation accuracy of the top trials of each subset;
- the ranking metric against each searched hyperparameter, coloured by subset;
- Optuna's hyperparameter importance per subset with at least 3 complete trials, the others pooled (each
  trial relative to its subset), or, where no importance can be computed, the metric against each value;
- the confusion matrix of each exported best student on the test split (kept in its file by
  training; files from older runs are evaluated again with --data, the prepared dataset);
- the learning curves of every search trial of each subset, the best one highlighted (result.json).
Devices unseen in a subset's training clips are marked * (and shaded or dashed in the figures); which
they are comes from the dataset (--data, or the one the run's record names), else TAU22's s4–s6.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import report_figures as figures
from results.complexity import frames_of
from results.distillation import kd_effect, teacher_accuracy, unseen_devices, warnings
from results.evaluation import IncompatibleStudent, evaluate_student
from results.importance import MIN_TRIALS, importances, pooled_importance
from results.leaderboard import build_leaderboard, confirmation_runs, device_columns
from results.replication import replication_lines, replication_table
from results.run_record import LinkedRunError, RecordError, dimensions, read_record, refuse_links, run_dataset
from results.student_file import exported_students, load_student, student_classes
from results.trial_records import read_experiment
from trainables.asc.data import load_prepared
from trainables.asc.student import DCASE24_BUDGET, complexity
from trainables.atomic import replace_directory, write_file
from trainables.prepared import DatasetError

_HIDDEN_COLUMNS = {"trial_dir"}  # machine-specific paths; the CSV keeps them
_BEST_METRICS = ("acc", "acc_unseen", "test_acc", "test_acc_unseen", "test_macro_acc")


@dataclass
class Section:
    title: str
    text: str  # plain text (escaped when written)
    body: str = ""  # ready HTML: a table
    figure: str | None = None  # file name under report/
    png: bytes | None = None


def read_board(run_dir: Path, metric: str, mode: str) -> pd.DataFrame:
    """leaderboard.csv as written by the run; rebuilt from the trials when the run has none yet."""
    path = Path(run_dir) / "leaderboard.csv"
    if path.is_file() and path.stat().st_size > 1:
        # Only empty cells are missing: a trial id such as "nan" or "00012" stays the string it was.
        board = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"trial_id": str, "error": str})
        return board.fillna({"error": ""}) if "error" in board else board
    return build_leaderboard(run_dir, metric, mode)


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        accuracy = column.startswith(("acc", "test_", "macro_acc"))
        return f"{value:.3f}" if accuracy else f"{value:.4g}"
    return str(value)


def header(name: str) -> str:
    """A column name as a table header: it may wrap after an underscore or at a space, never inside a word
    (<wbr> marks the place without adding a character to what is copied)."""
    return "_<wbr>".join(html.escape(part) for part in str(name).split("_"))


_TEXT_COLUMNS = {"error", "DCASE24"}  # sentences, which wrap; every other cell is a figure or a name, kept whole


def _td(column: str, value) -> str:
    """One cell: a sentence may wrap, a mean ± spread only before its ±, anything else not at all."""
    text = html.escape(_cell(column, value))
    if column in _TEXT_COLUMNS:
        return f"<td class=\"text\">{text}</td>"
    if " ± " in text:
        return f"<td class=\"spread\">{text.replace(' ± ', ' ±&nbsp;')}</td>"
    return f"<td>{text}</td>"


def html_table(frame: pd.DataFrame, highlight_rank_one: bool = False) -> str:
    """A table that fits the page: headers wrap between words, sentences wrap, and nothing else does."""
    head = "".join(f"<th>{header(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        best = highlight_rank_one and row.get("rank") == 1
        cells = "".join(_td(str(c), row[c]) for c in frame.columns)
        rows.append(f"<tr class=\"best\">{cells}</tr>" if best else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_ID_COLUMNS = ["rank", "trial_id", "subset"]
FOLDED_WIDTH = 10  # columns of each folded table besides the trial's ids: about 1,000 px, within a 1,400-px page


def folded_tables(frame: pd.DataFrame) -> str:
    """Every column of `frame`, in tables of at most FOLDED_WIDTH columns each, led by the trial's ids: one table
    of every column (over 50 on TAU22's devices) cannot fit a page."""
    ids = [c for c in _ID_COLUMNS if c in frame]
    rest = [c for c in frame.columns if c not in ids]
    return "".join(html_table(frame[ids + rest[i : i + FOLDED_WIDTH]], highlight_rank_one=True)
                   for i in range(0, len(rest), FOLDED_WIDTH))  # fmt: skip


# The figures shown for a configuration confirmed with new seeds as their mean ± standard deviation, in place of
# its one search run's.
_CONFIRMED_FIGURES = ("acc", "acc_unseen", "macro_acc", "test_acc", "test_acc_unseen", "test_macro_acc", "eer",
                      "min_dcf", "test_eer", "test_min_dcf")  # fmt: skip


def confirmed_figures(run_dir: Path, params: list[str], metric: str = "acc",
                      search: list | None = None) -> dict[str, dict[str, str]]:  # fmt: skip
    """Search trial id → its configuration's figures (the ranking `metric` among them) over the seeds it was confirmed
    with ("mean ± std"), and `runs` ("2 seeds"); trials not confirmed are absent. `search`: the run's search trials,
    when read already."""
    search = read_experiment(Path(run_dir) / "search") if search is None else search
    found = {}
    for trial_id, results in confirmation_runs(run_dir, params, search).items():
        cells = {"runs": f"{len(results)} seeds"}
        for name in dict.fromkeys([metric, *_CONFIRMED_FIGURES]):
            values = [float(r[name]) for r in results if _finite(r.get(name))]
            if values:
                spread = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else math.nan
                cells[name] = _plus_minus(sum(values) / len(values), spread)
        found[trial_id] = cells
    return found


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


_KEY_COLUMNS = ["rank", "trial_id", "subset", "status", "epochs"]
_KEY_FIGURES = ["eer", "min_dcf", "acc", "acc_unseen", "test_acc", "test_acc_unseen", "test_eer", "params", "macs",
                "within_budget"]  # fmt: skip


def leaderboard_section(board: pd.DataFrame, metric: str, params: list[str] = (),
                        confirmed: dict[str, dict[str, str]] | None = None) -> Section:  # fmt: skip
    """The key columns of every trial; a configuration confirmed with new seeds shows their mean ± std (`confirmed`,
    from confirmed_figures) in place of its one search run's figures."""
    text = (f"Every trial, ranked within its subset by {metric} on the validation split: configurations confirmed "
            "with new seeds first (by their mean), then trials that ran every epoch, then those stopped early by ASHA, "
            "then failed ones. acc columns are the last epoch's validation figures; test_* columns are the test "
            "split, computed once per complete trial and never used for ranking. A confirmed configuration's figures "
            "are the mean ± standard deviation over its confirmation seeds (runs), not its one search run's. The "
            "rank-1 row of each subset is bold. The table shows the key columns; every column of leaderboard.csv "
            "(each device, sizes, errors, the search run's own figures) is folded below it.")  # fmt: skip
    if board.empty:
        return Section("Leaderboard", "No trial has reported yet.")
    shown = board[[c for c in board.columns if c not in _HIDDEN_COLUMNS]]
    if "error" in shown and not shown["error"].astype(str).str.strip().any():
        shown = shown.drop(columns=["error"])
    key = [c for c in [*_KEY_COLUMNS, *params, *dict.fromkeys([metric, *_KEY_FIGURES]), "error"] if c in shown]
    table = shown[key].astype(object)
    confirmed = {t: cells for t, cells in (confirmed or {}).items() if t in set(table["trial_id"].astype(str))}
    if confirmed:
        table.insert(table.columns.get_loc("epochs") + 1 if "epochs" in table else 0, "runs", "1")
        for index, trial_id in table["trial_id"].astype(str).items():
            for name, cell in confirmed.get(trial_id, {}).items():
                if name in table:
                    table.at[index, name] = cell
    folded = (f"<details><summary>All {len(shown.columns)} columns</summary>"
              f"{folded_tables(shown)}</details>")  # fmt: skip
    return Section("Leaderboard", text, body=html_table(table, highlight_rank_one=True) + folded)


def replication_section(run_dir: Path) -> Section | None:
    """A replication's table: the published figure, this run's mean ± std over its seeds, the difference."""
    table = replication_table(run_dir)
    if table.empty:
        return None
    lines = replication_lines(run_dir, table)
    shown = table[["subset", "published", "mean", "std", "runs", "planned", "difference", "seeds"]]
    named = shown.rename(columns={"mean": "this run (mean)", "std": "std over seeds"})
    return Section("Against the published table", " ".join([lines[0], *lines[len(table) + 2 :]]),
                   body=html_table(named))


def _plus_minus(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if not math.isnan(std) else f"{mean:.3f}"


def distillation_section(effect: pd.DataFrame, unseen: dict[int, set[str]], n_classes: int = 10) -> Section:
    title = "What distillation did"
    text = ("Per subset, the test accuracy of the best student (KD) and of the same configuration trained without a "
            "teacher (no-KD: kd_lambda = 1), overall (mean over devices), pooled over the devices seen and unseen "
            "in training, and per device; Δ = KD − no-KD, in points of accuracy. Where the best configuration was "
            "confirmed with several seeds, KD is their mean ± standard deviation, and no-KD likewise over its seeds. Figures marked "
            "* are of a device that occurs in none of the subset's training clips (unseen).")  # fmt: skip
    if effect.empty:
        return Section(title, "No no-KD reference in this run (compare_without_kd: false, or no complete trial).")
    rows = []
    for subset, part in effect.groupby("subset", sort=True):
        hidden = unseen.get(int(subset), set())
        mark = {f: " *" if f in hidden else "" for f in part["figure"]}
        runs = int(part["kd_runs"].iloc[0])
        kd_label = f"KD ({part['kd_trial'].iloc[0]}" + (f", {runs} seeds)" if runs > 1 else ")")
        rows.append({"subset": f"{subset}%", "student": kd_label,
                     **{r.figure: _plus_minus(r.kd, r.kd_std) + mark[r.figure] for r in part.itertuples()}})  # fmt: skip
        no_kd_runs = int(part["no_kd_runs"].iloc[0])
        rows.append({"subset": f"{subset}%", "student": f"no-KD ({part['no_kd_trial'].iloc[0]}"
                     + (f", {no_kd_runs} seeds)" if no_kd_runs > 1 else ")"),
                     **{r.figure: _plus_minus(r.no_kd, r.no_kd_std) + mark[r.figure] for r in part.itertuples()}})  # fmt: skip
        rows.append({"subset": f"{subset}%", "student": "Δ (points)",
                     **{r.figure: f"{100 * r.delta:+.1f}{mark[r.figure]}" for r in part.itertuples()}})  # fmt: skip
    figure = figures.kd_bars(effect, unseen, chance=1.0 / n_classes)
    return Section(title, text, body=html_table(pd.DataFrame(rows)), figure="distillation.png",
                   png=figures.png_bytes(figure) if figure is not None else None)  # fmt: skip


def teachers_section(teachers: pd.DataFrame, unseen: dict[int, set[str]]) -> Section:
    title = "Teachers"
    text = ("The teacher each subset's students distilled from: its accuracy on the test split, overall, pooled over "
            "seen and unseen devices, and per device (* a device unseen in the subset's training clips). A teacher that is "
            "not clearly better than the no-KD student has little to teach.")  # fmt: skip
    if teachers.empty:
        return Section(title, "No teacher logits recorded for this run (no KD, or the cache was removed).")
    rows = []
    for _, row in teachers.iterrows():
        subset = int(row["subset"])
        hidden = unseen.get(subset, set())
        rows.append({"subset": f"{subset}%", **{k: "–" if pd.isna(v) else f"{v:.3f}" + (" *" if k in hidden else "")
                                                for k, v in row.items() if k != "subset"}})  # fmt: skip
    return Section(title, text, body=html_table(pd.DataFrame(rows)))


def warnings_section(found: list[str]) -> Section | None:
    if not found:
        return None
    items = "".join(f"<li>{html.escape(w)}</li>" for w in found)
    return Section("Warnings", "Read these before the figures below.", body=f"<ul class=\"warn\">{items}</ul>")


def best_students_section(students: dict[int, Path], params: list[str],
                          confirmed: dict[str, dict[str, str]] | None = None) -> Section:  # fmt: skip
    text = ("The exported student of each subset (best/subset_<N>/student.pt): validation accuracy (acc), test "
            "accuracy (test_*), and its complexity, counted as DCASE24 counts it: parameters, parameter "
            "memory in bytes at fp16 and int8, and multiply-accumulates for one 1-s clip with the front end "
            f"excluded. DCASE24 allows {DCASE24_BUDGET.param_bytes:,} bytes at fp16 and {DCASE24_BUDGET.macs:,} MACs. "
            "Where its configuration was confirmed with new seeds, the figures are their mean ± standard deviation "
            "(runs), not the one search run's.")  # fmt: skip
    if not students:
        return Section("Best students", "No exported student (best/subset_<N>/student.pt) in this run.")
    rows = []
    for subset, path in students.items():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        frontend, model, metrics = load_student(path)
        size = complexity(model.arch, (frontend.config.n_mels, frames_of(frontend.config)))
        over = DCASE24_BUDGET.violations(size)
        train = payload["config"].get("train", {})
        trial_id = str(payload.get("trial_id", "–"))
        seeds = (confirmed or {}).get(trial_id, {})
        figures_of = ({k: seeds.get(k, "–") for k in _BEST_METRICS} if seeds
                      else {k: metrics.get(k) for k in _BEST_METRICS})  # fmt: skip
        rows.append({"subset": subset, "trial_id": trial_id, **{p: train.get(p) for p in params},
                     "runs": seeds.get("runs", "1 (search)"), **figures_of,
                     "parameters": f"{size.params:,}", "bytes fp16": f"{size.param_bytes(16):,}",
                     "bytes int8": f"{size.param_bytes(8):,}", "MACs": f"{size.macs:,}",
                     "DCASE24": "within" if not over else "over: " + "; ".join(over)})  # fmt: skip
    return Section("Best students", text, body=html_table(pd.DataFrame(rows)))


def _best_trial_ids(board: pd.DataFrame, students: dict[int, Path]) -> dict[int, str]:
    """subset → the best trial: the one an exported file names, else the leaderboard's top complete one."""
    best = {}
    if not board.empty:
        for subset, rows in board[board["status"] == "complete"].groupby("subset"):
            best[int(subset)] = str(rows.iloc[0]["trial_id"])
    for subset, path in students.items():
        trial_id = torch.load(path, map_location="cpu", weights_only=True).get("trial_id")
        if trial_id:
            best[subset] = str(trial_id)
    return dict(sorted(best.items()))


def search_curves(search: list) -> dict[int, dict[str, pd.DataFrame]]:
    """Subset → trial id → the trial's reports, one row per epoch (its result.json), for every search trial."""
    curves: dict[int, dict[str, pd.DataFrame]] = {}
    for record in search:
        if record.results:
            curves.setdefault(int(record.config.get("subset", 0)), {})[record.trial_id] = pd.DataFrame(record.results)
    return curves


def learning_curves_section(curves: dict[int, dict[str, pd.DataFrame]], best: dict[int, str],
                            unseen: dict[int, set[str]] | None = None) -> Section:  # fmt: skip
    text = ("Per epoch, for every search trial of each subset (its result.json), the best one thick and black: the "
            "training loss (the KD loss on augmented training clips; its level depends on each trial's temperature "
            "and λ, so compare a trial's epochs, not trials) and the validation accuracy (acc, the mean over devices; "
            "a trial that ends early was stopped by ASHA). Right: the best trial's accuracy pooled over devices seen "
            "/ unseen in training, and each device (thin lines; dashed and marked * when unseen).")  # fmt: skip
    figure = figures.learning_curves(curves, best, unseen or {})
    if figure is None:
        return Section("Learning curves", "No trial with reported epochs was found under search/.")
    return Section("Learning curves", text, figure="learning_curves.png", png=figures.png_bytes(figure))


def importance_section(board: pd.DataFrame, curves: dict[str, pd.DataFrame], params: list[str], metric: str,
                       mode: str, searched: dict[str, dict], log_params: set[str]) -> Section:  # fmt: skip
    """Optuna's importance per subset with enough complete trials; the others pooled; and where even that cannot be
    computed, each trial's metric against each searched value, so that a run with trials always shows something."""
    title, name = "Hyperparameter importance", "importance.png"
    text = ("Optuna's importance (PED-ANOVA, optuna.importance.get_param_importances) of each searched "
            f"hyperparameter for {metric}, from a study rebuilt per subset from its complete trials; shares sum to 1. "
            f"A subset with fewer than {MIN_TRIALS} complete trials is pooled with the others like it (grey): each "
            "trial that did not fail counts with its metric at the last epoch every trial of its subset reached, less "
            "its subset's mean. With few trials it is a hint only.")  # fmt: skip
    found = importances(board, params, metric, mode, searched)
    lacking = [r.subset for r in found if not r.importances]
    pooled = pooled_importance(board, curves, params, metric, mode, lacking, searched) if lacking else None
    into_pool = set(pooled.pooled) if pooled is not None and pooled.importances else set()
    notes = [f"subset {r.subset}%: {r.note}" for r in found if not r.importances and r.subset not in into_pool]
    if pooled is not None and not pooled.importances:
        notes.append(f"pooled: {pooled.note}")
    text += " Left out: " + "; ".join(notes) + "." if notes else ""
    figure = figures.importance_bars([*found, *([pooled] if pooled is not None else [])])
    if figure is None and not board.empty and params:
        figure = figures.hyperparameter_scatter(board, params, metric, log_params)
        text += (" Too few comparable trials for any importance: instead, each trial's metric against each searched "
                 "value (filled: ran every epoch, hollow: stopped early).")  # fmt: skip
    return figure_section(title, text, name, figure)


def confusion_section(students: dict[int, Path], data_dir: Path | None) -> Section:
    """Each best student's test confusion as its trial counted it; students exported without one (older
    runs) are evaluated again on `data_dir`."""
    title = "Confusion matrices"
    if not students:
        return Section(title, "No exported student to evaluate.")
    matrices, classes, notes = {}, None, []
    data = None
    for subset, path in students.items():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if "test_confusion" in payload:
            matrices[subset], classes = payload["test_confusion"].numpy(), payload["classes"]
            continue
        if data_dir is None:
            notes.append(f"subset {subset}%: its file holds no confusion matrix; pass --data PREPARED_DIR, the "
                         "prepared dataset the run trained on, to evaluate it")  # fmt: skip
            continue
        data = data or load_prepared(data_dir)
        try:
            matrices[subset], classes = evaluate_student(path, data, "test").confusion, data.classes
        except IncompatibleStudent as error:
            notes.append(f"subset {subset}%: {error}")
    figure = figures.confusion_matrices(matrices, classes or [])
    text = ("The exported best student of each subset on the test split: rows are the true scene, columns the "
            "predicted one; colour is the share of the true scene's clips, numbers are clip counts.") + (
        " Skipped: " + "; ".join(notes) + "." if notes else "")  # fmt: skip
    if figure is None:
        return Section(title, text)
    return Section(title, text, figure="confusion.png", png=figures.png_bytes(figure))


def figure_section(title: str, text: str, name: str, figure) -> Section:
    """A section showing `figure` (saved as report/<name>), or saying there is nothing to draw yet."""
    if figure is None:
        return Section(title, text + " Nothing to draw yet.")
    return Section(title, text, figure=name, png=figures.png_bytes(figure))


def _n_classes(students: dict[int, Path]) -> int:
    for path in students.values():
        return len(student_classes(path))
    return 10  # TAU22's scenes


def build_sections(run_dir: Path, data_dir: Path | None = None, top: int = 3) -> list[Section]:
    record = read_record(run_dir)
    metric, mode = record["metric"], record["mode"]
    board = read_board(run_dir, metric, mode)
    searched = {name: d for name, d in dimensions(record).items() if board.empty or name in board}
    params = list(searched)
    students = exported_students(run_dir)
    drawable = not board.empty
    device_names = device_columns(dict.fromkeys(board.columns))
    devices = ", ".join(device_names) or "none"
    subsets = sorted(int(s) for s in board["subset"].unique()) if drawable else []
    unseen = unseen_devices(subsets, device_names, data_dir or run_dataset(run_dir))
    effect = kd_effect(run_dir, metric, mode)
    teachers = teacher_accuracy(run_dir)
    log_params = {name for name, d in searched.items() if d.log}
    search = read_experiment(Path(run_dir) / "search")
    curves = search_curves(search)
    confirmed = confirmed_figures(run_dir, params, metric, search)
    sections = [
        warnings_section(warnings(board, effect, teachers, _n_classes(students))),
        replication_section(run_dir),
        best_students_section(students, params, confirmed),
        distillation_section(effect, unseen, _n_classes(students)),
        teachers_section(teachers, unseen),
        leaderboard_section(board, metric, params, confirmed),
        figure_section(
            "Accuracy per device", f"Validation accuracy per recording device ({devices}) and its mean (acc) for "
            f"the top {top} trials of each subset, best first (darkest). Devices marked * and shaded occur in none "
            "of the subset's training clips (unseen).", "device_accuracy.png",
            figures.device_bars(board, top, unseen) if drawable else None),
        figure_section(
            "Accuracy against each hyperparameter", f"{metric} (validation split, last epoch) of every trial that "
            "did not fail, against each searched hyperparameter; filled: ran every epoch, hollow: stopped early by "
            "ASHA.", "hyperparameters.png",
            figures.hyperparameter_scatter(board, params, metric, log_params) if drawable else None),
        importance_section(board, {t: c for trials in curves.values() for t, c in trials.items()}, params, metric,
                           mode, searched, log_params),
        confusion_section(students, data_dir),
        learning_curves_section(curves, _best_trial_ids(board, students), unseen),
    ]  # fmt: skip
    return [section for section in sections if section is not None]


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
p.note { color: #444; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.8em; max-width: 100%; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; }
td { white-space: nowrap; }  /* a figure or a name is never cut */
td.text { white-space: normal; text-align: left; min-width: 8em; }  /* an error, a budget note: sentences */
td.spread { white-space: normal; min-width: 3.5em; }  /* "0.614 ± 0.002" may wrap before its ±, and only there */
/* a column name wraps at its spaces and <wbr> (after an underscore), never inside a word */
th { background: #f2f2f2; position: sticky; top: 0; white-space: normal; overflow-wrap: normal; word-break: normal;
     hyphens: manual; vertical-align: bottom; }
tr.best td { font-weight: bold; background: #f4f9ff; }
details summary { cursor: pointer; color: #444; margin: 0.5em 0; }
ul.warn { background: #fff4e5; border-left: 4px solid #e67e00; padding: 0.6em 0.6em 0.6em 2em; max-width: 60em; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
"""


def render_html(title: str, intro: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class=\"note\">{html.escape(intro)}</p>"]  # fmt: skip
    for section in sections:
        anchor = re.sub(r"[^a-z0-9]+", "-", section.title.lower()).strip("-")
        parts.append(f"<h2 id=\"{anchor}\">{html.escape(section.title)}</h2><p class=\"note\">{html.escape(section.text)}</p>")
        parts.append(section.body)
        if section.png is not None:
            encoded = base64.b64encode(section.png).decode("ascii")
            parts.append(f"<img alt=\"{html.escape(section.title)}\" src=\"data:image/png;base64,{encoded}\">")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: Path, data_dir: Path | None = None, top: int = 3) -> Path:
    """Write <run_dir>/report.html and <run_dir>/report/*.png; returns the HTML file's path."""
    run_dir = Path(run_dir)
    sections = build_sections(run_dir, None if data_dir is None else Path(data_dir), top)
    figure_dir = run_dir / "report"

    def write_figures(work: Path) -> None:  # a figure this run no longer has must not linger: the folder is made anew
        for section in sections:
            if section.png is not None:
                (work / section.figure).write_bytes(section.png)

    replace_directory(figure_dir, write_figures)
    settings = read_record(run_dir)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = (f"Run {run_dir.resolve()}, ranked by {settings['metric']} ({settings['mode']}) on the validation split; "
             f"generated {generated}. Accuracies are fractions in [0, 1]. "
             f"The figures are also in {figure_dir.name}/.")  # fmt: skip
    path = run_dir / "report.html"
    page = render_html(f"KD search report: {run_dir.name}", intro, sections)
    write_file(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/report.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory, <storage>/<name>")
    parser.add_argument("--data", help="the prepared dataset the run trained on (for the confusion matrices)")
    parser.add_argument("--top", type=int, default=3, help="trials per subset in the per-device bars (default 3)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        refuse_links(run_dir)
        read_record(run_dir)
    except (RecordError, LinkedRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.data is not None:
        try:
            load_prepared(Path(args.data))
        except DatasetError as error:
            print(f"error: --data: {error}", file=sys.stderr)
            return 2
    if args.top < 1:
        print("error: --top must be at least 1", file=sys.stderr)
        return 2
    print(f"Wrote {write_report(run_dir, args.data and Path(args.data), args.top)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
