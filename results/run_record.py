"""A run's record, `<run>/space.yaml`: the settings it was started with, and the dataset it read.

The record is itself a valid `--space` file: every setting spelled out (defaults included), the search
as a space file writes it, and `dataset`, the prepared dataset the trials read (relative to the
storage when inside it). So `--space runs/kd/space.yaml` runs the same search again, and
`--resume --name kd` continues one without repeating its flags.

It is written once the run has truly started (every check passed, Ray up), so a start refused at any
point leaves nothing that blocks the corrected rerun. A resume compares its settings with it and names
each one that differs. The rest of results/ reads what it needs of a run (metric, searched names,
budget, dataset) through this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from spaces.space import Dimension, plain, recorded_dimensions
from trainables.atomic import write_file

RECORD = "space.yaml"
DATASET = "dataset"  # the record's key for the prepared dataset
_GENERATED = ("synthetic-", "speakers-")  # embedded datasets: made again from the settings when absent
# What the service writes in a run directory, besides its Tune experiments (and what is kept aside of them):
# a symbolic link at any of these, or below them, would carry the run's writes out of the run directory.
_WRITTEN = {RECORD, ".lock", "optuna.journal", "leaderboard.csv", "comparison.csv", "teachers.csv", "summary.json",
            "report.html", "report", "best"}  # fmt: skip
_EXPERIMENTS = ("search", "confirm", "no_kd", "teacher")


class RecordError(ValueError):
    """A run directory whose record is missing or cannot be read; the message says which."""


class LinkedRunError(ValueError):
    """A run directory that is, or holds where the service writes, a symbolic link."""


def links_in(run_dir: Path) -> list[Path]:
    """The symbolic links among the paths the service writes in `run_dir`: the run directory itself, its record,
    journal, tables, report, exports and Tune experiments, and everything below them (links are not followed)."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        return [run_dir]
    if not run_dir.is_dir():
        return []
    found = []
    for entry in sorted(run_dir.iterdir()):
        if entry.name not in _WRITTEN and not entry.name.startswith(_EXPERIMENTS):
            continue
        if entry.is_symlink():
            found.append(entry)
        elif entry.is_dir():
            for root, dirs, files in os.walk(entry):
                found += [Path(root, name) for name in dirs + files if Path(root, name).is_symlink()]
    return found


def refuse_links(run_dir: Path) -> None:
    """Raise LinkedRunError, naming the first link, when links_in(run_dir) finds any: the run would write through
    it, outside its directory, into what the link points at."""
    found = links_in(run_dir)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LinkedRunError(f"{found[0]} is a symbolic link (to {os.readlink(found[0])}){more}; a run writes only "
                             "inside its own directory: replace the link by what it points at, or use another --name")


def write_record(run_dir: Path, mapping: dict, dataset: Path, storage: Path) -> None:
    """Write the record: `mapping` (a space file's mapping of the resolved settings) and the dataset."""
    dataset = Path(dataset)
    shown = dataset.relative_to(storage) if dataset.is_relative_to(storage) else dataset
    text = yaml.safe_dump(plain({**mapping, DATASET: str(shown)}), sort_keys=False)
    write_file(Path(run_dir) / RECORD, lambda tmp: tmp.write_text(text))


def read_record(run_dir: Path) -> dict:
    """The record of the run in `run_dir` (RecordError when there is none or it is damaged)."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        raise RecordError(f"{run_dir} is not a run directory (no {RECORD})")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RecordError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("search"), dict) or "metric" not in raw:
        raise RecordError(f"{path} is not a run's record")
    return raw


def settings_of(record: dict) -> dict:
    """The record as a space file, without the dataset (which --data may replace)."""
    return {k: v for k, v in record.items() if k != DATASET}


def dimensions(record: dict) -> dict[str, Dimension]:
    """Each searched hyperparameter (not the subset), by name, read as the space reads it; a replication's one is its
    seed."""
    return {d.name: d for d in recorded_dimensions(record)}


def is_replication(record: dict) -> bool:
    """Whether the run trained fixed settings with several seeds (kind: replication) rather than searched."""
    return record.get("kind") == "replication"


def searched_names(run_dir: Path) -> list[str]:
    return list(dimensions(read_record(run_dir)))


def recorded_dataset(recorded: str | None, storage: Path) -> Path | None:
    """The prepared dataset a record names (its `dataset`), for a start given no --data; None: the embedded one
    (made again if absent)."""
    if not recorded:
        return None
    path = Path(storage) / recorded  # an absolute one stays as it is
    if path.is_dir():
        return path
    if path.name.startswith(_GENERATED):
        return None
    raise RecordError(f"the run's dataset {path} is gone; pass --data with the dataset it was started on")


def run_dataset(run_dir: Path) -> Path | None:
    """The prepared dataset of the run in `run_dir` when it is still there (the storage holds the run)."""
    try:
        path = recorded_dataset(read_record(run_dir).get(DATASET), Path(run_dir).resolve().parent)
    except RecordError:
        return None
    return path
