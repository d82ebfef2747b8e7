"""The planned-work line a run prints before its first trial: trials × epochs × clips, and a time estimate from a
few steps of one student timed before Ray starts (issue 26: `samples: 10000` showed its 16-hour ETA only after
the first trial)."""

from __future__ import annotations

import re
import time

import pytest
import torch

from search.planning import StepTiming, plan_line, planned_trials, student_seconds, time_student
from search.systems import build_space
from spaces.space_file import read_space_file
from trainables.asc.data import load_prepared


def _kd(**changes):
    raw = read_space_file("kd.yaml")
    raw.update(changes)
    return build_space(raw)


def test_every_stage_s_student_trials_are_planned():
    assert planned_trials(_kd()) == {"search": 10, "confirmation": 10, "no-KD": 10}  # 5 subsets
    assert planned_trials(_kd(samples=7, confirm_top_k=0)) == {"search": 35, "no-KD": 5}
    assert planned_trials(_kd(compare_without_kd=False, confirm_top_k=2, confirm_seeds=3)) == {
        "search": 10, "confirmation": 30}  # fmt: skip
    replication = build_space(read_space_file("dcase24_baseline.yaml"))
    assert planned_trials(replication) == {"seeds": replication.seeds * len(replication.subsets)}


def test_one_student_is_timed_in_about_a_second_and_leaves_the_caller_as_it_was(service_data):
    space = _kd()
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    started = time.monotonic()
    timing = time_student(space, service_data)
    assert time.monotonic() - started < 6, "a second or so on an idle core; this machine's cores are shared"
    assert timing.device == "cpu" and timing.batch_size == 32
    assert 0 < timing.evaluate < timing.train < 1  # seconds per clip
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)


def test_the_line_counts_trials_epochs_and_clips_and_times_them(service_data):
    space = _kd()
    data = load_prepared(service_data)
    timing = StepTiming(train=0.01, evaluate=0.002, batch_size=32, device="cpu")
    # Every student: 80 steps of 32 clips over 4 epochs, 4 validations, and the test split once.
    per_trial = 4 * (640 * 0.01 + len(data.splits["val"]) * 0.002) + len(data.splits["test"]) * 0.002
    assert student_seconds(space, data, timing) == pytest.approx(30 * per_trial)
    line = plan_line(space, service_data, timing, at_once=2)
    assert line.startswith("Planned: 30 student trials (10 search, 10 confirmation, 10 no-KD) × 4 epochs × 640 "
                           f"clips, validated on {len(data.splits['val'])} clips an epoch; about "), line
    minutes, seconds = divmod(round(30 * per_trial / 2), 60)
    assert f"about {minutes}m{seconds:02d}s at 2 trials at once" in line, line
    assert "a step of 32 clips timed: 0.32 s on the cpu" in line
    # Without a step budget a trial passes over its subset once an epoch: the clips differ by subset.
    passes = _kd(train_steps=0)
    sizes = sorted(len(data.splits[f"split{s}"]) for s in passes.subsets)
    line = plan_line(passes, service_data, timing, 1)
    assert f"× 4 epochs × {sizes[0]:,}–{sizes[-1]:,} clips (by subset)" in line, line
    assert re.fullmatch(r"Planned: 30 student trials \(.*\) × 4 epochs", plan_line(space, service_data, None, 2))
