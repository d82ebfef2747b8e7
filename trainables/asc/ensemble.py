"""NTU's KD-ensemble as one run (the `asc_kd_ensemble` system, spaces/ntu_pipeline.yaml): its settings.

NTU's students distil from the mean of the raw logits of several teachers trained on the same split: PaSST-S
fine-tuned from AudioSet weights (the `teacher` section, `teacher.ensemble` of them) and the baseline CNN trained on
labels (the `cnn_teacher` section, `cnn_teachers` of them), each member with its own seed. The students' settings
are StudentConfig's; besides them the run names what its teachers share, so one `--set` reaches every stage:
`weights` (the PaSST AudioSet checkpoint) and the students' `dir_path`, which a teacher section that leaves its own
unset (None) takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trainables.asc.student_training import StudentConfig
from trainables.asc.teacher import TeacherConfig
from trainables.settings import path_setting, setting


@dataclass(frozen=True)
class EnsembleKdConfig(StudentConfig):
    """The students' settings, and what the run's teachers share."""

    weights: str | None = path_setting("file")  # the PaSST teachers' AudioSet checkpoint, where teacher.weights is unset
    cnn_teachers: int = setting(3, low=0)  # baseline-CNN teachers per split (seeds cnn_teacher.seed … + n − 1)

    def student(self) -> StudentConfig:
        """The students' own settings, as a student trial takes them."""
        return StudentConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StudentConfig)})


def ensemble_teachers(settings: EnsembleKdConfig, passt: TeacherConfig,
                      cnn: StudentConfig) -> tuple[TeacherConfig, StudentConfig]:  # fmt: skip
    """The teacher sections with the run's shared settings in place of the ones they leave unset."""
    passt = dataclasses.replace(passt, weights=passt.weights or settings.weights,
                                dir_path=passt.dir_path or settings.dir_path)  # fmt: skip
    return passt, dataclasses.replace(cnn, dir_path=cnn.dir_path or settings.dir_path)
