"""Ray Tune experiments of a run: teachers, the student search, and the no-distillation references."""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from results.trial_records import confirmation_experiment, read_experiment, read_reports
from search.checkpoint_retention import CheckpointRetention
from search.per_subset import (
    FixedPoints,
    HonestOptunaSearch,
    PerSubsetScheduler,
    PerSubsetSearch,
    PortableSearchGenerator,
    journal_storage,
    study_name,
)
from search.progress import EpochProgress, SearchProgress, TrialName
from search.request import RunRequest
from search.snapshots import SnapshotKeeper, restore_kept_snapshot, whole_snapshot
from search.stopping import StorageWatch, stoppable
from search.tensorboard import ReadableTensorBoard
from search.trial_context import TrialContext
from spaces.space import Space

JOURNAL = "optuna.journal"


def fixed_values(space: Space, names: Iterable[str]) -> dict[str, Any]:
    """Each setting's fixed value in the space (None where it has none). A trial's config holds only what it was given
    besides (its suggestion, seed, overrides), so what a trial ran with is `trial.config.get(name, fixed)`."""
    return {name: getattr(space.settings, name, None) for name in names}


def _trial_dirname(trial, seeded: bool = False) -> str:
    config = trial.config
    label = f"subset{config['subset']}" if "subset" in config else "trial"
    if seeded:  # a confirmation run: the same configuration with another seed
        label += f"_seed{config['seed']}"
    return f"{label}_{trial.trial_id}"


def _named_dirname(trial, name_of: Callable[[dict], TrialName]) -> str:
    return f"{name_of(trial.config).directory}_{trial.trial_id}"


def _tune_config(seeded: bool = False, name_of: Callable[[dict], TrialName] | None = None,
                 **settings) -> tune.TuneConfig:  # fmt: skip
    # Reusing a worker between trials of equal resources saves a process start and the torch import (about
    # 4 s a trial here), which matters when a student trial takes seconds; Tune falls back to a fresh worker
    # when a stopped trial's thread does not end in time.
    if name_of is not None:
        name = functools.partial(_named_dirname, name_of=name_of)
    else:
        name = functools.partial(_trial_dirname, seeded=seeded)
    return tune.TuneConfig(trial_dirname_creator=name, trial_name_creator=name, reuse_actors=True, **settings)


def _run_config(request: RunRequest, name: str, space: Space, keep_checkpoints: bool,
                progress: tune.Callback | None = None, epochs: int | None = None,
                extra: list[tune.Callback] = ()) -> tune.RunConfig:  # fmt: skip
    # Tune keeps every checkpoint; CheckpointRetention deletes all but the latest and the best once Tune's
    # snapshot no longer needs them (Tune's own num_to_keep deletes them before, and a crash then breaks resume).
    # Tune restores callback states by position: the stateful ones keep theirs (CheckpointRetention third).
    checkpoints = tune.CheckpointConfig(checkpoint_score_attribute=space.metric, checkpoint_score_order=space.mode)
    searched = [d.name for d in space.dimensions]
    names = dict.fromkeys(["subset", *searched, *space.spec.reference_overrides, "seed"])
    hparams = fixed_values(space, names)
    callbacks = [StorageWatch(request.storage), ReadableTensorBoard(hparams, space.settings.epochs if epochs is None else epochs)]
    if keep_checkpoints:
        callbacks.append(CheckpointRetention(space.metric, space.mode))
    if progress is not None:
        callbacks.append(progress)
    if keep_checkpoints:  # a resumable experiment: its last whole snapshot is kept against a storage that fills up
        callbacks.append(SnapshotKeeper())
    callbacks += list(extra)
    return tune.RunConfig(
        name=name,
        storage_path=str(request.run_dir),
        checkpoint_config=checkpoints if keep_checkpoints else None,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=space.max_failures),
        verbose=1 if request.verbose else 0,
    )


def _progress(space: Space, title: str, totals: dict[int, int] | None) -> SearchProgress:
    return SearchProgress(title, space.metric, space.mode, space.settings.epochs, totals)


def _usable_snapshot(path: Path, with_searcher: bool = True) -> bool:
    """Whether Tune left a whole snapshot of the experiment at `path` to resume from.

    Tune writes experiment_state-<session>.json and the searcher's state in a staging folder and copies them over
    the storage's copies, so a driver killed at the wrong moment, or a storage that filled up, leaves neither, half
    of one, or one without the other; given those, Tune silently restarts with one sample and no constants. An
    incomplete newest snapshot is moved aside; then the last whole one SnapshotKeeper kept is put in its place, or
    an older one, from before an earlier resume, is used."""
    kept_restored = False
    for state in sorted(path.glob("experiment_state-*.json"), reverse=True):
        session = state.name.removeprefix("experiment_state-").removesuffix(".json")
        siblings = list(path.glob(f"*-{session}.*"))
        if whole_snapshot(siblings, with_searcher):
            return True
        aside = path / ".incomplete"
        aside.mkdir(exist_ok=True)
        for file in siblings:
            file.rename(aside / file.name)
        if not kept_restored:
            kept = restore_kept_snapshot(path)
            kept_restored = True
            if kept is not None:
                print(f"warning: Tune's latest snapshot of {path} was cut short (a storage that filled up, or a "
                      f"driver killed while writing it); resuming from its last whole one, of {kept}", file=sys.stderr,
                      flush=True)  # fmt: skip
                return True
    return False


def _restored_matches(path: Path, points: list[dict] | None) -> bool:
    """Whether every trial the experiment at `path` holds is one of `points` (None: any trial is)."""
    if points is None:
        return True
    if list(path.glob("basic-variant-state-*")):  # made by Tune's grid generator (before FixedPoints): run anew
        return False
    wanted = {_point_key(point, point) for point in points}
    return all(_point_key(record.config, points[0]) in wanted for record in read_experiment(path))


def _point_key(config: dict, point: dict) -> str:
    def plain(value):  # 32 and 32.0 are one value, whether a config or a leaderboard cell holds it
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    return json.dumps({k: plain(config.get(k)) for k in sorted(point)}, sort_keys=True, default=str)


def _continue_restored(tuner: tune.Tuner, tune_config: tune.TuneConfig, run_config: tune.RunConfig) -> None:
    # Tuner.restore takes the searcher and the callbacks from the tuner.pkl pickled when the experiment started:
    # they hold that start's run directory, journal, storage and sample count, so a copied run would write into
    # the original and a grown one would not grow. Ray 2.60 has no argument to give them anew; the restored
    # tuner's are replaced here, before it runs (its trials and their checkpoints come from the snapshot).
    internal = tuner._local_tuner
    internal._tune_config = tune_config
    internal._run_config.callbacks = run_config.callbacks


def _set_aside(path: Path, label: str) -> Path:
    aside = path.with_name(f"{path.name}.{label}-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    return aside


def _fit(request: RunRequest, name: str, trainable, points: list[dict] | None = None, **tuner_kwargs) -> None:
    """Run the experiment `name`, or continue it on --resume. `points`: the configurations an experiment without a
    search must run; a resumed one that ran others (a grown search changed a subset's best) is set aside."""
    path = request.run_dir / name
    if request.resume and tune.Tuner.can_restore(str(path)):
        if not _restored_matches(path, points):
            aside = _set_aside(path, "earlier")
            print(f"{name}: the configurations to run changed since it ran; the earlier one is kept as {aside.name}",
                  flush=True)  # fmt: skip
        elif _usable_snapshot(path):
            # Trials cut off by the crash continue from their checkpoints, and so do errored ones (a teacher cache
            # deleted under them, a worker that died): a resume heals what failed. The param space is given
            # again: trials made after the resume take their constants from it.
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True,
                                       param_space=tuner_kwargs.get("param_space"))  # fmt: skip
            _continue_restored(tuner, tuner_kwargs["tune_config"], tuner_kwargs["run_config"])
            with stoppable(request.storage):
                tuner.fit()
            return
        else:
            # Killed before Tune's first snapshot: nothing to continue, so the experiment starts again; what the
            # killed one wrote is kept beside it, out of the leaderboard's way.
            aside = _set_aside(path, "interrupted")
            print(f"warning: {path} holds no whole snapshot to resume from (stopped before Tune wrote one); {name} "
                  f"starts again, and what it wrote is kept in {aside.name}", file=sys.stderr, flush=True)  # fmt: skip
    tuner = tune.Tuner(trainable, **tuner_kwargs)
    with stoppable(request.storage):  # Interrupted or StorageFull, after Tune saved its state, if asked to stop
        tuner.fit()


def _generator(searcher: Searcher, request: RunRequest, total: int) -> PortableSearchGenerator:
    return PortableSearchGenerator(searcher, request.run_dir, total)


def fit_experiment(request: RunRequest, name: str, trainable, param_space: dict, title: str,
                   name_of: Callable[[dict], TrialName]) -> None:  # fmt: skip
    """A plain experiment of the run (no search, no checkpoints), always run afresh: its grid runs in parallel;
    each epoch is a line, its trial named by `name_of` and the experiment by `title`."""
    points = [config for _, config in generate_variants(param_space)]
    tune_config = _tune_config(search_alg=_generator(FixedPoints(points), request, len(points)), num_samples=len(points),
                               name_of=name_of)  # fmt: skip
    progress = EpochProgress(title, name_of)
    earlier = request.run_dir / name
    if earlier.exists():
        # Called only for what is missing from the cache (a resume, a teacher deleted or a storage moved): an
        # earlier experiment of the name ended without it, and restoring it would run nothing. It is kept aside.
        _set_aside(earlier, "earlier")
    # epochs=0: nothing stops these early, so every trial that ends without an error ran its epochs.
    _fit(request, name, trainable, param_space={}, tune_config=tune_config,
         run_config=_run_config(request, name, request.space, keep_checkpoints=False, progress=progress, epochs=0))


def _resources(cpus: float, gpus: float) -> dict:
    return {"cpu": cpus, "gpu": gpus}


class _TuneStoppedGrid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its `study.stop()` once every point was told: that call is only allowed
    inside `Study.optimize`, and raises when Tune tells the last trial. Tune asks for exactly one trial per
    grid point (`samples` is the grid's size), so nothing needs stopping."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def sampler_for(space: Space, subset: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of one subset's study (each subset its own seed, so their searches differ)."""
    if space.sampler == "grid":
        return _TuneStoppedGrid({d.name: list(d.choices) for d in space.dimensions}, seed=space.seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=space.seed + subset)
    return optuna.samplers.TPESampler(seed=space.seed + subset, n_startup_trials=max(2, space.samples // 3))


def trainable_for(space: Space, context: TrialContext):
    """The system's trial function with the run's constants, and the per-trial resources of the space."""
    trainable = tune.with_parameters(space.spec.trial, context=context)
    return tune.with_resources(trainable, _resources(space.resources.cpus_per_trial, space.resources.gpus_per_trial))


def trial_scheduler(space: Space) -> FIFOScheduler | ASHAScheduler:
    """One subset's scheduler: every trial to its last epoch (fifo), or ASHA, which may stop a trial once it ran
    grace_period epochs."""
    epochs = space.settings.epochs
    if space.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(max_t=epochs, grace_period=min(space.scheduler.grace_period, epochs),
                         reduction_factor=space.scheduler.reduction_factor)  # fmt: skip


def search_trials(request: RunRequest, context: TrialContext) -> None:
    """One Optuna TPE study and one ASHA per subset, all in one Tune experiment named `search`."""
    space = request.space
    epochs = space.settings.epochs
    optuna_space = {d.name: d.distribution() for d in space.dimensions}
    journal = request.run_dir / JOURNAL
    storage = journal_storage(journal)

    def make_searcher(subset: int) -> HonestOptunaSearch:
        return HonestOptunaSearch(space=optuna_space, metric=space.metric, mode=space.mode,
                                  sampler=sampler_for(space, subset), study_name=study_name(request.name, subset),
                                  storage=storage, full_epochs=epochs)  # fmt: skip

    subsets = list(space.subsets) if space.spec.by_subset else [0]  # 0: one search over all trials
    search = PerSubsetSearch(subsets, space.samples, make_searcher, space.metric, space.mode,
                             max_concurrent=space.max_concurrent, journal=journal)  # fmt: skip
    make_scheduler = functools.partial(trial_scheduler, space)
    scheduler = PerSubsetScheduler(subsets, make_scheduler) if space.spec.by_subset else make_scheduler()
    total = space.samples * len(subsets)
    tune_config = _tune_config(metric=space.metric, mode=space.mode, search_alg=_generator(search, request, total),
                               scheduler=scheduler, num_samples=total)  # fmt: skip
    totals = {s: space.samples for s in subsets}
    _fit(request, "search", trainable_for(space, context), param_space={}, tune_config=tune_config,
         run_config=_run_config(request, "search", space, keep_checkpoints=True,
                                progress=_progress(space, "search", totals)))  # fmt: skip
    _fail_orphans(storage)


def _fail_orphans(storage: JournalStorage) -> None:
    """Tell Optuna that trials still RUNNING once the search is over failed: a killed driver asked for them,
    and neither the resumed searcher nor anything else ever will tell their outcome."""
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


class StageJournal(tune.Callback):
    """Adds each trial of a confirmation or reference experiment to its subset's Optuna study, beside the search's
    trials, as a finished trial with its parameters, every epoch's value and the user attributes `stage` (the
    experiment: confirm, confirm_rank2, no_kd), `trial_id` and `seed`. Recorded once per trial, also when a
    resume finds it ended before a crash."""

    def __init__(self, journal: Path, run: str, stage: str, space: Space):
        self.journal, self.run, self.stage = journal, run, stage
        self.metric, self.mode, self.epochs = space.metric, space.mode, space.settings.epochs
        self.distributions = {d.name: d.distribution() for d in space.dimensions}
        self.overridden = fixed_values(space, space.spec.reference_overrides)
        self.values: dict[str, dict[int, float]] = {}  # trial id → epoch → metric, as reported here
        self._storage: JournalStorage | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_storage": None}  # a journal storage pickles its path, and opens it on unpickling

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.values.setdefault(trial.trial_id, {})[int(result.get("training_iteration", 0))] = float(value)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, failed=True)

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            if trial.status in ("TERMINATED", "ERROR"):
                self._record(trial, failed=trial.status == "ERROR")

    def _record(self, trial, failed: bool) -> None:
        if self._storage is None:
            self._storage = journal_storage(self.journal)
        subset = int(trial.config.get("subset", 0))
        study = optuna.create_study(storage=self._storage, study_name=study_name(self.run, subset), load_if_exists=True,
                                    direction="minimize" if self.mode == "min" else "maximize")  # fmt: skip
        values = {**_reported(trial, self.metric), **self.values.get(trial.trial_id, {})}
        complete = bool(not failed and values and max(values) >= self.epochs)
        recorded = [t.state for t in study.get_trials(deepcopy=False)
                    if t.user_attrs.get("trial_id") == trial.trial_id and t.user_attrs.get("stage") == self.stage]
        if optuna.trial.TrialState.COMPLETE in recorded or (recorded and not complete):
            return  # told already; a failed trial a resume ran again to its end is added once more, complete
        params = {}
        for name, distribution in self.distributions.items():
            value = trial.config.get(name)
            try:  # a reference's settings (kd_lambda = 1) may lie outside the searched range: then only user attributes
                optuna.trial.create_trial(params={name: value}, distributions={name: distribution}, value=0.0)
                params[name] = value
            except (ValueError, TypeError):
                pass
        attrs = {"trial_id": trial.trial_id, "stage": self.stage, "seed": trial.config.get("seed"),
                 **{name: trial.config.get(name, fixed) for name, fixed in self.overridden.items()}}  # fmt: skip
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL,
            value=values[max(values)] if complete else None, params=params,
            distributions={k: self.distributions[k] for k in params}, user_attrs=attrs, intermediate_values=values))


def _reported(trial, metric: str) -> dict[int, float]:
    """Every epoch's `metric` the trial wrote to its result.json (earlier drivers' epochs of a resumed trial too)."""
    found = {}
    if trial.path is None:
        return found
    for result in read_reports(Path(trial.path) / "result.json")[0]:
        value = result.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            found[int(result.get("training_iteration", 0))] = float(value)
    return found


def run_confirmation(request: RunRequest, context: TrialContext, board: pd.DataFrame) -> None:
    """Train the top k complete configurations of each subset again with new seeds (seed+1 … seed+S).

    One experiment per rank (`confirm`, then `confirm_rank2` …), in which each subset's trial of that rank runs
    again: a trial's config stays its hyperparameters, and results/ finds the trial a confirmation run repeats
    by them."""
    space = request.space
    complete = board[board["status"] == "complete"]
    seeds = space.confirmation_seeds
    for rank in range(1, space.confirm_top_k + 1):
        picks = {int(subset): {d.name: _plain(rows.iloc[rank - 1][d.name]) for d in space.dimensions}
                 for subset, rows in complete.groupby("subset") if len(rows) >= rank}  # fmt: skip
        if not picks:
            return
        name = confirmation_experiment(rank)
        title = "confirmation" if space.confirm_top_k == 1 else f"confirmation of rank {rank}"
        _fit_points(request, context, name, _points(picks, seeds), title, dict.fromkeys(picks, space.confirm_seeds),
                    seeded=True)


def _plain(value):
    """A leaderboard cell as the plain Python value a trial config holds (numpy scalars are not JSON)."""
    return value.item() if hasattr(value, "item") else value


def _points(picks: dict[int, dict], seeds: list[int], **fixed) -> list[dict]:
    """One configuration per subset of `picks` and seed: the pick's searched values, the seed, and `fixed`."""
    return [{**({"subset": subset} if subset else {}), **picks[subset], **fixed, "seed": seed}  # 0: no subsets
            for subset in sorted(picks) for seed in seeds]  # fmt: skip


def _fit_points(request: RunRequest, context: TrialContext, name: str, points: list[dict], title: str,
                totals: dict[int, int], seeded: bool) -> None:  # fmt: skip
    """The experiment `name`: one trial per configuration of `points`, each recorded in its subset's study."""
    space = request.space
    search = FixedPoints(points, max_concurrent=space.max_concurrent)
    journal = StageJournal(request.run_dir / JOURNAL, request.name, name, space)
    _fit(request, name, trainable_for(space, context), points=points, param_space={},
         tune_config=_tune_config(seeded=seeded, search_alg=_generator(search, request, len(points)),
                                  num_samples=len(points)),
         run_config=_run_config(request, name, space, keep_checkpoints=True, progress=_progress(space, title, totals),
                                extra=[journal]))  # fmt: skip


def run_references(request: RunRequest, context: TrialContext, board: pd.DataFrame) -> None:
    """Retrain each subset's best configuration with the system's reference settings (kd_lambda = 1): what the same
    student does without a teacher (on the confirmation's seeds when there is one)."""
    space = request.space
    overrides = space.spec.reference_overrides
    best = {int(subset): {d.name: _plain(rows.iloc[0][d.name]) for d in space.dimensions if d.name not in overrides}
            for subset, rows in board[board["status"] == "complete"].groupby("subset")}  # fmt: skip
    if not best:
        return
    seeds = reference_seeds(space)
    _fit_points(request, context, "no_kd", _points(best, seeds, **overrides), "no-KD reference",
                dict.fromkeys(best, len(seeds)), seeded=len(seeds) > 1)


def reference_seeds(space: Space) -> list[int]:
    """The no-KD references' seeds: the confirmation's (seed+1 … seed+S) when the best configurations are
    confirmed, so both sides of the comparison have a mean and a spread over the same seeds; else the search's."""
    return space.confirmation_seeds if space.confirm_top_k else [space.settings.seed]
