"""Optuna's hyperparameter importance, per subset, from the rows of a leaderboard.

The search's own Optuna studies live inside Ray's searcher and are not kept on disk, so each
subset's study is rebuilt here: one completed FrozenTrial per complete leaderboard row, with the
searched values as params and the ranking metric (validation split, last epoch) as value.
Importances come from optuna.importance.get_param_importances with its default evaluator
(PED-ANOVA); they are fractions that sum to 1 per subset, and with a handful of trials they are a
hint, not a finding. Trials stopped early by ASHA are left out: their metric is from fewer epochs.

A subset with fewer complete trials than that (the demo runs 2 a subset) is not left with nothing: such subsets
are pooled (`pooled_importance`). Each trial that did not fail counts with its metric at the last epoch every
trial of its subset reached (what ASHA compares, so a stopped trial counts too), less its subset's mean: the
subsets differ in level, and a subset is never a hyperparameter's doing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution

from spaces.space import Dimension

MIN_TRIALS = 3  # fewer complete trials than this and a subset gets no importance


@dataclass(frozen=True)
class SubsetImportance:
    subset: int
    trials: int  # complete trials the study was rebuilt from
    importances: dict[str, float] = field(default_factory=dict)  # name → share in [0, 1], largest first
    note: str = ""  # why there are none, when there are none
    pooled: tuple[int, ...] = ()  # the subsets pooled into one study (`subset` is then 0)


def _plain(value):
    """numpy scalars (as pandas reads them) → Python values, which Optuna's distributions accept."""
    return value.item() if hasattr(value, "item") else value


def distribution(name: str, values: list, dimension: Dimension | None = None) -> BaseDistribution:
    """The search distribution of one hyperparameter: the space's own (`dimension`, from the run's record), widened to
    the observed values; without one, the range (or, for non-numbers, the set) of the observed values."""
    if dimension is not None:
        return dimension.distribution(values)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return CategoricalDistribution(sorted(set(values), key=str))
    integer = all(isinstance(v, int) for v in values)
    return Dimension(name, low=min(values), high=max(values), integer=integer).distribution()


def rebuild_study(rows: pd.DataFrame, params: list[str], metric: str, mode: str,
                  dimensions: dict[str, Dimension] | None = None) -> optuna.Study:  # fmt: skip
    """An in-memory study holding one completed trial per row (rows need every param and the metric)."""
    dimensions = dimensions or {}
    values = {p: [_plain(v) for v in rows[p]] for p in params}
    distributions = {p: distribution(p, values[p], dimensions.get(p)) for p in params}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for i in range(len(rows)):
        study.add_trial(optuna.trial.create_trial(value=float(rows[metric].iloc[i]), distributions=distributions,
                                                  params={p: values[p][i] for p in params}))  # fmt: skip
    return study


def importances(
    board: pd.DataFrame,
    params: list[str],
    metric: str,
    mode: str,
    dimensions: dict[str, Dimension] | None = None,
    min_trials: int = MIN_TRIALS,
) -> list[SubsetImportance]:
    """One entry per subset of the leaderboard, in subset order; skipped subsets say why in `note`."""
    results = []
    if board.empty or metric not in board:
        return results
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # creating studies logs one line each otherwise
    try:
        for subset, rows in board.groupby("subset", sort=True):
            usable = rows[(rows["status"] == "complete") & rows[metric].map(_finite) & rows[params].notna().all(axis=1)]
            if len(usable) < min_trials:
                note = f"{len(usable)} complete trial(s); importance needs at least {min_trials}"
                results.append(SubsetImportance(int(subset), len(usable), note=note))
                continue
            if usable[metric].astype(float).nunique() == 1:
                note = f"every complete trial has the same {metric}, so no hyperparameter explains it"
                results.append(SubsetImportance(int(subset), len(usable), note=note))
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # experimental-feature notices
                    study = rebuild_study(usable, params, metric, mode, dimensions)
                    found = optuna.importance.get_param_importances(study)
            except (ValueError, RuntimeError) as error:  # e.g. every trial with the same metric
                results.append(SubsetImportance(int(subset), len(usable), note=f"not computable: {error}"))
                continue
            results.append(SubsetImportance(int(subset), len(usable), {k: float(v) for k, v in found.items()}))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return results


def common_epoch_values(rows: pd.DataFrame, curves: dict[str, pd.DataFrame], metric: str) -> dict[str, float]:
    """Trial id → `metric` at the last epoch every trial of `rows` (one subset's) reported it, from `curves`
    (trial id → one row per epoch with training_iteration and the metric); trials without a curve are left out."""
    series = {}
    for trial_id in rows["trial_id"].astype(str):
        curve = curves.get(trial_id)
        if curve is None or curve.empty or metric not in curve or "training_iteration" not in curve:
            continue
        values = curve.set_index("training_iteration")[metric].astype(float)
        values = values[values.map(_finite)]
        if not values.empty:
            series[trial_id] = values
    if not series:
        return {}
    common = min(int(values.index.max()) for values in series.values())
    return {t: float(values.loc[common]) for t, values in series.items() if common in values.index}


def pooled_importance(board: pd.DataFrame, curves: dict[str, pd.DataFrame], params: list[str], metric: str,
                      mode: str, subsets: list[int], dimensions: dict[str, Dimension] | None = None,
                      min_trials: int = MIN_TRIALS) -> SubsetImportance | None:  # fmt: skip
    """One study of `subsets` pooled (see the module's docstring); None when no subset has 2 comparable trials."""
    pooled, used = [], []
    for subset in subsets:
        rows = board[(board["subset"] == subset) & (board["status"] != "failed") & board[params].notna().all(axis=1)]
        values = common_epoch_values(rows, curves, metric)
        if len(values) < 2:
            continue
        mean = sum(values.values()) / len(values)
        picked = rows[rows["trial_id"].astype(str).isin(values)].copy()
        picked[metric] = picked["trial_id"].astype(str).map(values) - mean
        pooled.append(picked)
        used.append(int(subset))
    if not pooled:
        return None
    rows = pd.concat(pooled)
    if len(rows) < min_trials or (rows[metric].abs() < 1e-12).all():
        note = (f"{len(rows)} comparable trial(s) in subsets {used} pooled; importance needs at least {min_trials} "
                "that differ")
        return SubsetImportance(0, len(rows), note=note, pooled=tuple(used))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(rebuild_study(rows, params, metric, mode, dimensions))
    except (ValueError, RuntimeError) as error:
        return SubsetImportance(0, len(rows), note=f"not computable: {error}", pooled=tuple(used))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return SubsetImportance(0, len(rows), {k: float(v) for k, v in found.items()}, pooled=tuple(used))


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
