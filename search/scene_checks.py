"""Checks of an acoustic-scene run's dataset before Ray starts (the `asc_kd` and `asc_teacher` systems' checks):
every split the run uses holds clips, and the ranking metric is a number on the validation split of every
subset. Either failing would train for nothing: on an empty training split a trial never learns, and a metric
that is NaN on every trial ranks nothing and exports an arbitrary "best" student.
"""

from __future__ import annotations

import math

import numpy as np

from search.request import RunRequest
from search.teacher_checks import check_scene_teacher, check_teacher_is_trained
from spaces.errors import SpaceError
from trainables.asc.data import AscData, check_splits, load_prepared
from trainables.asc.metrics import device_metrics

# What makes a split of the embedded dataset, for a message that names the setting to change.
_SETTING_OF_SPLIT = {"val": "data.val_segments_per_class and data.held_out_clips_per_segment",
                     "test": "data.test_segments_per_class and data.held_out_clips_per_segment"}  # fmt: skip


def check_scene_run(request: RunRequest) -> None:
    """A KD run: the splits and the ranking metric (SpaceError or DatasetError naming what to change), then the
    teacher it distils from."""
    check_scene_data(request)
    check_scene_teacher(request)


def check_teacher_search_run(request: RunRequest) -> None:
    """A teacher search: the splits and the ranking metric, then the teachers its trials train."""
    check_scene_data(request)
    check_teacher_is_trained(request, request.space.settings, "")


def check_scene_data(request: RunRequest) -> None:
    data = load_prepared(request.data)
    check_splits_used(request, data)
    check_splits(data)  # a hand-made --data was checked already; the embedded one is checked here
    check_ranking_metric(request.space.metric, data, request.space.subsets)


def check_splits_used(request: RunRequest, data: AscData) -> None:
    """Every training subset the space names, and the validation and test splits, hold at least one clip."""
    names = [f"split{s}" for s in request.space.subsets] + ["val", "test"]
    for name in names:
        if len(data.splits.get(name, ())) == 0:
            where = _SETTING_OF_SPLIT.get(name, "data.train_segments_per_class")
            raise SpaceError(f"the {name} split of {request.data} holds no clip: a run on it would train or rank on "
                             f"nothing; for the embedded dataset raise {where}")  # fmt: skip


def check_ranking_metric(metric: str, data: AscData, subsets: tuple[int, ...]) -> None:
    """`metric` is a finite number on the validation split of every subset (acc_unseen needs a validation clip of a
    device the subset never trains on, acc_s5 one of device s5, …)."""
    rows = data.splits["val"]
    for subset in subsets:
        figures = device_metrics(np.zeros(len(rows), dtype=np.int64), data.labels[rows], data.devices[rows],
                                 data.train_devices(subset), len(data.classes))  # fmt: skip
        if not math.isfinite(figures.get(metric, math.nan)):
            devices = ", ".join(sorted(set(data.devices[rows].tolist())))
            raise SpaceError(f"metric: {metric} is not defined for subset {subset}%: its validation split has no clip "
                             f"it is computed from (validation devices: {devices}; trained on: "
                             f"{', '.join(data.train_devices(subset))}); rank by another metric, e.g. acc")  # fmt: skip
