"""Trial progress as a researcher reads it: one line per finished trial (per-subset counts and an ETA), one per
teacher epoch. Tune callbacks, in place of Ray's own reporter (switched off by `console.quiet_ray`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ray import tune

from search.console import duration, say


def _group(trial) -> int:
    return int(trial.config.get("subset", 0))


def _label(group: int) -> str:
    return f"subset {group}%" if group else "all trials"


class SearchProgress(tune.Callback):
    """After each finished trial: its subset's trials done / total, the subset's best so far, and an ETA.

    `totals`: trials expected per subset (the search hands them out over time); None counts the trials Tune
    holds (a grid). Best: of the trials that ran every `epochs`, by `metric` of their last epoch, as the
    leaderboard ranks them. A trial ASHA stopped early is never the best: its value, from an earlier epoch, would
    be shown and then replaced by a lower one of a complete trial, and the best so far must never go down.
    """

    def __init__(self, title: str, metric: str, mode: str, epochs: int, totals: dict[int, int] | None = None):
        self.title, self.metric, self.sign, self.epochs = title, metric, 1 if mode == "max" else -1, epochs
        self.totals = totals
        self.start = time.monotonic()
        # Trials that ended in this driver (Tune calls back before it sets their status); a resumed run's earlier
        # ones count as done but do not time anything.
        self.ended: dict[str, bool] = {}  # trial id → failed

    def _done(self, trials) -> list:
        return [t for t in trials if t.trial_id in self.ended or t.status in ("TERMINATED", "ERROR")]

    def _failed(self, trial) -> bool:
        return self.ended.get(trial.trial_id, trial.status == "ERROR")

    def _best(self, trials):
        scored = []
        for t in self._done(trials):
            value = t.last_result.get(self.metric)
            complete = t.last_result.get("training_iteration", 0) >= self.epochs
            if complete and not self._failed(t) and isinstance(value, (int, float)) and math.isfinite(value):
                scored.append((self.sign * value, t))
        return max(scored, key=lambda s: s[0])[1] if scored else None

    def _line(self, trials, trial, failed: bool) -> str:
        group = _group(trial)
        mine = [t for t in trials if _group(t) == group]
        total = (self.totals or {}).get(group, len(mine))
        done = len(self._done(mine))
        parts = [f"  {self.title} {_label(group)}: {done}/{total} done"]
        result = trial.last_result
        if failed:
            parts.append(f"trial {trial.trial_id} failed")
        elif result.get("training_iteration", 0) < self.epochs:
            parts.append(f"trial {trial.trial_id} stopped at epoch {result.get('training_iteration', 0)}")
        best = self._best(mine)
        if best is not None:
            r = best.last_result
            unseen = r.get("acc_unseen")
            cell = f"best {self.metric} {r[self.metric]:.3f}"
            if self.metric != "acc" and isinstance(r.get("acc"), float):
                cell += f" (acc {r['acc']:.3f})"
            if isinstance(unseen, float) and math.isfinite(unseen):
                cell += f" unseen {unseen:.3f}"
            parts.append(f"{cell} [{best.trial_id}]")
        all_total = sum(self.totals.values()) if self.totals else len(trials)
        remaining = all_total - len(self._done(trials))
        if self.ended and remaining > 0:
            eta = (time.monotonic() - self.start) / len(self.ended) * remaining
            parts.append(f"ETA {duration(eta)}")
        return " · ".join(parts)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = False
        say(self._line(trials, trial, failed=False))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = True
        say(self._line(trials, trial, failed=True))


@dataclass(frozen=True)
class TrialName:
    """How a trial of a plain experiment (a teacher) is named: its directory, its words on the console, its epochs."""

    directory: str  # the start of its directory's name, before the trial id: "subset10_seed1", "sit"
    who: str  # on its progress lines, after the experiment's title: "subset 10% seed 1", or nothing
    epochs: int


class EpochProgress(tune.Callback):
    """Every epoch of a long trial (a teacher), as one line: which trial, epoch n / N, and its figures.
    `name_of`: a trial's config → its TrialName, from the code that made the experiment."""

    def __init__(self, title: str, name_of: Callable[[dict], TrialName]):
        self.title = title
        self.name_of = name_of

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        name = self.name_of(trial.config)
        who, total = name.who, name.epochs
        cells = [f"epoch {result.get('training_iteration', '?')}/{total}"]
        for key in ("train_loss", "acc", "acc_unseen"):
            if isinstance(result.get(key), float) and math.isfinite(result[key]):
                cells.append(f"{key} {result[key]:.3f}")
        say(f"  {self.title} {who}".rstrip() + ": " + " · ".join(cells))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        say(f"  {self.title}: trial {trial.trial_id} failed (see {trial.local_path})")
