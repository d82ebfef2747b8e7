"""What the service asks of a system it searches: the `System` contract, filled in once per system in search/systems/.

A space names its system; from then on no code asks which system, stage or model it has, it asks the `System`: what a
space of it may say (settings, sections, metrics), how its dataset is made and recognised, what its trials need
first (teachers) and which function trains them, its checks before Ray starts, and what its results hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DatasetKind:
    """A kind of prepared dataset: how the embedded one is generated and how a prepared one is recognised."""

    cache_prefix: str  # the embedded dataset's cache folder: <storage>/cache/datasets/<prefix>-<fingerprint>
    generate: Callable[[Any, Path], None]  # (the space's `data` settings, directory) → the embedded dataset
    load: Callable[[Path], Any]  # a prepared dataset, with its `fingerprint`; raises DatasetError (a ValueError)
    is_prepared: Callable[[Path], bool]
    reads_tau22: bool  # --data may also be a TAU22 root, prepared (and cached) on the way in
    # (dataset, the run's subsets) → None, or DatasetError: a dataset whose trials are grouped by training subset
    # must have each subset's split; None for a dataset without subsets
    check_subsets: Callable[[Path, tuple[int, ...]], None] | None
    prepare_hint: str  # how to make one, for the message refusing a folder that holds none


@dataclass(frozen=True, eq=False)  # one object per system: compared (and hashed) by identity
class System:
    """One system the service searches, with everything the rest of the code needs to know of it."""

    name: str
    settings: type  # dataclass of a trial's fixed settings: the space's other top-level keys
    sections: dict[str, type]  # named sections besides scheduler and resources
    metric: re.Pattern  # the metrics a space may rank by
    default_metric: str
    default_mode: str
    by_subset: bool  # trials are grouped, searched and ranked per training subset
    not_searchable: frozenset[str]  # settings that identify a trial rather than tune it
    dataset: DatasetKind
    trial: Callable[..., None]  # its Tune trial: a function of (config, context), the context built by `context`
    context: Callable[[Any], Any]  # (RunRequest) → its trials' context: what they need made first (teachers)
    checks: Callable[[Any], None] | None  # (RunRequest) → None: its checks before Ray starts, the dataset at hand
    scene_report: bool  # the acoustic-scene outputs: DCASE rank score and the HTML report
    # The no-distillation reference: each subset's best configuration is retrained with these settings when the
    # space asks (compare_without_kd); empty for a system without one.
    reference_overrides: dict[str, Any] = field(default_factory=dict)
    # (Space) → whether some trial distils from the teacher of its `teacher` section, which is then trained or read
    # before the trials
    uses_teacher: Callable[[Any], bool] = lambda space: False
    # (student.pt, folder) → the exported student in other formats, written beside it; None: student.pt alone
    formats: Callable[[Path, Path], list[Path]] | None = None
    # (Space, prepared dataset) → the timing of a few of one trial's steps, for the planned run's length; None: the
    # plan gives no estimate
    time_trial: Callable[[Any, Path], Any] | None = None
    trials_are: str = "trials"  # what the planned-work line calls its trials
    default_space: str = "kd.yaml"  # the space file a bare mapping of this system (search.api) lies over

    @property
    def references(self) -> bool:
        return bool(self.reference_overrides)

    @staticmethod
    def sample_rate(settings: Any) -> int:
        """The rate real data is read at: the trial's own when its settings carry one (a teacher search: NTU's
        44.1 kHz), else the students' 32 kHz."""
        return getattr(settings, "sample_rate", 32000)
