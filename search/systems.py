"""The registry of systems: everything that differs between `asc_kd`, `asc_teacher` and `oskdft2`.

A space names its system; from then on no code asks which system it is, it asks the `System`:
what a space of it may say (settings, sections, metrics), how its dataset is made and recognised,
how its teachers are prepared, which trial function trains it, and what its results show.
A new system is one entry here plus its trainables.

The registry imports only trainables: a space is validated, and its dataset made, before Ray starts.
A system's behaviour in search/ (its trial function, its teacher preparation, its checks) is named
as `module:function`, as an entry point is, and imported when first used: the trial and the teachers
only once a run starts, so that Ray is imported there and nowhere earlier.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.asc.data import check_subsets
from trainables.asc.data import is_prepared as is_asc_dataset
from trainables.asc.data import load_prepared as load_asc_dataset
from trainables.asc.ensemble import EnsembleKdConfig
from trainables.asc.student import Budget
from trainables.asc.student_training import StudentConfig
from trainables.asc.synthetic import SyntheticConfig
from trainables.asc.synthetic import generate as generate_scenes
from trainables.asc.teacher import TeacherConfig
from trainables.speaker.data import is_prepared as is_speaker_dataset
from trainables.speaker.data import load_prepared as load_speaker_dataset
from trainables.speaker.student_training import OskdftConfig
from trainables.speaker.synthetic import SyntheticSpeakerConfig
from trainables.speaker.synthetic import generate as generate_speakers
from trainables.speaker.teacher import SslConfig
from trainables.speaker.teacher_training import TeacherTrainConfig

ASC_METRIC = re.compile(r"^(acc|acc_seen|acc_unseen|acc_sim_seen|macro_acc|acc_[a-z0-9]+)$")
SV_METRIC = re.compile(r"^(eer|min_dcf|min_dcf_p05)$")
NO_KD = {"kd_lambda": 1.0}  # the student's loss is then all label loss: the same student without its teacher


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


ASC_DATA = DatasetKind("synthetic", generate_scenes, load_asc_dataset, is_asc_dataset, True, check_subsets,
                       "no dataset (neither a TAU22 root with meta.csv nor a prepared dataset)")  # fmt: skip
SPEAKER_DATA = DatasetKind("speakers", generate_speakers, load_speaker_dataset, is_speaker_dataset, False, None,
                           "no prepared speaker dataset (make one with python -m trainables.speaker.data, see "
                           "the README)")  # fmt: skip


@dataclass(frozen=True)
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
    trial: str  # "module:function" of its Tune trial, a function of (config, context: TrialContext)
    teachers: str  # "module:function" (request) → TrialContext: makes what its trials need first (teachers)
    checks: str | None  # "module:function" (request) → None: its checks before Ray starts, the dataset at hand
    # The no-distillation reference: each subset's best configuration is retrained with these settings when the
    # space asks (compare_without_kd); empty for a system without one.
    reference_overrides: dict[str, Any] = field(hash=False)
    scene_report: bool  # the acoustic-scene outputs: DCASE rank score and the HTML report
    uses_teacher: Callable[[Any], bool] = field(default=lambda space: False, hash=False)  # (Space) → whether some
    # trial distils from the teacher of its `teacher` section, which is then trained or read before the trials

    @property
    def references(self) -> bool:
        return bool(self.reference_overrides)

    @property
    def trainable(self) -> Callable:
        return _load(self.trial)

    @property
    def prepare_trials(self) -> Callable:
        return _load(self.teachers)

    def check_teachers(self, request: Any) -> None:
        if self.checks is not None:
            _load(self.checks)(request)

    @staticmethod
    def sample_rate(settings: Any) -> int:
        """The rate real data is read at: the trial's own when its settings carry one (a teacher search: NTU's
        44.1 kHz), else the students' 32 kHz."""
        return getattr(settings, "sample_rate", 32000)


def _student_distils(space: Any) -> bool:
    """A KD student distils unless kd_lambda is 1 (labels alone): decided at the lowest kd_lambda the space allows."""
    for d in space.dimensions:
        if d.name == "kd_lambda":
            return dataclasses.replace(space.settings, kd_lambda=min(d.choices) if d.choices else d.low).uses_teacher
    return space.settings.uses_teacher


def _load(reference: str) -> Callable:
    # The one place a system's behaviour is imported. Named like an entry point, it keeps the registry below the
    # code that uses it (no import cycle), and Ray out of the checks made before a run starts.
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


SYSTEMS: dict[str, System] = {
    "asc_kd": System(
        name="asc_kd", settings=StudentConfig,
        sections={"teacher": TeacherConfig, "data": SyntheticConfig, "budget": Budget},
        metric=ASC_METRIC, default_metric="acc", default_mode="max", by_subset=True,
        not_searchable=frozenset({"subset", "seed", "eval_batch_size"}), dataset=ASC_DATA,
        trial="search.trials:student_trial", teachers="search.teachers:distillation_teachers",
        checks="search.scene_checks:check_scene_run", reference_overrides=NO_KD, scene_report=True,
        uses_teacher=_student_distils,
    ),
    "asc_teacher": System(
        name="asc_teacher", settings=TeacherConfig, sections={"data": SyntheticConfig},
        metric=ASC_METRIC, default_metric="acc", default_mode="max", by_subset=True,
        not_searchable=frozenset({"seed", "eval_batch_size", "arch", "weights", "logits", "cochlscene"}),
        dataset=ASC_DATA, trial="search.trials:teacher_search_trial", teachers="search.teachers:teacher_start",
        checks="search.scene_checks:check_teacher_search_run", reference_overrides={}, scene_report=True,
    ),
    # OS-KDFT2: the `teacher` section is OskdftConfig's own teacher field (the SSL architecture).
    "oskdft2": System(
        name="oskdft2", settings=OskdftConfig,
        sections={"teacher": SslConfig, "teacher_training": TeacherTrainConfig, "data": SyntheticSpeakerConfig},
        metric=SV_METRIC, default_metric="eer", default_mode="min", by_subset=False,
        not_searchable=frozenset({"seed", "teacher", "init_layers", "target_layers"}), dataset=SPEAKER_DATA,
        trial="search.trials:oskdft2_trial", teachers="search.teachers:ssl_teacher",
        checks="search.teacher_checks:check_speaker_run",
        reference_overrides={}, scene_report=False,
    ),
    # NTU's KD-ensemble table as one run: asc_kd's students, after a teachers stage that trains (and caches) PaSST
    # and baseline-CNN teachers per subset and averages their logits (search/ensemble.py).
    "asc_kd_ensemble": System(
        name="asc_kd_ensemble", settings=EnsembleKdConfig,
        sections={"teacher": TeacherConfig, "cnn_teacher": StudentConfig, "data": SyntheticConfig, "budget": Budget},
        metric=ASC_METRIC, default_metric="acc", default_mode="max", by_subset=True,
        not_searchable=frozenset({"subset", "seed", "eval_batch_size", "cnn_teachers"}), dataset=ASC_DATA,
        trial="search.ensemble:ensemble_student_trial", teachers="search.ensemble:ensemble_teachers",
        checks="search.ensemble:check_ensemble_run", reference_overrides=NO_KD, scene_report=True,
        uses_teacher=_student_distils,
    ),
}  # fmt: skip
