"""Read the trials of a finished (or interrupted) run from its directory, without Ray.

Tune leaves one directory per trial: `params.json` (its config), `result.json` (one JSON line per
report), `error.txt` when it failed, and `checkpoint_<n>/` directories. This module turns them
into plain records, so ranking and export work on any run directory, also after a resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


def checkpoint_index(name: str) -> int:
    """The number of Tune's `checkpoint_000042` folder name (42)."""
    return int(name.rsplit("_", 1)[1])


def latest_checkpoint(trial_dir: Path) -> Path | None:
    """A trial directory's newest `checkpoint_<n>/` folder; None before its first."""
    return max(Path(trial_dir).glob("checkpoint_*"), key=lambda p: checkpoint_index(p.name), default=None)


@dataclass
class TrialRecord:
    trial_id: str
    directory: Path
    config: dict
    results: list[dict] = field(default_factory=list)  # every report, in order
    error: str | None = None

    @property
    def last(self) -> dict:
        return self.results[-1] if self.results else {}

    @property
    def epochs_done(self) -> int:
        return int(self.last.get("training_iteration", 0))

    @property
    def status(self) -> str:
        """complete (ran every epoch), stopped (early, by the scheduler or an interruption) or failed.

        A trial that failed and then, retried from its checkpoint, ran every epoch is complete: Tune
        leaves the first failure's error.txt behind.
        """
        planned = self.last.get("epochs", self.config.get("epochs", 0))  # reported by the trial (a run before: config)
        if self.results and self.epochs_done >= int(planned):
            return "complete"
        return "failed" if self.error is not None else "stopped"

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.directory)


def confirmation_experiment(rank: int) -> str:
    """The Tune experiment that runs each subset's trial of `rank` (1: the best) again with new seeds."""
    return "confirm" if rank == 1 else f"confirm_rank{rank}"


def confirmation_experiments(run_dir: Path) -> list[Path]:
    """A run's confirmation experiments, rank 1 first (a rank is run only after the one above it)."""
    found, rank = [], 1
    while (Path(run_dir) / confirmation_experiment(rank)).is_dir():
        found.append(Path(run_dir) / confirmation_experiment(rank))
        rank += 1
    return found


def read_experiment(directory: Path) -> list[TrialRecord]:
    """All trials of one Tune experiment directory (e.g. <run>/search); empty if it does not exist."""
    records = []
    for params in sorted(Path(directory).glob("*/params.json")):
        trial_dir = params.parent
        results = []
        result_file = trial_dir / "result.json"
        if result_file.is_file():
            for line in result_file.read_text().splitlines():
                if line.strip():
                    results.append(json.loads(line))
        error_file = trial_dir / "error.txt"
        error = error_file.read_text().strip().splitlines()[-1] if error_file.is_file() else None
        trial_id = results[-1]["trial_id"] if results else trial_dir.name.rsplit("_", 1)[-1]
        records.append(TrialRecord(trial_id, trial_dir, json.loads(params.read_text()), results, error))
    return records
