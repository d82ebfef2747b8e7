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
    damage: list[str] = field(default_factory=list)  # what of its files was cut short or unreadable, and skipped

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
    """All trials of one Tune experiment directory (e.g. <run>/search); empty if it does not exist.

    A full storage or a killed driver can cut a trial's files short, and Tune's resume then appends
    to them: a report line cut short (or glued to the next one) and an empty error.txt are kept
    out of the record and named in its `damage`, never a reason not to read the rest.
    """
    return _scan(directory)[0]


def damage_lines(run_dir: Path) -> list[str]:
    """One warning per trial file of a run that was cut short or unreadable (what read_experiment skipped)."""
    lines = []
    for experiment in sorted({p.parent.parent for p in Path(run_dir).glob("*/*/params.json")}):
        records, lost = _scan(experiment)
        lines.extend(f"warning: {params_file} is damaged; its trial is left out of the results" for params_file in lost)
        lines.extend(f"warning: {found} (cut short by a full storage or a killed run); skipped"
                     for record in records for found in record.damage)  # fmt: skip
    return lines


def _scan(directory: Path) -> tuple[list[TrialRecord], list[Path]]:
    """The trials of one experiment directory, and the params.json files too damaged to make a trial of (a trial
    with no whole config cannot be ranked or rerun)."""
    records, lost = [], []
    for params_file in sorted(Path(directory).glob("*/params.json")):
        trial_dir = params_file.parent
        params = _json_object(_text(params_file) or "")
        if params is None:
            lost.append(params_file)
            continue
        results, damage = read_reports(trial_dir / "result.json")
        error = None
        error_file = trial_dir / "error.txt"
        if error_file.is_file():
            lines = (_text(error_file) or "").strip().splitlines()
            error = lines[-1] if lines else "failed (its error.txt is empty: written on a full storage?)"
            if not lines:
                damage.append(f"{error_file}: empty")
        trial_id = str((results[-1] if results else {}).get("trial_id") or trial_dir.name.rsplit("_", 1)[-1])
        records.append(TrialRecord(trial_id, trial_dir, params, results, error, damage))
    return records, lost


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_reports(result_file: Path) -> tuple[list[dict], list[str]]:
    """A trial's reports from its result.json (none if it is missing), and what of it was damaged."""
    results, damaged = [], 0
    for line in (_text(result_file) or "").splitlines() if result_file.is_file() else []:
        if not line.strip():
            continue
        report = _json_object(line)
        if report is None:
            damaged += 1
            report = _last_whole_report(line)
        if report is not None:
            results.append(report)
    return results, [f"{result_file}: {damaged} report line(s) cut short"] if damaged else []


def _last_whole_report(line: str) -> dict | None:
    """The resumed run's report that follows a report cut short on the same line, if there is one.

    A nested object of the cut report parses too, so only a whole report (Tune's own keys) counts.
    """
    for start in range(1, len(line)):
        if line.startswith('{"', start):
            found = _json_object(line[start:])
            if found is not None and {"trial_id", "training_iteration"} <= found.keys():
                return found
    return None
