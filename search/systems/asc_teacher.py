"""asc_teacher: a search over teachers (PaSST or the baseline CNN) fine-tuned per training subset, exported as logits."""

from search.scene_checks import check_teacher_search_run
from search.system import System
from search.systems.scenes import ASC_DATA, ASC_METRIC
from search.teachers import teacher_start
from search.trials import teacher_search_trial
from trainables.asc.synthetic import SyntheticConfig
from trainables.asc.teacher import TeacherConfig

SYSTEM = System(
    name="asc_teacher", settings=TeacherConfig, sections={"data": SyntheticConfig},
    metric=ASC_METRIC, default_metric="acc", default_mode="max", by_subset=True,
    not_searchable=frozenset({"seed", "eval_batch_size", "arch", "weights", "logits", "cochlscene"}),
    dataset=ASC_DATA, trial=teacher_search_trial, context=teacher_start, checks=check_teacher_search_run,
    scene_report=True,
    default_space="teacher_tiny.yaml",
)  # fmt: skip
