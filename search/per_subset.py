"""One Tune experiment, one independent search per training subset.

DCASE24 evaluates one model per split, so trials of different subsets must never be compared:
each subset gets its own Optuna study (`PerSubsetSearch`) and its own ASHA brackets
(`PerSubsetScheduler`). Running them in a single experiment keeps every core busy (a subset's
stragglers overlap the next subset's trials) and gives one directory to watch and resume.

`HonestOptunaSearch` fixes what Ray's integration tells Optuna: a trial that ASHA stopped before
its last epoch is PRUNED (Ray reports it COMPLETE with its partial value, which biases TPE toward
configurations that learn fast early), and a trial that errored or reported a non-finite value
is FAILED (Ray's `tell` of NaN fails and leaves the trial RUNNING forever).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna which trials were pruned or failed. `full_epochs`: a complete trial's length."""

    def __init__(self, *args, full_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.full_epochs = full_epochs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value = None if not result else result.get(self.metric)
        epochs = 0 if not result else result.get("training_iteration", 0)
        if error or value is None or not math.isfinite(value):
            self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.FAIL)
        elif epochs < self.full_epochs:
            self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(self._ot_trials[trial_id], value, state=TrialState.COMPLETE)
        self._completed_trials.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if value is not None and math.isfinite(value):
            super().on_trial_result(trial_id, result)


class PerSubsetSearch(Searcher):
    """Hands out `samples` trials per subset, largest subset first in each round, each from its own searcher."""

    def __init__(self, subsets: list[int], samples: int, make_searcher: Callable[[int], Searcher], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.order = sorted(subsets, reverse=True)  # long trials first: shorter ones then fill the gaps
        self.searchers = {subset: make_searcher(subset) for subset in self.order}
        self.remaining = {subset: samples for subset in self.order}
        self.owner: dict[str, int] = {}
        self.turn = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True  # every sub-searcher was built with its own space, metric and mode

    def suggest(self, trial_id: str) -> dict | None:
        for _ in range(len(self.order)):
            subset = self.order[self.turn % len(self.order)]
            self.turn += 1
            if self.remaining[subset] > 0:
                suggestion = self.searchers[subset].suggest(trial_id)
                if suggestion is None:
                    return None
                self.remaining[subset] -= 1
                self.owner[trial_id] = subset
                return {**suggestion, "subset": subset}
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))  # noqa: S301 - Tune's own searcher state, written by save()


class PerSubsetScheduler(FIFOScheduler):
    """Routes every trial to the scheduler of its subset, so early stopping compares like with like."""

    def __init__(self, subsets: list[int], make_scheduler: Callable[[], TrialScheduler]):
        super().__init__()
        self.schedulers = {subset: make_scheduler() for subset in subsets}
        self._supports_buffered_results = all(s.supports_buffered_results for s in self.schedulers.values())

    def _of(self, trial: Trial) -> TrialScheduler:
        return self.schedulers[trial.config["subset"]]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return all(s.set_search_properties(metric, mode, **spec) for s in self.schedulers.values())

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"subset {s}: {sched.debug_string()}" for s, sched in self.schedulers.items())
