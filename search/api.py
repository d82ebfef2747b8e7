"""Run a search from Python: the same service as `kd-search` / `python search/run.py`, given a space as a mapping.

    from search.api import run_search
    board = run_search({"samples": 2, "epochs": 1, "search": {"subset": [25], "kd_lambda": {"low": 0.0, "high": 0.5}}},
                       storage="runs", name="notebook")
    board[board["rank"] == 1]

The mapping is laid over the system's embedded default space (`spaces/kd.yaml` for asc_kd, the default system;
`spaces/teacher_tiny.yaml` for asc_teacher, `spaces/oskdft2.yaml` for oskdft2), so a few keys run what the
command line runs with that file, not the bare settings types' defaults (an untrained teacher, students at
chance). How it is laid over (`over_default_space`): a top-level key replaces the default's; a section
(`teacher`, `data`, `resources`, `scheduler`, …) is merged key by key; `search`, when given, replaces the default's
search whole (the mapping says what is searched), and what it searches the default no longer fixes; a setting the
mapping fixes leaves the default's search. A run's
own space.yaml spells every setting out, so it runs as recorded.

The result is validated exactly as a file is, and bad input raises `spaces.space.SpaceError` (a ValueError) naming
the key; so do a run name that is not a plain directory name (`../x`, `cache`) and an `address` with no Ray
cluster behind it (an unusable storage raises StorageError). The run directory is `<storage>/<name>` as with the command line, with the
same leaderboard, exports and report.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from results.leaderboard import build_leaderboard
from results.run_record import settings_of
from search.pipeline import run
from search.preflight import check_address, check_storage, given_dataset, prepare
from search.request import RunRequest, check_run_name
from search.systems import build_space, system_of
from spaces.errors import SpaceError
from spaces.space import SPACES_DIR
from spaces.space_file import apply_override, read_space_file


def over_default_space(space: Mapping) -> dict:
    """`space` laid over its system's default space file (see the module's docstring): the raw mapping to validate."""
    given = settings_of(copy.deepcopy(dict(space)))
    base = read_space_file(str(SPACES_DIR / system_of(given).default_space))
    merged = {**base}
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "search":
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    if "search" not in given and isinstance(merged.get("search"), dict):
        merged["search"] = {k: v for k, v in merged["search"].items() if k not in given}
    elif isinstance(given.get("search"), dict):  # what the mapping searches, the default no longer fixes
        merged = {k: v for k, v in merged.items() if k not in given["search"] or k in given}
    return merged


def run_search(space: Mapping, *, storage: str | Path = "runs", name: str = "search", data: str | Path | None = None,
               overrides: list[str] = (), resume: bool = False, verbose: bool = False,
               address: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Run the search `space` describes; return its leaderboard (leaderboard.csv: every trial, best first per subset).

    space: a space file's mapping, over the system's default space (kd.yaml for asc_kd). storage, name: the run lives
    in <storage>/<name>; name a plain directory name. data: a prepared dataset or TAU22 root (default: the embedded
    synthetic one). overrides: `KEY=VALUE` strings as for --set. resume: continue the run of that name. verbose: Ray
    Tune's own output too. address: a running Ray cluster ("auto" or HOST:PORT).
    Raises SpaceError, DatasetError or LogitsMismatch (ValueErrors) on bad input, StorageError on an unusable
    storage, before anything trains.
    """
    if not isinstance(space, Mapping):
        raise SpaceError(f"space: expected a mapping (what a space file holds), got {type(space).__name__}")
    raw = over_default_space(space)
    for assignment in overrides:
        apply_override(raw, assignment, system_of(raw))
    built = build_space(raw)
    storage = Path(storage).resolve()
    check_storage(storage)
    request = RunRequest(space=built, storage=storage, name=check_run_name(name), data=None, address=address,
                         resume=resume, verbose=verbose)  # fmt: skip
    check_address(address)
    if data is not None:
        request = dataclasses.replace(request, data=given_dataset(request, Path(data), None))
    run(prepare(request))
    return build_leaderboard(request.run_dir, built.metric, built.mode)
