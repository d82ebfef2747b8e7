"""A run's record, `<run>/space.yaml`: the resolved settings it was started with.

It is written once the run has truly started (every check passed, Ray up), so a start refused at any
point leaves nothing that blocks the corrected rerun. A resume compares its settings with it and
names each one that differs. And it is itself a valid `--space` (`as_space` turns it back into a
space file's mapping), which is how `--resume --name X` works without repeating the flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search.space import Space, SpaceError, space_to_yaml

RECORD = "space.yaml"
# The record's own keys (space_to_yaml, and `dataset`: the prepared dataset the trials read, relative to the
# storage when inside it); everything else at its top level is a section of the space file.
_RECORD_ONLY = {"subsets", "search", "settings", "dataset"}
_GENERATED = ("synthetic-", "speakers-")  # embedded datasets: made again from the settings when absent


def is_record(raw: dict) -> bool:
    """A run's record rather than a space file: its search is a list of dimensions and its settings a section."""
    return isinstance(raw.get("search"), list) and isinstance(raw.get("settings"), dict) and "subsets" in raw


def as_space(raw: dict) -> dict:
    """A space file's mapping for `raw`: a run's record turned back into one, anything else as it is."""
    if not is_record(raw):
        return raw
    space = {k: v for k, v in raw.items() if k not in _RECORD_ONLY}
    search: dict[str, Any] = {}
    if raw["subsets"]:
        search["subset"] = list(raw["subsets"])
    for d in raw["search"]:
        if d.get("choices") is not None:
            search[d["name"]] = list(d["choices"])
        else:
            search[d["name"]] = {"low": d["low"], "high": d["high"], "log": bool(d.get("log"))}
    space["search"] = search
    # Fixed settings, not those searched (a space may not give both). Sections the settings embed (OS-KDFT2's
    # teacher) are written once, as sections.
    for key, value in raw["settings"].items():
        if key not in space and key not in search:
            space[key] = value
    return space


def read_record(run_dir: Path) -> dict:
    path = Path(run_dir) / RECORD
    if not path.is_file():
        raise SpaceError(f"--resume: {run_dir} holds no run to resume")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpaceError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not is_record(raw):
        raise SpaceError(f"{path} is not a run's record")
    return raw


def write_record(run_dir: Path, space: Space, dataset: Path, storage: Path) -> None:
    dataset = Path(dataset)
    shown = dataset.relative_to(storage) if dataset.is_relative_to(storage) else dataset
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / RECORD).write_text(space_to_yaml(space) + yaml.safe_dump({"dataset": str(shown)}))


def recorded_dataset(record: dict, storage: Path) -> Path | None:
    """The prepared dataset a run read, for a resume given no --data; None: the embedded one (made again if absent)."""
    if not record.get("dataset"):
        return None
    path = Path(storage) / record["dataset"]  # an absolute one stays as it is
    if path.is_dir():
        return path
    if path.name.startswith(_GENERATED):
        return None
    raise SpaceError(f"--resume: the run's dataset {path} is gone; pass --data with the dataset it was started on")


def differences(recorded: Any, current: Any, where: str = "") -> list[str]:
    """'key: recorded → now' for every setting that differs, dotted keys for nested ones."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        found = []
        for key in list(recorded) + [k for k in current if k not in recorded]:
            label = f"{where}.{key}" if where else str(key)
            found += differences(recorded.get(key, "(absent)"), current.get(key, "(absent)"), label)
        return found
    if isinstance(recorded, list) and isinstance(current, list) and len(recorded) == len(current) and all(
        isinstance(r, dict) and isinstance(c, dict) and r.get("name") == c.get("name") for r, c in zip(recorded, current)
    ):  # fmt: skip
        return [line for r, c in zip(recorded, current) for line in differences(r, c, f"{where}.{r.get('name')}")]
    return [] if recorded == current else [f"{where}: {recorded!r} → {current!r}"]


def check_resumable(run_dir: Path, space: Space) -> None:
    """Refuse a resume whose settings differ from the record, naming each difference."""
    recorded = {k: v for k, v in read_record(run_dir).items() if k != "dataset"}
    current = yaml.safe_load(space_to_yaml(space))
    changed = differences(recorded, current)
    if changed:
        shown = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise SpaceError(f"--resume: the settings differ from those {run_dir} was started with ({shown}); resume "
                         "with the same settings (or just --resume --name NAME, which reads them), or use a new --name")  # fmt: skip
