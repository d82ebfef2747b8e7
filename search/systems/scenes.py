"""What the acoustic-scene systems (asc_kd, asc_teacher, asc_kd_ensemble) share: their metrics and their dataset."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from search.system import DatasetKind
from trainables.asc.data import check_subsets, is_prepared, load_prepared
from trainables.asc.synthetic import generate

ASC_METRIC = re.compile(r"^(acc|acc_seen|acc_unseen|acc_sim_seen|macro_acc|acc_[a-z0-9]+)$")
ASC_DATA = DatasetKind("synthetic", generate, load_prepared, is_prepared, True, check_subsets,
                       "no dataset (neither a TAU22 root with meta.csv nor a prepared dataset)")  # fmt: skip
NO_KD = {"kd_lambda": 1.0}  # the student's loss is then all label loss: the same student without its teacher


def student_distils(space: Any) -> bool:
    """A KD student distils unless kd_lambda is 1 (labels alone): decided at the lowest kd_lambda the space allows."""
    for d in space.dimensions:
        if d.name == "kd_lambda":
            return dataclasses.replace(space.settings, kd_lambda=min(d.choices) if d.choices else d.low).uses_teacher
    return space.settings.uses_teacher
