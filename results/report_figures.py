"""The report's figures, each a matplotlib Figure built from plain data (no pyplot, no global state).

Accuracies are fractions in [0, 1] and are drawn on a 0–1 axis, so panels compare at a glance.
Every function returns None when it has nothing to draw, and the report says so instead.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede any backend use

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter  # noqa: E402

from results.importance import SubsetImportance  # noqa: E402
from results.leaderboard import device_columns  # noqa: E402
from trainables.asc.data import SUBSETS  # noqa: E402

DPI = 100
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def subset_colour(subset: int) -> str:
    """The same colour for a subset in every figure."""
    index = SUBSETS.index(subset) if subset in SUBSETS else len(SUBSETS) + subset % 3
    return _PALETTE[index % len(_PALETTE)]


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def log_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis over [low, high] (> 0): 1, 2, 5 × 10^k when at least 3 fall inside,
    else 4 geometrically spaced values rounded to 2 significant digits."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [m * 10.0**k for k in decades for m in (1, 2, 5) if low <= m * 10.0**k <= high]
    if len(ticks) >= 3:
        return ticks
    return sorted({float(f"{v:.2g}") for v in np.geomspace(low, high, 4)})


def _mark_unseen(ax, labels: list[str], unseen: set[str]) -> list[str]:
    """Shade the unseen devices' columns on `ax`; the tick labels with those devices marked *."""
    for i, label in enumerate(labels):
        if label in unseen:
            ax.axvspan(i - 0.5, i + 0.5, color="#dddddd", zorder=0, linewidth=0)
    return [f"{label}*" if label in unseen else label for label in labels]


def device_bars(board: pd.DataFrame, top: int = 3, unseen: dict[int, set[str]] | None = None) -> Figure | None:
    """Per subset, the validation accuracy of each device for the `top` best-ranked trials that have one;
    devices in `unseen[subset]` (none of the subset's training clips) shaded and marked *."""
    devices = device_columns(dict.fromkeys(board.columns))
    if board.empty or not devices:
        return None
    panels = []
    for subset, rows in board.groupby("subset", sort=True):
        shown = rows[rows[[f"acc_{d}" for d in devices]].notna().any(axis=1)].head(top)
        if not shown.empty:
            panels.append((subset, shown))
    if not panels:
        return None
    figure = Figure(figsize=(max(7.0, 0.9 * len(devices) + 3), 2.8 * len(panels)))
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    x = np.arange(len(devices) + 1)  # the devices, then their mean (acc)
    for ax, (subset, shown) in zip(axes, panels):
        width = 0.8 / len(shown)
        for i, (_, row) in enumerate(shown.iterrows()):
            heights = [float(row[f"acc_{d}"]) if _finite(row[f"acc_{d}"]) else 0.0 for d in devices]
            heights.append(float(row["acc"]) if "acc" in row and _finite(row["acc"]) else 0.0)
            label = f"#{row['rank']} {row['trial_id']} ({row['status']})"
            ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=label, alpha=1.0 - 0.25 * i,
                   color=subset_colour(int(subset)), edgecolor="black", linewidth=0.5)  # fmt: skip
        ax.set_xticks(x, _mark_unseen(ax, [*devices, "mean"], (unseen or {}).get(int(subset), set())))
        ax.set_ylim(0, 1)
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"Subset {subset}%: top {len(shown)} trial(s), accuracy per recording device (* unseen)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    return figure


def hyperparameter_scatter(board: pd.DataFrame, params: list[str], metric: str,
                           log_params: set[str] = frozenset()) -> Figure | None:  # fmt: skip
    """The ranking metric against each searched hyperparameter, one panel each, coloured by subset.

    Filled markers: trials that ran every epoch; hollow: stopped early (their metric is from fewer
    epochs). Failed trials have no metric and are not drawn.
    """
    if board.empty or metric not in board or not params:
        return None
    drawn = board[board[metric].map(_finite) & (board["status"] != "failed")]
    if drawn.empty:
        return None
    columns = min(3, len(params))
    lines = math.ceil(len(params) / columns)
    figure = Figure(figsize=(4.4 * columns, 3.6 * lines))
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax, param in zip(axes, params):
        numeric = pd.to_numeric(drawn[param], errors="coerce")
        categorical = numeric.isna().any()
        labels = sorted(drawn[param].astype(str).unique()) if categorical else []
        for subset, rows in drawn.groupby("subset", sort=True):
            colour = subset_colour(int(subset))
            for status, filled in (("complete", True), ("stopped", False)):
                part = rows[rows["status"] == status]
                if part.empty:
                    continue
                xs = [labels.index(v) for v in part[param].astype(str)] if categorical else pd.to_numeric(part[param])
                ax.scatter(xs, part[metric].astype(float), s=36, edgecolors=colour, linewidths=1.2,
                           facecolors=colour if filled else "none",
                           label=f"{subset}%" + ("" if filled else " (stopped)"))  # fmt: skip
        if categorical:
            ax.set_xticks(range(len(labels)), labels)
        elif param in log_params and (numeric > 0).all():
            ax.set_xscale("log")
            # A few plain-number ticks: matplotlib's own crowd and overlap on a range shorter than a decade.
            ax.xaxis.set_major_locator(FixedLocator(log_ticks(float(numeric.min()), float(numeric.max()))))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(param)
        ax.set_ylabel(f"{metric} (validation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)  # the same subsets in every panel
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    figure.suptitle(f"{metric} against each searched hyperparameter")
    figure.tight_layout()
    return figure


def importance_bars(results: list[SubsetImportance]) -> Figure | None:
    """Horizontal bars of each subset's hyperparameter importances (fractions summing to 1)."""
    shown = [r for r in results if r.importances]
    if not shown:
        return None
    figure = Figure(figsize=(4.2 * len(shown), 0.5 * max(len(r.importances) for r in shown) + 1.8))
    axes = figure.subplots(1, len(shown), squeeze=False)[0]
    for ax, result in zip(axes, shown):
        names = list(result.importances)[::-1]  # largest on top
        colour = "#7f7f7f" if result.pooled else subset_colour(result.subset)
        ax.barh(names, [result.importances[n] for n in names], color=colour)
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (share)")
        if result.pooled:
            pooled = ", ".join(str(s) for s in result.pooled)
            ax.set_title(f"Subsets {pooled}% pooled ({result.trials} trials,\nrelative to their subset)")
        else:
            ax.set_title(f"Subset {result.subset}% ({result.trials} trials)")
        ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def confusion_matrices(matrices: dict[int, np.ndarray], classes: list[str], split: str = "test") -> Figure | None:
    """One panel per subset: row-normalised confusion (share of each true class), clip counts printed."""
    if not matrices:
        return None
    n = len(classes)
    columns = min(2, len(matrices))
    lines = math.ceil(len(matrices) / columns)
    figure = Figure(figsize=((0.5 * n + 3.0) * columns, (0.5 * n + 2.2) * lines))
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax in axes[len(matrices) :]:
        ax.set_visible(False)
    for ax, (subset, counts) in zip(axes, sorted(matrices.items())):
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
        for (i, j), count in np.ndenumerate(counts):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")  # fmt: skip
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        accuracy = np.trace(counts) / max(counts.sum(), 1)
        ax.set_title(f"Best student, subset {subset}%\n"
                     f"{split} split, {counts.sum()} clips, pooled accuracy {accuracy:.3f}")  # fmt: skip
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    figure.tight_layout()
    return figure


def kd_bars(effect: pd.DataFrame, unseen: dict[int, set[str]], chance: float | None = None) -> Figure | None:
    """Per subset, test accuracy with and without distillation for the mean, seen, unseen and each device;
    error bars: standard deviation over confirmation seeds; unseen devices shaded and marked *; a dashed line
    at `chance` (guessing the most likely of equally likely classes)."""
    if effect.empty:
        return None
    subsets = sorted(effect["subset"].unique())
    figure = Figure(figsize=(max(7.0, 0.8 * effect.groupby("subset").size().max() + 3), 2.8 * len(subsets)))
    axes = figure.subplots(len(subsets), 1, squeeze=False)[:, 0]
    for ax, subset in zip(axes, subsets):
        part = effect[effect["subset"] == subset]
        x = np.arange(len(part))
        labels = _mark_unseen(ax, part["figure"].tolist(), unseen.get(int(subset), set()))
        errors = part["kd_std"].fillna(0).to_numpy()
        ax.bar(x - 0.2, part["kd"], 0.4, yerr=errors if errors.any() else None, capsize=3,
               color=subset_colour(int(subset)), edgecolor="black", linewidth=0.5, label="KD (best)")  # fmt: skip
        no_kd_errors = part["no_kd_std"].fillna(0).to_numpy() if "no_kd_std" in part else np.zeros(len(part))
        ax.bar(x + 0.2, part["no_kd"], 0.4, yerr=no_kd_errors if no_kd_errors.any() else None, capsize=3, color="white",
               edgecolor=subset_colour(int(subset)), hatch="//", linewidth=1.0, label="no-KD (kd_lambda = 1)")  # fmt: skip
        if chance is not None:
            ax.axhline(chance, color="black", linestyle="--", linewidth=0.8, label=f"chance ({chance:.2f})")
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"Subset {subset}%: with and without distillation (* unseen device)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    return figure


def learning_curves(curves: dict[int, dict[str, pd.DataFrame]], best: dict[int, str],
                    unseen: dict[int, set[str]] | None = None) -> Figure | None:  # fmt: skip
    """Per subset (one row): every trial's training loss and validation accuracy per epoch, the best trial (`best`:
    subset → trial id) drawn thick, and the best trial's accuracy per device.

    curves: subset → trial id → one row per reported epoch with training_iteration and any of train_loss, acc,
    acc_seen, acc_unseen, acc_<device>. A trial that ends before the others was stopped early by ASHA (marked x).
    """
    curves = {s: {t: c for t, c in trials.items() if not c.empty and "training_iteration" in c}
              for s, trials in sorted(curves.items())}  # fmt: skip
    curves = {s: trials for s, trials in curves.items() if trials}
    if not curves:
        return None
    figure = Figure(figsize=(16, 3.4 * len(curves)))
    axes = figure.subplots(len(curves), 3, squeeze=False)
    for (loss_ax, all_ax, device_ax), (subset, trials) in zip(axes, curves.items()):
        colour = subset_colour(subset)
        top = best.get(subset) if best.get(subset) in trials else None
        last = max(int(c["training_iteration"].max()) for c in trials.values())
        for trial_id, curve in sorted(trials.items(), key=lambda item: item[0] == top):  # the best drawn last, on top
            epochs = curve["training_iteration"].astype(int)
            mine = trial_id == top
            style = {"color": "black" if mine else colour, "linewidth": 2.2 if mine else 1.0,
                     "alpha": 1.0 if mine else 0.6, "marker": "o", "markersize": 3}  # fmt: skip
            label = f"{trial_id} (best)" if mine else trial_id
            if "train_loss" in curve:
                loss_ax.plot(epochs, curve["train_loss"].astype(float), **style)
            if "acc" in curve:
                all_ax.plot(epochs, curve["acc"].astype(float), label=label, **style)
                if int(epochs.max()) < last:  # stopped early
                    all_ax.plot(int(epochs.max()), float(curve["acc"].iloc[-1]), "x", color=style["color"], markersize=8)
        loss_ax.set_title(f"Subset {subset}%: training loss (KD loss), {len(trials)} trial(s)")
        all_ax.set_title(f"Subset {subset}%: validation acc, every trial (x: stopped early)")
        all_ax.legend(fontsize=7, loc="upper left", ncol=2)
        for ax in (loss_ax, all_ax, device_ax):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        all_ax.set_ylim(0, 1)
        device_ax.set_ylim(0, 1)
        if top is None:
            device_ax.set_visible(False)
            continue
        curve = trials[top]
        epochs = curve["training_iteration"].astype(int)
        for device in device_columns(dict.fromkeys(curve.columns)):
            hidden = device in (unseen or {}).get(subset, set())
            device_ax.plot(epochs, curve[f"acc_{device}"].astype(float), "--" if hidden else "-", linewidth=0.8,
                           alpha=0.6, label=f"{device}*" if hidden else device)  # fmt: skip
        for name, style in (("acc", "-"), ("acc_seen", "--"), ("acc_unseen", ":")):
            if name in curve:
                device_ax.plot(epochs, curve[name].astype(float), style, color="black", linewidth=2, label=name)
        device_ax.set_title(f"Best trial {top}: per device (* dashed: unseen)")
        device_ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves stay visible
    figure.tight_layout()
    return figure
