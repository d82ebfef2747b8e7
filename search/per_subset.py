"""One Tune experiment, one independent search per training subset.

DCASE24 evaluates one model per split, so trials of different subsets must never be compared:
each subset gets its own Optuna study (`PerSubsetSearch`) and its own ASHA brackets
(`PerSubsetScheduler`). Running them in a single experiment keeps every core busy (a subset's
stragglers overlap the next subset's trials) and gives one directory to watch and resume.

`HonestOptunaSearch` fixes what Ray's integration tells Optuna: a trial that ASHA stopped before
its last epoch is PRUNED (Ray reports it COMPLETE with its partial value, which biases TPE toward
configurations that learn fast early) with the value it reached, and a trial that errored or
reported a non-finite value is FAILED (Ray's `tell` of NaN fails and leaves the trial RUNNING forever).
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that keeps a journal true to the trials. `full_epochs`: a complete trial's length.

    - Every epoch's ranking metric is an intermediate value, the last one included: Tune hands a trial's
      final result (the one that ends it, or the one ASHA stops it on) only to `on_trial_complete`.
    - A trial stopped early is told PRUNED after that final value is recorded (Optuna then keeps it as the
      trial's value); an errored or non-finite one FAIL.
    - Each Optuna trial carries the user attribute `trial_id`, the Tune trial id the leaderboard shows.
    - The study's metric is named (Optuna's dashboard otherwise says "Objective 0").
    """

    def __init__(self, *args, full_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.full_epochs = full_epochs

    def _setup_study(self, mode) -> None:
        super()._setup_study(mode)
        if isinstance(self.metric, str):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names([self.metric])

    def suggest(self, trial_id: str) -> dict | None:
        suggestion = super().suggest(trial_id)
        if suggestion is not None and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
        return suggestion

    def _report(self, trial_id: str, result: dict | None) -> float | None:
        """Record `result`'s ranking metric as the intermediate value of its epoch; the value, None when not finite."""
        value = None if not result else result.get(self.metric)
        if value is None or not math.isfinite(value):
            return None
        step = int(result.get("training_iteration", 0))
        # A searcher restored from a snapshot of an older version has no record of its reports yet.
        reported = self.__dict__.setdefault("_reported_steps", {}).setdefault(trial_id, set())
        if step not in reported:  # Tune may hand the final result to on_trial_result and on_trial_complete
            self._ot_trials[trial_id].report(float(value), step)
            reported.add(step)
        return float(value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value = None if error else self._report(trial_id, result)
        epochs = 0 if not result else result.get("training_iteration", 0)
        if value is None:
            self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.FAIL)
        elif epochs < self.full_epochs:
            self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(self._ot_trials[trial_id], value, state=TrialState.COMPLETE)
        self._completed_trials.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._report(trial_id, result)


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
