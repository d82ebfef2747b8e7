"""A trial keeps its latest and its best checkpoint, and never one Tune's snapshot would restore it from."""

from __future__ import annotations

import json
import math
import pickle
import tempfile
from pathlib import Path
from types import SimpleNamespace

from ray import tune
from ray.train._internal.checkpoint_manager import _CheckpointManager, _TrainingResult
from ray.tune.utils.serialization import TuneFunctionEncoder

from search.checkpoint_retention import CheckpointRetention, deletable, restore_floors

SCORES = [0.5, 0.9, 0.6, 0.7]  # the best is epoch 2 (checkpoint 1), the latest checkpoint 3


def _manager(checkpoint: Path) -> object:
    """A trial's checkpoint manager that registered `checkpoint`, as Tune writes it into its snapshot."""
    manager = _CheckpointManager(tune.CheckpointConfig(checkpoint_score_attribute="acc", checkpoint_score_order="max"))
    manager.register_checkpoint(_TrainingResult(checkpoint=tune.Checkpoint(str(checkpoint)), metrics={"acc": 0.5}))
    return json.loads(json.dumps({"m": manager}, cls=TuneFunctionEncoder))["m"]


def test_latest_and_best_stay_the_rest_go():
    scores = dict(enumerate(SCORES))
    assert deletable({0, 1, 2, 3}, scores, "max", floor=None) == {0, 2}
    assert deletable({0, 1, 2, 3}, scores, "min", floor=None) == {1, 2}, "lowest is best in min mode"
    assert deletable({0, 1, 2}, {0: 0.5, 1: 0.5, 2: 0.4}, "max", floor=None) == {0}, "a tie goes to the later"
    assert deletable({0, 1, 2}, {0: 0.9, 1: math.nan, 2: 0.1}, "max", floor=None) == {1}, "NaN is never best"
    assert deletable({0, 1}, {}, "max", floor=None) == set(), "nothing reported, nothing known: keep all"


def test_what_a_resume_would_restore_from_stays():
    scores = dict(enumerate(SCORES))
    # The snapshot on storage names checkpoint 0: it and everything after it stay until the snapshot moves on.
    assert deletable({0, 1, 2, 3}, scores, "max", floor=0) == set()
    assert deletable({0, 1, 2, 3}, scores, "max", floor=3) == {0, 2}
    # Folders 4 and 5 were written before a crash and never reported in this run: gone, unless still needed.
    assert deletable({0, 1, 2, 3, 4, 5}, scores, "max", floor=None) == {0, 2, 4, 5}
    assert deletable({0, 1, 2, 3, 4, 5}, scores, "max", floor=2) == {0}


def test_a_real_search_ends_with_the_latest_and_the_best(ray_session, tmp_path):
    scores = SCORES

    def epochs(config: dict) -> None:  # local, so Ray's workers get it by value
        for epoch in range(len(scores)):
            with tempfile.TemporaryDirectory() as directory:
                Path(directory, "epoch.json").write_text(json.dumps(epoch))
                tune.report({"acc": scores[epoch]}, checkpoint=tune.Checkpoint.from_directory(directory))

    run = tune.RunConfig(name="kept", storage_path=str(tmp_path), callbacks=[CheckpointRetention("acc", "max")],
                         checkpoint_config=tune.CheckpointConfig(checkpoint_score_attribute="acc",
                                                                 checkpoint_score_order="max"))  # fmt: skip
    grid = tune.Tuner(epochs, param_space={"copy": tune.grid_search([0, 1])}, run_config=run).fit()
    assert not grid.errors
    experiment = tmp_path / "kept"
    for result in grid:
        kept = sorted(p.name for p in Path(result.path).glob("checkpoint_*"))
        assert kept == ["checkpoint_000001", "checkpoint_000003"], kept
    assert restore_floors(experiment) == {}, "a finished experiment needs no checkpoint to resume"

    # The same snapshot as Tune would have left it had the driver died after the second epoch's result of trial 0,
    # its checkpoint not yet registered (Tune registers it after the result): a resume restores checkpoint 0.
    snapshot = max(experiment.glob("experiment_state-*.json"))
    state = json.loads(snapshot.read_text())
    trial, metadata = (json.loads(text) for text in state["trial_data"][0])
    trial["status"] = "RUNNING"
    metadata["last_result"].update(training_iteration=2, checkpoint_dir_name="checkpoint_000001")
    metadata["checkpoint_manager"] = _manager(Path(grid[0].path) / "checkpoint_000000")
    state["trial_data"][0] = [json.dumps(trial), json.dumps(metadata)]
    snapshot.write_text(json.dumps(state))
    assert restore_floors(experiment) == {trial["trial_id"]: 0}, "the registered checkpoint, not the result's"

    snapshot.write_text(snapshot.read_text()[:500])  # a snapshot cut off as it was written
    assert restore_floors(experiment) is None, "nothing is known safe to delete"


def _snapshot(directory: Path, status: str, checkpoint: str, manager: object = None) -> None:
    """A Tune experiment snapshot of one trial `t1` at 2 epochs, in the form restore_points reads; its checkpoint
    manager `manager`, or one that registered `checkpoint`."""
    directory.mkdir(parents=True, exist_ok=True)
    trial = {"trial_id": "t1", "status": status}
    manager = _manager(directory / "subset5_t1" / checkpoint) if manager is None else manager
    metadata = {"last_result": {"training_iteration": 2, "checkpoint_dir_name": checkpoint},
                "checkpoint_manager": manager}  # fmt: skip
    state = {"trial_data": [[json.dumps(trial), json.dumps(metadata)]]}
    (directory / "experiment_state-2026-01-01_10-00-00.json").write_text(json.dumps(state))


def test_at_the_end_a_kept_snapshot_that_lags_holds_nothing_back(tmp_path):
    """SnapshotKeeper copies Tune's last snapshot only after this callback's end; its copy before that may name a
    checkpoint of a trial that has since finished. During the run it holds that checkpoint; at the end, only Tune's
    last snapshot counts (it was written and waited for)."""
    experiment = tmp_path / "search"
    _snapshot(experiment, "TERMINATED", "checkpoint_000003")
    _snapshot(experiment / ".whole-snapshot.1000", "RUNNING", "checkpoint_000001")
    trial_dir = experiment / "subset5_t1"
    for index in range(4):
        (trial_dir / f"checkpoint_{index:06d}").mkdir(parents=True)
    trial = SimpleNamespace(trial_id="t1", path=str(trial_dir))  # what the callback reads of Tune's Trial
    retention = CheckpointRetention("acc", "max")
    retention.set_state({"scores": {"t1": dict(enumerate(SCORES))}})
    retention.on_trial_complete(0, [trial], trial)
    on_disk = lambda: sorted(p.name for p in trial_dir.glob("checkpoint_*"))  # noqa: E731
    assert on_disk() == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"], "the kept copy needs 1 on"
    retention.on_experiment_end([trial])
    assert on_disk() == ["checkpoint_000001", "checkpoint_000003"], "the latest and the best"


class _Hostile:
    def __reduce__(self):  # what loading this pickle would run
        return (Path.touch, (Path(tempfile.gettempdir()) / "a-hostile-pickle-ran",))


def test_a_hostile_checkpoint_manager_in_a_snapshot_is_read_never_run(tmp_path):
    """The snapshot's pickled checkpoint manager is read as opcodes: a pickle that would create a file when loaded
    creates none, and names no checkpoint Tune registered (its trial keeps every checkpoint)."""
    marker = Path(tempfile.gettempdir()) / "a-hostile-pickle-ran"
    marker.unlink(missing_ok=True)
    experiment = tmp_path / "search"
    hostile = str({"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps(_Hostile()).hex()})
    _snapshot(experiment, "RUNNING", "checkpoint_000001", manager=hostile)
    assert restore_floors(experiment, with_kept=False) == {"t1": 0}, "no registered checkpoint: all are kept"
    assert not marker.exists(), "nothing in the pickle ran"
    _snapshot(experiment, "RUNNING", "checkpoint_000001", manager="{'_type': 'CLOUDPICKLE_FALLBACK', 'value': '80'}")
    assert restore_floors(experiment, with_kept=False) is None, "a manager cut short: nothing is known safe to delete"
