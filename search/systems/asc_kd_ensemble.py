"""asc_kd_ensemble: NTU's KD-ensemble table as one run. asc_kd's students, after a teachers stage that trains (and
caches) PaSST and baseline-CNN teachers per subset and averages their logits (search/ensemble.py)."""

from results.formats import write_formats
from search.ensemble import check_ensemble_run, ensemble_teachers
from search.system import System
from search.systems.scenes import ASC_DATA, ASC_METRIC, NO_KD, student_distils
from search.trials import student_trial
from trainables.asc.ensemble import EnsembleKdConfig
from trainables.asc.student import Budget
from trainables.asc.student_training import StudentConfig
from trainables.asc.synthetic import SyntheticConfig
from trainables.asc.teacher import TeacherConfig

SYSTEM = System(
    name="asc_kd_ensemble", settings=EnsembleKdConfig,
    sections={"teacher": TeacherConfig, "cnn_teacher": StudentConfig, "data": SyntheticConfig, "budget": Budget},
    metric=ASC_METRIC, default_metric="acc", default_mode="max", by_subset=True,
    not_searchable=frozenset({"subset", "seed", "eval_batch_size", "cnn_teachers"}), dataset=ASC_DATA,
    trial=student_trial, context=ensemble_teachers, checks=check_ensemble_run, scene_report=True,
    reference_overrides=NO_KD, uses_teacher=student_distils, formats=write_formats,
    default_space="ntu_pipeline.yaml",
)  # fmt: skip
