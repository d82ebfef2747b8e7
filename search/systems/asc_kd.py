"""asc_kd: a DCASE24 baseline CNN student distilled from a PaSST (or CNN) teacher, per training subset."""

from results.formats import write_formats
from search.planning import time_student
from search.scene_checks import check_scene_run
from search.system import System
from search.systems.scenes import ASC_DATA, ASC_METRIC, NO_KD, student_distils
from search.teachers import distillation_teachers
from search.trials import student_trial
from trainables.asc.student import Budget
from trainables.asc.student_training import StudentConfig
from trainables.asc.synthetic import SyntheticConfig
from trainables.asc.teacher import TeacherConfig

SYSTEM = System(
    name="asc_kd", settings=StudentConfig, sections={"teacher": TeacherConfig, "data": SyntheticConfig, "budget": Budget},
    metric=ASC_METRIC, default_metric="acc", default_mode="max", by_subset=True,
    not_searchable=frozenset({"subset", "seed", "eval_batch_size"}), dataset=ASC_DATA,
    trial=student_trial, context=distillation_teachers, checks=check_scene_run, scene_report=True,
    reference_overrides=NO_KD, uses_teacher=student_distils, formats=write_formats, time_trial=time_student,
    trials_are="student trials", default_space="kd.yaml",
)  # fmt: skip
