"""Ray Tune experiments of a run: teachers, the student search, and the no-distillation references."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from results.trial_records import confirmation_experiment
from search.checkpoint_retention import CheckpointRetention
from search.per_subset import HonestOptunaSearch, PerSubsetScheduler, PerSubsetSearch
from search.progress import EpochProgress, SearchProgress
from search.request import RunRequest
from search.space import Dimension, Space
from search.stopping import StorageWatch, stoppable
from search.tensorboard import ReadableTensorBoard
from search.trial_context import TrialContext


def _trial_dirname(trial, seeded: bool = False) -> str:
    config = trial.config
    if config.get("stage") == "finetune":  # a teacher: one subset, one ensemble member
        return f"subset{config['subset']}_seed{config['seed']}_{trial.trial_id}"
    if config.get("stage"):  # a teacher stage before fine-tuning (pretraining, CochlScene): no subset of this run
        return f"{config['stage']}_{trial.trial_id}"
    label = f"subset{config['subset']}" if "subset" in config else "trial"
    if seeded:  # a confirmation run: the same configuration with another seed
        label += f"_seed{config['seed']}"
    return f"{label}_{trial.trial_id}"


def _tune_config(seeded: bool = False, **settings) -> tune.TuneConfig:
    # Reusing a worker between trials of equal resources saves a process start and the torch import (about
    # 4 s a trial here), which matters when a student trial takes seconds; Tune falls back to a fresh worker
    # when a stopped trial's thread does not end in time.
    name = functools.partial(_trial_dirname, seeded=seeded)
    return tune.TuneConfig(trial_dirname_creator=name, trial_name_creator=name, reuse_actors=True, **settings)


def _run_config(request: RunRequest, name: str, space: Space, keep_checkpoints: bool,
                progress: tune.Callback | None = None, epochs: int | None = None) -> tune.RunConfig:  # fmt: skip
    # Tune keeps every checkpoint; CheckpointRetention deletes all but the latest and the best once Tune's
    # snapshot no longer needs them (Tune's own num_to_keep deletes them before, and a crash then breaks resume).
    checkpoints = tune.CheckpointConfig(checkpoint_score_attribute=space.metric, checkpoint_score_order=space.mode)
    hparams = ["subset", *(d.name for d in space.dimensions), "kd_lambda", "seed"]
    callbacks = [StorageWatch(request.storage), ReadableTensorBoard(hparams, space.settings.epochs if epochs is None else epochs)]
    if keep_checkpoints:
        callbacks.append(CheckpointRetention(space.metric, space.mode))
    if progress is not None:
        callbacks.append(progress)
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


def _usable_snapshot(path: Path, with_searcher: bool) -> bool:
    """Whether Tune left a whole snapshot of the experiment at `path` to resume from.

    Tune writes experiment_state-<session>.json in place and its searcher's state after it, so a driver killed
    at the wrong moment leaves neither, half of one, or one without the other; given those, Tune silently
    restarts with one sample and no constants. An incomplete newest snapshot is moved aside (an older one,
    from before an earlier resume, may still be whole)."""
    for state in sorted(path.glob("experiment_state-*.json"), reverse=True):
        session = state.name.removeprefix("experiment_state-").removesuffix(".json")
        siblings = list(path.glob(f"*-{session}.*"))
        try:
            json.loads(state.read_text())
            whole = not with_searcher or any(f.name.startswith("search_gen_state-") for f in siblings)
        except ValueError:
            whole = False
        if whole:
            return True
        aside = path / ".incomplete"
        aside.mkdir(exist_ok=True)
        for file in siblings:
            file.rename(aside / file.name)
    return False


def _fit(request: RunRequest, name: str, trainable, **tuner_kwargs) -> None:
    path = request.run_dir / name
    if request.resume and tune.Tuner.can_restore(str(path)):
        if _usable_snapshot(path, with_searcher=tuner_kwargs["tune_config"].search_alg is not None):
            # Errored trials (a NaN loss) stay failed; trials cut off by the crash continue from their checkpoints.
            # Tune does not keep the param space itself; trials made after the resume take their constants from it.
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False,
                                       param_space=tuner_kwargs.get("param_space"))  # fmt: skip
            with stoppable():
                tuner.fit()
            return
        # Killed before Tune's first snapshot: nothing to continue, so the experiment starts again; what the
        # killed one wrote is kept beside it, out of the leaderboard's way.
        path.rename(path.with_name(f"{name}.interrupted-{time.strftime('%Y%m%d-%H%M%S')}"))
    tuner = tune.Tuner(trainable, **tuner_kwargs)
    with stoppable():  # Interrupted or StorageFull, after Tune saved its state, if asked to stop
        tuner.fit()


_EXPERIMENT_TITLES = {"teacher_pretrain": "teacher pretraining", "teacher_sit": "teacher CochlScene stage",
                      "teachers": "teacher", "teacher_ssl": "SSL teacher"}  # fmt: skip


def fit_experiment(request: RunRequest, name: str, trainable, param_space: dict) -> None:
    """A plain experiment of the run (no search, no checkpoints), always run afresh: its grid runs in parallel;
    each epoch is a line."""
    tune_config = _tune_config()
    progress = EpochProgress(_EXPERIMENT_TITLES.get(name, name))
    earlier = request.run_dir / name
    if earlier.exists():
        # Called only for what is missing from the cache (a resume, a teacher deleted or a storage moved): an
        # earlier experiment of the name ended without it, and restoring it would run nothing. It is kept aside.
        earlier.rename(earlier.with_name(f"{name}.earlier-{time.strftime('%Y%m%d-%H%M%S')}"))
    # epochs=0: nothing stops these early, so every trial that ends without an error ran its epochs.
    _fit(request, name, trainable, param_space=param_space, tune_config=tune_config,
         run_config=_run_config(request, name, request.space, keep_checkpoints=False, progress=progress, epochs=0))


def _resources(cpus: float, gpus: float) -> dict:
    return {"cpu": cpus, "gpu": gpus}


def _distribution(d: Dimension) -> optuna.distributions.BaseDistribution:
    if d.choices is not None:
        return optuna.distributions.CategoricalDistribution(list(d.choices))
    if d.integer:
        return optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log)
    return optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)


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


def trial_config(space: Space) -> dict:
    """A trial's config besides what the search suggests: the space's fixed settings (hyperparameters only)."""
    searched = {d.name for d in space.dimensions} | {"subset"}
    return {k: v for k, v in dataclasses.asdict(space.settings).items() if k not in searched}


def trainable_for(space: Space, context: TrialContext):
    """The system's trial function with the run's constants, and the per-trial resources of the space."""
    trainable = tune.with_parameters(space.spec.trainable, context=context)
    return tune.with_resources(trainable, _resources(space.resources.cpus_per_trial, space.resources.gpus_per_trial))


def search_trials(request: RunRequest, context: TrialContext) -> None:
    """One Optuna TPE study and one ASHA per subset, all in one Tune experiment named `search`."""
    space = request.space
    epochs = space.settings.epochs
    optuna_space = {d.name: _distribution(d) for d in space.dimensions}
    # Kept next to the run: `optuna-dashboard <run>/optuna.journal` opens every subset's study.
    storage = JournalStorage(JournalFileBackend(str(request.run_dir / "optuna.journal")))

    def make_searcher(subset: int) -> HonestOptunaSearch:
        return HonestOptunaSearch(space=optuna_space, metric=space.metric, mode=space.mode,
                                  sampler=sampler_for(space, subset),
                                  study_name=f"subset{subset}" if subset else "all", storage=storage,
                                  full_epochs=epochs)  # fmt: skip

    def make_scheduler():
        if space.scheduler.type == "fifo":
            return FIFOScheduler()
        return ASHAScheduler(max_t=epochs, grace_period=min(space.scheduler.grace_period, epochs),
                             reduction_factor=space.scheduler.reduction_factor)  # fmt: skip

    if space.spec.by_subset:
        search = PerSubsetSearch(list(space.subsets), space.samples, make_searcher, space.metric, space.mode)
        scheduler = PerSubsetScheduler(list(space.subsets), make_scheduler)
    else:  # one search over all trials
        search, scheduler = make_searcher(0), make_scheduler()
    tune_config = _tune_config(
        metric=space.metric,
        mode=space.mode,
        search_alg=search,
        scheduler=scheduler,
        num_samples=space.samples * max(1, len(space.subsets)),
        max_concurrent_trials=space.max_concurrent or None,
    )
    totals = {s: space.samples for s in space.subsets} if space.spec.by_subset else {0: space.samples}
    _fit(request, "search", trainable_for(space, context), param_space=trial_config(space), tune_config=tune_config,
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


def run_confirmation(request: RunRequest, context: TrialContext, board: pd.DataFrame) -> None:
    """Train the top k complete configurations of each subset again with new seeds (seed+1 … seed+S).

    One experiment per rank (`confirm`, then `confirm_rank2` …), in which each subset's trial of that rank runs
    again: a trial's config stays its hyperparameters, and results/ finds the trial a confirmation run repeats
    by them."""
    space = request.space
    complete = board[board["status"] == "complete"]
    seeds = list(range(space.settings.seed + 1, space.settings.seed + 1 + space.confirm_seeds))
    for rank in range(1, space.confirm_top_k + 1):
        picks = {int(subset): {d.name: rows.iloc[rank - 1][d.name] for d in space.dimensions}
                 for subset, rows in complete.groupby("subset") if len(rows) >= rank}  # fmt: skip
        if not picks:
            return
        name = confirmation_experiment(rank)
        title = "confirmation" if space.confirm_top_k == 1 else f"confirmation of rank {rank}"
        _fit(request, name, trainable_for(space, context), param_space=_following(space, picks, seed=tune.grid_search(seeds)),
             tune_config=_tune_config(seeded=True, max_concurrent_trials=space.max_concurrent or None),
             run_config=_run_config(request, name, space, keep_checkpoints=True,
                                    progress=_progress(space, title, dict.fromkeys(picks, space.confirm_seeds))))  # fmt: skip


def _following(space: Space, picks: dict[int, dict], **fixed) -> dict:
    """A param space with one grid point per subset of `picks`, whose searched values are that subset's pick."""
    param_space = {**trial_config(space), **fixed, "subset": tune.grid_search(sorted(picks))}
    for name in {n for pick in picks.values() for n in pick}:
        param_space[name] = tune.sample_from(lambda config, name=name: picks[config["subset"]][name])
    return param_space


def run_references(request: RunRequest, context: TrialContext, board: pd.DataFrame) -> None:
    """Retrain each subset's best configuration with kd_lambda = 1: what the same student does without a teacher
    (on the confirmation's seeds when there is one)."""
    space = request.space
    best = {int(subset): {d.name: rows.iloc[0][d.name] for d in space.dimensions if d.name != "kd_lambda"}
            for subset, rows in board[board["status"] == "complete"].groupby("subset")}  # fmt: skip
    if not best:
        return
    seeds = reference_seeds(space)
    param_space = _following(space, best, kd_lambda=1.0, seed=tune.grid_search(seeds))
    _fit(request, "no_kd", trainable_for(space, context), param_space=param_space,
         tune_config=_tune_config(seeded=len(seeds) > 1, max_concurrent_trials=space.max_concurrent or None),
         run_config=_run_config(request, "no_kd", space, keep_checkpoints=True,
                                progress=_progress(space, "no-KD reference", dict.fromkeys(best, len(seeds)))))  # fmt: skip


def reference_seeds(space: Space) -> list[int]:
    """The no-KD references' seeds: the confirmation's (seed+1 … seed+S) when the best configurations are
    confirmed, so both sides of the comparison have a mean and a spread over the same seeds; else the search's."""
    if space.confirm_top_k:
        return list(range(space.settings.seed + 1, space.settings.seed + 1 + space.confirm_seeds))
    return [space.settings.seed]
