"""What Optuna is told: complete trials COMPLETE, early-stopped trials PRUNED, NaN or errored trials FAIL."""

import math
import os
import pickle
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.per_subset import HonestOptunaSearch, PerSubsetSearch, journal_storage


def _searcher(**kwargs) -> HonestOptunaSearch:
    space = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    return HonestOptunaSearch(space=space, metric="acc", mode="max", full_epochs=3, **kwargs)


def test_states_told_to_optuna():
    searcher = _searcher()
    for trial_id in ("done", "early", "nan", "crash"):
        assert "lr" in searcher.suggest(trial_id)
    # As Tune calls it: every result but the last goes to on_trial_result, the last only to on_trial_complete.
    for epoch in (1, 2):
        searcher.on_trial_result("done", {"acc": 0.5 + epoch / 10, "training_iteration": epoch})
    searcher.on_trial_complete("done", {"acc": 0.8, "training_iteration": 3})
    searcher.on_trial_result("early", {"acc": 0.122, "training_iteration": 1})
    searcher.on_trial_complete("early", {"acc": 0.291, "training_iteration": 2})  # ASHA stopped it on epoch 2
    searcher.on_trial_result("nan", {"acc": math.nan, "training_iteration": 1})
    searcher.on_trial_complete("nan", {"acc": math.nan, "training_iteration": 3})
    searcher.on_trial_complete("crash", None, error=True)
    trials = searcher._ot_study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].value == 0.8 and trials[0].intermediate_values == {1: 0.6, 2: 0.7, 3: 0.8}
    assert trials[1].intermediate_values == {1: 0.122, 2: 0.291}, "a pruned trial keeps what it reached"
    assert trials[1].value == 0.291, "its value is the epoch it stopped on, not the one before"
    assert trials[2].intermediate_values == {}, "NaN is never reported as a value"
    assert [t.user_attrs["trial_id"] for t in trials] == ["done", "early", "nan", "crash"]
    assert searcher._ot_study.metric_names == ["acc"]


def test_a_result_told_twice_is_recorded_once():
    searcher = _searcher()
    searcher.suggest("t")
    searcher.on_trial_result("t", {"acc": 0.4, "training_iteration": 3})
    searcher.on_trial_complete("t", {"acc": 0.4, "training_iteration": 3})
    (trial,) = searcher._ot_study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and trial.intermediate_values == {3: 0.4}


def test_per_subset_search_gives_each_subset_its_own_study_and_budget():
    studies = {}

    def make(subset):
        studies[subset] = _searcher(study_name=f"subset{subset}")
        return studies[subset]

    search = PerSubsetSearch([5, 100], samples=2, make_searcher=make, metric="acc", mode="max")
    suggestions = [search.suggest(f"t{i}") for i in range(5)]
    assert [s["subset"] for s in suggestions[:4]] == [100, 5, 100, 5], "largest subset first in every round"
    assert suggestions[4] == PerSubsetSearch.FINISHED
    search.on_trial_complete("t0", {"acc": 0.7, "training_iteration": 3})
    assert len(studies[100]._ot_study.trials) == 2 and len(studies[5]._ot_study.trials) == 2
    assert studies[100]._ot_study.trials[0].state == TrialState.COMPLETE
    assert studies[5]._ot_study.trials[0].state == TrialState.RUNNING


def test_grid_sampler_visits_every_combination_once_and_tells_the_last():
    from search.systems import build_space
    from search.tuning import sampler_for
    from spaces.space_file import read_space_file

    raw = read_space_file("kd")
    raw.update(sampler="grid", search={"subset": [5], "lr": [0.002, 0.02], "kd_lambda": [0.1, 0.5, 1.0]})
    space = build_space(raw)
    assert space.samples == 6
    distributions = {d.name: optuna.distributions.CategoricalDistribution(list(d.choices)) for d in space.dimensions}
    searcher = HonestOptunaSearch(space=distributions, metric="acc", mode="max", sampler=sampler_for(space, 5),
                                  full_epochs=1)  # fmt: skip
    seen = {tuple(sorted(searcher.suggest(f"t{i}").items())) for i in range(6)}
    assert len(seen) == 6
    for i in range(6):  # Optuna's own grid sampler raises on the last one (it calls study.stop())
        searcher.on_trial_complete(f"t{i}", {"acc": i / 10, "training_iteration": 1})
    assert [t.state for t in searcher._ot_study.trials] == [TrialState.COMPLETE] * 6


def test_a_journal_lock_left_where_a_copied_run_used_to_be_is_cleared_and_a_live_one_kept(tmp_path):
    """A driver killed while writing its journal leaves `optuna.journal.lock`, a link to the journal. Optuna frees such
    a lock once its target has been still for 30 s; but in a run copied or moved since, the link names the old path,
    Optuna cannot time it and the resumed run waited for ever. That lock goes; a lock on this journal stays."""
    journal = tmp_path / "copy" / "optuna.journal"
    journal.parent.mkdir()
    optuna.create_study(storage=journal_storage(journal), study_name="run/subset5")
    lock = Path(f"{journal}.lock")
    os.symlink(tmp_path / "moved_away" / "optuna.journal", lock)  # the original's path, gone
    storage = journal_storage(journal)
    assert not lock.is_symlink(), "the lock of the journal's old place is no one's"
    study = optuna.load_study(storage=storage, study_name="run/subset5")
    study.add_trial(optuna.trial.create_trial(value=1.0))  # writes: it would wait for ever on that lock
    assert len(study.trials) == 1

    os.symlink(journal, lock)  # held by a writer of this very journal: not ours to take
    journal_storage(journal)
    assert lock.is_symlink()
    lock.unlink()


def test_a_trial_told_failed_after_the_searchers_snapshot_is_rerun_as_a_new_trial(tmp_path):
    """A storage that filled up: the journal recorded a trial's failure, Tune's snapshot of the searcher (taken
    before) did not. The resumed run reruns the trial from its checkpoint; it gets a new Optuna trial with the
    same parameters and the values before its checkpoint, and the failed one stays as it was."""
    storage = journal_storage(tmp_path / "optuna.journal")
    searcher = _searcher(study_name="run/subset5")
    searcher.bind(storage)
    params = searcher.suggest("t")
    searcher.on_trial_result("t", {"acc": 0.4, "training_iteration": 1})
    snapshot = pickle.dumps(searcher)  # what Tune saved before the disk was full
    searcher.on_trial_result("t", {"acc": 0.5, "training_iteration": 2})
    searcher.on_trial_complete("t", None, error=True)  # its checkpoint could not be written

    resumed = pickle.loads(snapshot)
    resumed.bind(journal_storage(tmp_path / "optuna.journal"))
    resumed.on_trial_result("t", {"acc": 0.45, "training_iteration": 2})  # rerun from its epoch-1 checkpoint
    resumed.on_trial_complete("t", {"acc": 0.6, "training_iteration": 3})
    failed, rerun = optuna.load_study(study_name="run/subset5", storage=storage).trials
    assert failed.state == TrialState.FAIL and failed.intermediate_values == {1: 0.4, 2: 0.5}
    assert rerun.state == TrialState.COMPLETE and rerun.params == params and rerun.value == 0.6
    assert rerun.intermediate_values == {1: 0.4, 2: 0.45, 3: 0.6}
    assert rerun.user_attrs["trial_id"] == "t" and rerun.user_attrs["rerun_of"] == failed.number
