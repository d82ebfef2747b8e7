"""Run a search from Python: the same service as `kd-search` / `python search/run.py`, given a space as a mapping.

    from search.api import run_search
    board = run_search({"system": "asc_kd", "samples": 2, "epochs": 1,
                        "search": {"subset": [25], "kd_lambda": {"low": 0.0, "high": 0.5}}},
                       storage="runs", name="notebook")
    board[board["rank"] == 1]

The mapping is what a space file holds (or a run's own space.yaml); it is validated exactly as a file is,
and bad input raises `search.space.SpaceError` (a ValueError) naming the key. The run directory is
`<storage>/<name>` as with the command line, with the same leaderboard, exports and report.
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
from search.preflight import given_dataset, prepare
from search.request import RunRequest
from search.space import build_space
from search.space_file import apply_override


def run_search(space: Mapping, *, storage: str | Path = "runs", name: str = "search", data: str | Path | None = None,
               overrides: list[str] = (), resume: bool = False, verbose: bool = False,
               address: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Run the search `space` describes; return its leaderboard (leaderboard.csv: every trial, best first per subset).

    storage, name: the run lives in <storage>/<name>. data: a prepared dataset or TAU22 root (default: the
    embedded synthetic one). overrides: `KEY=VALUE` strings as for --set. resume: continue the run of that
    name. verbose: Ray Tune's own output too. address: a running Ray cluster ("auto" or HOST:PORT).
    Raises SpaceError, DatasetError or LogitsMismatch (ValueErrors) on bad input, before anything trains.
    """
    raw = settings_of(copy.deepcopy(dict(space)))
    for assignment in overrides:
        apply_override(raw, assignment)
    built = build_space(raw)
    request = RunRequest(space=built, storage=Path(storage).resolve(), name=name, data=None, address=address,
                         resume=resume, verbose=verbose)  # fmt: skip
    if data is not None:
        request = dataclasses.replace(request, data=given_dataset(request, Path(data), None))
    run(prepare(request))
    return build_leaderboard(request.run_dir, built.metric, built.mode)
