"""oskdft2: one-step distillation and fine-tuning of a speech SSL teacher into a 2-layer speaker-verification student,
ranked by EER. Its `teacher` section is OskdftConfig's own teacher field (the SSL architecture)."""

import re

from search.system import DatasetKind, System
from search.teacher_checks import check_speaker_run
from search.teachers import ssl_teacher
from search.trials import oskdft2_trial
from trainables.speaker.data import is_prepared, load_prepared
from trainables.speaker.student_training import OskdftConfig
from trainables.speaker.synthetic import SyntheticSpeakerConfig, generate
from trainables.speaker.teacher import SslConfig
from trainables.speaker.teacher_training import TeacherTrainConfig

SPEAKER_DATA = DatasetKind("speakers", generate, load_prepared, is_prepared, False, None,
                           "no prepared speaker dataset (make one with python -m trainables.speaker.data, see "
                           "the README)")  # fmt: skip

SYSTEM = System(
    name="oskdft2", settings=OskdftConfig,
    sections={"teacher": SslConfig, "teacher_training": TeacherTrainConfig, "data": SyntheticSpeakerConfig},
    metric=re.compile(r"^(eer|min_dcf|min_dcf_p05)$"), default_metric="eer", default_mode="min", by_subset=False,
    not_searchable=frozenset({"seed", "teacher", "init_layers", "target_layers"}), dataset=SPEAKER_DATA,
    trial=oskdft2_trial, context=ssl_teacher, checks=check_speaker_run, scene_report=False,
    default_space="oskdft2.yaml",
)  # fmt: skip
