"""Which of a trial's checkpoints stay on disk: its latest, its best, and any Tune may still restore it from.

Tune's own `CheckpointConfig(num_to_keep)` deletes the older checkpoint the moment a newer one is registered,
but the experiment snapshot on storage, which `--resume` restores from, is written seconds later. A driver
killed in between leaves a snapshot naming a checkpoint that is gone, and that trial fails on resume. So Tune
keeps every checkpoint, and this callback deletes one only once the snapshot on storage has moved past it.
"""

from __future__ import annotations

import ast
import json
import math
import pickletools
import re
import shutil
from pathlib import Path

from ray import tune

from results.trial_records import checkpoint_index
from search.snapshots import kept_snapshots

# Trial states a resume does not run again (errored trials stay failed: `resume_errored=False`).
_NOT_RESTORED = {"TERMINATED", "ERROR"}


def newest_snapshot(experiment_dir: Path) -> Path | None:
    """Tune's newest `experiment_state-<session>.json` in `experiment_dir` (the one a resume reads)."""
    return max(experiment_dir.glob("experiment_state-*.json"), default=None)


_CHECKPOINT_PATH = re.compile(r"(?:^|/)checkpoint_(\d{6})$")


def _registered(manager: object) -> str | None:
    """The newest checkpoint Tune's checkpoint manager of a trial registered (the one a resume restores the trial
    from), None if none. The manager is in the snapshot as a pickle (Tune's `CLOUDPICKLE_FALLBACK`, its text or a
    dict); it is read as opcodes for the checkpoints' paths, and nothing in it is built or run."""
    if isinstance(manager, str):
        manager = ast.literal_eval(manager)
    indices = [int(found.group(1)) for _, arg, _ in pickletools.genops(bytes.fromhex(manager["value"]))
               if isinstance(arg, str) and (found := _CHECKPOINT_PATH.search(arg))]  # fmt: skip
    return f"checkpoint_{max(indices):06d}" if indices else None


def restore_points(experiment_dir: Path) -> dict[str, str | None] | None:
    """For each trial a resume would restore from the newest experiment snapshot on storage, the name of the
    checkpoint it would restore (None where the snapshot names none yet: the trial then restarts from scratch);
    trials the snapshot does not restore are absent. None when there is no snapshot that reads whole.

    Reads Tune's `experiment_state-<session>.json`: `trial_data` holds one [trial, run metadata] pair of JSON
    texts per trial, with `trial_id`, `status`, `last_result` and the trial's checkpoint manager. Tune restores a
    trial from the newest checkpoint its manager registered, which can be older than the one its last result names:
    Tune registers an epoch's checkpoint after the epoch's result, so a run stopped in between names one it never
    registered."""
    snapshot = newest_snapshot(experiment_dir)
    if snapshot is None:
        return {}
    try:
        trials = json.loads(snapshot.read_text())["trial_data"]
        points = {}
        for trial_json, metadata_json in trials:
            trial, metadata = json.loads(trial_json), json.loads(metadata_json)
            last = metadata.get("last_result") or {}
            if trial["status"] in _NOT_RESTORED or not last.get("training_iteration"):
                continue  # not restored, or restored from scratch
            points[trial["trial_id"]] = _registered(metadata["checkpoint_manager"])
        return points
    except (OSError, ValueError, KeyError, TypeError, IndexError, SyntaxError, RecursionError):  # cut short, or unknown
        return None


def restore_floors(experiment_dir: Path, with_kept: bool = True) -> dict[str, int] | None:
    """restore_points as checkpoint indices: 0 where the checkpoint cannot be told, which keeps them all. None:
    nothing is safe to delete.

    While the experiment runs, a resume may also restore from the last whole snapshot kept beside the newest
    (search/snapshots.py), which can be older: each trial's floor is the lower of the two. `with_kept=False` once
    Tune has written its last snapshot and waited for it: a resume reads that one whenever it reads whole, and
    SnapshotKeeper keeps it next."""
    floors: dict[str, int] = {}
    kept = kept_snapshots(experiment_dir)[:1] if with_kept else []
    for directory in [Path(experiment_dir), *kept]:
        points = restore_points(directory)
        if points is None:
            return None
        for trial, name in points.items():
            index = checkpoint_index(name) if name else 0
            floors[trial] = min(index, floors.get(trial, index))
    return floors


def deletable(on_disk: set[int], scores: dict[int, float], mode: str, floor: int | None) -> set[int]:
    """The checkpoints of one trial that may go: all on disk but the latest and the best reported, and none at
    or after `floor` (the one a resume would restore from).

    `on_disk` holds the indices of the trial's checkpoint folders; `scores` maps each index the trial reported
    to its metric there (NaN where it had none); `mode` is "max" or "min"; ties for best go to the later one.
    A folder the trial never reported was written before a crash, and is written again."""
    if not scores:
        return set()
    latest = max(scores)
    sign = 1.0 if mode == "max" else -1.0
    best = max(scores, key=lambda i: (-math.inf if math.isnan(scores[i]) else sign * scores[i], i))
    return {i for i in on_disk if i not in (latest, best) and (floor is None or i < floor)}


class CheckpointRetention(tune.Callback):
    """Keeps each trial's latest and best checkpoint (by `metric`, "max" or "min" `mode`), deleting the others
    once no snapshot a resume would read still needs them."""

    def __init__(self, metric: str, mode: str) -> None:
        self.metric = metric
        self.mode = mode
        self._scores: dict[str, dict[int, float]] = {}  # trial id → checkpoint index → metric
        self._held_back: set[str] = set()  # trials keeping more than two, for the snapshot's sake
        self._snapshot_read: tuple = ()  # (path, mtime, size) of the snapshot the floors come from
        self._floors: dict[str, int] | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        name = result.get("checkpoint_dir_name")
        if not name:
            return
        index = checkpoint_index(name)
        scores = self._scores.setdefault(trial.trial_id, {})
        # A trial restored from an older checkpoint writes its indices again: what it wrote after that is gone.
        for stale in [i for i in scores if i >= index]:
            del scores[stale]
        value = result.get(self.metric)
        scores[index] = float(value) if isinstance(value, (int, float)) else math.nan

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        # Found from the trial, not kept: a resumed experiment may have been moved.
        changed = self._read_floors(Path(trial.path).parent)
        # Once the snapshot moved on, what it held back in other trials may go too.
        wanted = {trial.trial_id} | (self._held_back if changed else set())
        self._prune([t for t in trials if t.trial_id in wanted])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._read_floors(Path(trial.path).parent)
        self._prune([trial])

    def on_experiment_end(self, trials, **info) -> None:
        # Tune has written and synced its last snapshot by now, so a finished trial keeps exactly two. SnapshotKeeper
        # copies that snapshot only after this callback: its copy may still name a checkpoint long passed.
        if trials:
            self._read_floors(Path(trials[0].path).parent, with_kept=False)
            self._prune(trials)

    def _read_floors(self, experiment_dir: Path, with_kept: bool = True) -> bool:
        """Read the snapshot's floors again if Tune wrote a new one (this runs at every checkpoint); whether it did.
        `with_kept`: as restore_floors."""
        snapshot = newest_snapshot(experiment_dir)
        try:
            kept = kept_snapshots(experiment_dir)[:1] if with_kept else []
            stamp = (snapshot, snapshot.stat().st_mtime_ns, snapshot.stat().st_size, *kept) if snapshot else ()
        except OSError:  # replaced as it was looked at
            self._snapshot_read, self._floors = (), None
            return False
        if stamp == self._snapshot_read and stamp:
            return False
        self._snapshot_read, self._floors = stamp, restore_floors(experiment_dir, with_kept)
        return True

    def _prune(self, trials) -> None:
        if self._floors is None:
            return
        for trial in trials:
            scores = self._scores.get(trial.trial_id, {})
            folders = {checkpoint_index(f.name): f for f in Path(trial.path).glob("checkpoint_*")}
            doomed = deletable(set(folders), scores, self.mode, self._floors.get(trial.trial_id))
            for index in doomed:
                shutil.rmtree(folders[index], ignore_errors=True)
                scores.pop(index, None)
            if deletable(set(folders) - doomed, scores, self.mode, floor=None):
                self._held_back.add(trial.trial_id)
            else:
                self._held_back.discard(trial.trial_id)

    def get_state(self) -> dict:
        # Saved by Tune with each snapshot, so a resumed run knows the scores of the checkpoints it restores.
        return {"scores": self._scores}

    def set_state(self, state: dict) -> None:
        self._scores = state["scores"]
