"""The small KD search that test_end_to_end.py and test_output.py both read back, run once per session.

Both files are one xdist scope (conftest.py), so the worker that runs them makes it once: subsets 5 and 10, 2 trials
each of 2 epochs, ASHA judging from epoch 1 (so a trial may be stopped), the no-KD references, on the session's
prepared synthetic dataset, through the Python API; its console and the API's leaderboard are kept.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from search.api import run_search
from spaces.space_file import read_space_file

GROUP = "small_run"  # the xdist scope of the files that read it
READERS = {"tests/search/test_end_to_end.py", "tests/results/test_output.py"}
NAME = "kd"
DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
TINY_SETTINGS = [
    "epochs=2", "batch_size=50",
    "teacher.epochs=1", "teacher.pretrain=none", "teacher.width=16", "teacher.eval_batch_size=300",
    "train_steps=0", "teacher.train_steps=0", "confirm_top_k=0",  # the demo's step budget and confirmation: too slow here
    "teacher.allow_weak=true",  # a teacher of one epoch on tiny data may be near chance; these tests are not about it
]  # fmt: skip


def small_run(storage: Path, data: Path) -> dict:
    """Run the search into `storage` on `data`; its run folder, storage, dataset, leaderboard (as the API returned it)
    and console."""
    space = read_space_file("kd")
    space["search"]["subset"] = [5, 10]
    space.update(samples=2, scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2})
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        board = run_search(space, storage=storage, name=NAME, data=data, overrides=TINY_SETTINGS)
    return {"dir": storage / NAME, "storage": storage, "data": data, "board": board,
            "console": out.getvalue() + err.getvalue()}  # fmt: skip
