"""One Tune experiment, one independent search per training subset.

DCASE24 evaluates one model per split, so trials of different subsets must never be compared:
each subset gets its own Optuna study (`PerSubsetSearch`) and its own ASHA brackets
(`PerSubsetScheduler`). Running them in a single experiment keeps every core busy (a subset's
stragglers overlap the next subset's trials) and gives one directory to watch and resume.

`HonestOptunaSearch` fixes what Ray's integration tells Optuna: a trial that ASHA stopped before
its last epoch is PRUNED (Ray reports it COMPLETE with its partial value, which biases TPE toward
configurations that learn fast early) with the value it reached, and a trial that errored or
reported a non-finite value is FAILED (Ray's `tell` of NaN fails and leaves the trial RUNNING forever).

The searchers' saved state holds no path: Tune's snapshot of a run is read back wherever the run directory
now is (copied or moved), and the journal the searchers write is always the one `bind` gives them, the one
in the run directory, never the one the run started with.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

SEARCH_STAGE = "search"


def journal_storage(path: Path) -> JournalStorage:
    """The Optuna journal at `path` (kept next to the run: `optuna-dashboard <run>/optuna.journal`).

    Optuna locks the journal with a symbolic link to it, `<journal>.lock`, and frees a lock left by a killed writer
    once its target has not changed for 30 s. A run killed while writing, then copied or moved, keeps a lock that
    points at the journal's old path: Optuna cannot time it and would wait for ever. Such a lock is no one's (one
    driver per run directory, and this one writes the journal by this path): it goes."""
    lock = Path(f"{path}.lock")
    if lock.is_symlink() and os.readlink(lock) != str(path):
        lock.unlink(missing_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def study_name(run: str, subset: int) -> str:
    """A subset's study, named with its run so that journals of several runs can be told apart once merged."""
    return f"{run}/subset{subset}" if subset else f"{run}/all"


def _number(trial: optuna.trial.Trial | int) -> int:
    """A trial's id in its storage (what a searcher's saved state keeps of it)."""
    return trial if isinstance(trial, int) else trial._trial_id


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that keeps a journal true to the trials. `full_epochs`: a complete trial's length.

    - Every epoch's ranking metric is an intermediate value, the last one included: Tune hands a trial's
      final result (the one that ends it, or the one ASHA stops it on) only to `on_trial_complete`.
    - A trial stopped early is told PRUNED after that final value is recorded (Optuna then keeps it as the
      trial's value); an errored or non-finite one FAIL.
    - Each Optuna trial carries the user attributes `trial_id`, the Tune trial id the leaderboard shows, and
      `stage` (`search`; confirmations and references are added by tuning.StageJournal).
    - A trial told FAIL that Tune runs again (`--resume` reruns errored trials) gets a new Optuna trial with
      the same parameters, so the study ends as the leaderboard does; the failed one stays as it was. The journal
      says which trials were told FAIL, also where Tune's snapshot of this searcher is older than the journal.
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

    def __getstate__(self) -> dict:
        # The storage names the journal's absolute path, and unpickling it opens that file: a copied run would
        # append to the original's journal, a moved one fail. Trials are kept as their ids in the journal.
        state = self.__dict__.copy()
        state["_storage"] = state["_ot_study"] = None
        state["_ot_trials"] = {tid: _number(t) for tid, t in self._ot_trials.items()}
        state.pop("_journal_checked", None)  # a resumed session reads the journal again
        return state

    def bind(self, storage: BaseStorage) -> None:
        """Use the journal `storage` (the run's own) for the study and every trial this searcher knows."""
        self._storage = storage
        self._ot_study = optuna.create_study(storage=storage, sampler=self._sampler, pruner=optuna.pruners.NopPruner(),
                                             study_name=self._study_name, load_if_exists=True,
                                             direction="minimize" if self._mode == "min" else "maximize")  # fmt: skip
        # A finished trial stays an id: making a Trial object of it would have the sampler prepare it again.
        self._ot_trials = {tid: t if tid in self._completed_trials else optuna.trial.Trial(self._ot_study, _number(t))
                           for tid, t in self._ot_trials.items()}  # fmt: skip

    def suggest(self, trial_id: str) -> dict | None:
        suggestion = super().suggest(trial_id)
        if suggestion is not None and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
            self._ot_trials[trial_id].set_user_attr("stage", SEARCH_STAGE)
        return suggestion

    def _reopen(self, trial_id: str, step: int) -> None:
        """A trial Optuna was told failed sends results again: Tune reruns it on --resume. It gets a new Optuna
        trial with the same parameters and the intermediate values the failed one had before `step`."""
        if trial_id not in self._ot_trials:
            return
        if trial_id not in self._completed_trials:
            # Tune's snapshot of this searcher may predate its telling Optuna the trial failed (a storage that
            # filled up between the two); the journal, written first, has the last word. Read once a session.
            checked = self.__dict__.setdefault("_journal_checked", set())
            if trial_id in checked:
                return
            checked.add(trial_id)
        failed = self._ot_study._storage.get_trial(_number(self._ot_trials[trial_id]))
        if failed.state != TrialState.FAIL:
            return
        self._ot_study.enqueue_trial(failed.params, user_attrs={**failed.user_attrs, "rerun_of": failed.number},
                                     skip_if_exists=False)  # fmt: skip
        trial = self._ot_study.ask(fixed_distributions=self._space)
        reported = set()
        for earlier, value in sorted(failed.intermediate_values.items()):
            if earlier < step:
                trial.report(value, earlier)
                reported.add(earlier)
        self._ot_trials[trial_id] = trial
        self.__dict__.setdefault("_reported_steps", {})[trial_id] = reported
        self._completed_trials.discard(trial_id)

    def _report(self, trial_id: str, result: dict | None) -> float | None:
        """Record `result`'s ranking metric as the intermediate value of its epoch; the value, None when not finite."""
        value = None if not result else result.get(self.metric)
        if value is None or not math.isfinite(value):
            return None
        step = int(result.get("training_iteration", 0))
        # A searcher restored from a snapshot of an older version has no record of its reports yet.
        reported = self.__dict__.setdefault("_reported_steps", {}).setdefault(trial_id, set())
        if step not in reported:  # Tune may hand the final result to on_trial_result and on_trial_complete
            with warnings.catch_warnings():  # an epoch run again after a resume from an older snapshot: kept once
                warnings.filterwarnings("ignore", message=".*is already reported", category=UserWarning)
                self._ot_trials[trial_id].report(float(value), step)
            reported.add(step)
        return float(value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not error and result:
            self._reopen(trial_id, int(result.get("training_iteration", 0)))
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
        self._reopen(trial_id, int(result.get("training_iteration", 0)))
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._report(trial_id, result)


class PerSubsetSearch(Searcher):
    """Hands out `samples` trials per subset, largest subset first in each round, each from its own searcher
    (subset 0: a system without subsets, whose trials get no `subset`).

    At most `max_concurrent` trials run at once (0: no limit); this searcher counts them itself, since Tune's
    ConcurrencyLimiter keeps results of trials it no longer counts (a rerun errored trial) from the searchers.
    Restored from a run that had fewer `samples`, it hands out the difference (`--resume --samples N`)."""

    def __init__(self, subsets: list[int], samples: int, make_searcher: Callable[[int], Searcher], metric: str,
                 mode: str, max_concurrent: int = 0, journal: Path | None = None):  # fmt: skip
        super().__init__(metric=metric, mode=mode)
        self.order = sorted(subsets, reverse=True)  # long trials first: shorter ones then fill the gaps
        self.searchers = {subset: make_searcher(subset) for subset in self.order}
        self.samples = samples
        self.remaining = {subset: samples for subset in self.order}
        self.owner: dict[str, int] = {}
        self.live: set[str] = set()
        self.turn = 0
        self.max_concurrent = max_concurrent
        self.journal = journal  # where the searchers write; never saved (see the module's docstring)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True  # every sub-searcher was built with its own space, metric and mode

    def suggest(self, trial_id: str) -> dict | None:
        if self.max_concurrent and len(self.live) >= self.max_concurrent:
            return None
        for _ in range(len(self.order)):
            subset = self.order[self.turn % len(self.order)]
            self.turn += 1
            if self.remaining[subset] > 0:
                suggestion = self.searchers[subset].suggest(trial_id)
                if suggestion is None:
                    return None
                self.remaining[subset] -= 1
                self.owner[trial_id] = subset
                self.live.add(trial_id)
                return {**suggestion, "subset": subset} if subset else suggestion  # 0: one search, no subsets
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.live.discard(trial_id)
        if trial_id in self.owner:
            self.searchers[self.owner[trial_id]].on_trial_complete(trial_id, result, error)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("journal", None)
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__getstate__(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)  # noqa: S301 - Tune's own searcher state, written by save()
        samples, max_concurrent, journal = self.samples, self.max_concurrent, self.__dict__.get("journal")
        self.__dict__.update(state)
        grown = samples - state.get("samples", samples)
        if grown > 0:
            self.remaining = {subset: left + grown for subset, left in self.remaining.items()}
        self.samples, self.max_concurrent, self.journal = max(samples, self.samples), max_concurrent, journal
        self.__dict__.setdefault("live", set())
        if journal is not None:
            storage = journal_storage(journal)
            for searcher in self.searchers.values():
                searcher.bind(storage)


class FixedPoints(Searcher):
    """Hands out the given configurations, one trial each, in order (at most `max_concurrent` at once; 0: no
    limit). Experiments without a search use it instead of Tune's grid generator, so every trial of a run gets
    its id the same way (Tune's 8 hex digits), whatever the experiment."""

    def __init__(self, points: list[dict], max_concurrent: int = 0):
        super().__init__()
        self.points = [copy.deepcopy(p) for p in points]
        self.next = 0
        self.live: set[str] = set()
        self.max_concurrent = max_concurrent

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if self.next >= len(self.points):
            return Searcher.FINISHED
        if self.max_concurrent and len(self.live) >= self.max_concurrent:
            return None
        self.next += 1
        self.live.add(trial_id)
        return copy.deepcopy(self.points[self.next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.live.discard(trial_id)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump({"next": self.next, "live": self.live}, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)  # written by save()
        self.next, self.live = state["next"], state["live"]


class PortableSearchGenerator(SearchGenerator):
    """Tune's SearchGenerator for a run directory that may have moved since Tune's snapshot of it.

    The snapshot keeps the experiment as it was started: its storage (the absolute path of the run then) and
    its trial count. Trials made after a resume would be written into the original run directory. Restored,
    this generator keeps the snapshot's counters and takes the rest from now: the run's `storage_path`, the
    trial constants Tune hands it, and `total_samples` (which a resume may grow)."""

    def __init__(self, searcher: Searcher, storage_path: Path, total_samples: int):
        super().__init__(searcher)
        self.storage_path = str(storage_path)
        self.planned = total_samples
        self.constants: dict | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        self.constants = copy.deepcopy(config)
        return super().set_search_properties(metric, mode, config, **spec)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        storage = self._experiment.storage  # the same object as the spec's "storage", so both follow
        storage.storage_fs_path = self.storage_path
        if self.constants is not None:
            self._experiment.spec["config"] = copy.deepcopy(self.constants)
        if self.planned > self._total_samples:
            self._total_samples = self.planned
            self._finished = False  # the searcher says FINISHED again once the added trials are handed out


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
