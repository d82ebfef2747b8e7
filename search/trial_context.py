"""What a trial needs besides its hyperparameters, handed to it by `tune.with_parameters`.

A trial's config holds what the search suggests for it (and a confirmation's seed, a reference's overrides); the
space's settings it is set into, where its data and teacher are, its budget and its resources are the same for every
trial of a run, so they travel once, typed, as a `TrialContext` of the system's own type. A teacher-stage trial gets a
`TeacherJob` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from trainables.asc.student import Budget


@dataclass(frozen=True)
class TrialContext:
    """What every trial gets; each system's trials get a subtype with what theirs need besides."""

    data_dir: Path  # the prepared dataset
    # The space's settings, typed (the system's settings type): a trial's are these with its config in place.
    settings: Any = None
    cpus: float = 1.0  # the trial's CPU threads
    gpus: float = 0.0  # its share of a GPU (a fraction packs several trials on one)
    # The splits a trial reports after its last epoch. A search selects on validation, so it reports the test split
    # alone; a replication selects nothing and also reports full_test (all of TAU22's test.csv, the tables' set).
    held_out: tuple[str, ...] = ("test",)
    metric: str | None = None  # the ranking metric: an epoch that reports it NaN fails its trial
    arms: dict[str, dict] = field(default_factory=dict)  # the space's search.arm: arm name → the settings it sets

    def with_arm(self, config: dict) -> tuple[dict, Self]:
        """A trial's config with its arm's settings in place of the arm's name, and the arm's own constants."""
        if "arm" not in config:
            return config, self
        arm = config["arm"]
        settings = {k: v for k, v in config.items() if k != "arm"}
        return {**settings, **self.arms[arm]}, self._for_arm(arm)

    def _for_arm(self, arm: str) -> Self:
        return self


@dataclass(frozen=True)
class StudentContext(TrialContext):
    """asc_kd's (and asc_kd_ensemble's) students."""

    teacher_logits: dict[int, Path] = field(default_factory=dict)  # the logits file of each subset's teacher
    budget: Budget = field(default_factory=Budget)  # the students' complexity limit (none by default)


@dataclass(frozen=True)
class TeacherSearchContext(TrialContext):
    """asc_teacher's fine-tunings."""

    init_path: Path | None = None  # the state dict fine-tuning starts from (None: the arch's own)
    arm_inits: dict[str, Path | None] = field(default_factory=dict)  # each arm's own init_path

    def _for_arm(self, arm: str) -> Self:
        return replace(self, init_path=self.arm_inits.get(arm, self.init_path))


@dataclass(frozen=True)
class SpeakerContext(TrialContext):
    """oskdft2's students."""

    teacher_state: Path | None = None  # the frozen SSL teacher's state dict


@dataclass(frozen=True)
class TeacherJob:
    """A teacher experiment's constants: its data, where it starts, and what each of its trials writes."""

    data_dir: Path
    cpus: float
    gpus: float
    init_path: Path | None = None  # the previous stage's state dict
    state_path: Path | None = None  # a stage before fine-tuning writes its state dict here
    logits_paths: dict[tuple[int, int], Path] = field(default_factory=dict)  # (subset, seed) → its logits file
