"""The work a run plans, said in one line before its first trial: student trials × epochs × clips, and how long
they take, estimated from a few training steps of one student timed before Ray starts.

A search of `samples: 10000` otherwise showed its 16-hour ETA only once the first trial had ended (issue 26).
The estimate is of the student trials only (teachers come first, and are cached across runs), every one to its
last epoch (ASHA may end some early); a trial's start and checkpoints are not timed, nor trials sharing the cores.
On the demo (2 busy cores) it said 7m18s for student stages that took 9m53s. Ray-free: it runs before Ray starts,
so nothing else competes with the timing for the cores.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search.console import duration
from spaces.space import Space
from trainables.asc.data import AscData, load_prepared
from trainables.asc.evaluation import eval_batch_size, predict
from trainables.asc.loader import epoch_batches
from trainables.asc.student_training import StudentStep

# After one untimed step (first calls allocate and pick kernels), steps are timed for about TIMED_SECONDS, at most
# TIMED_STEPS of them: a second or so in all on one CPU core.
TIMED_STEPS = 3
TIMED_SECONDS = 0.3
EVAL_CLIPS = 16


@dataclass(frozen=True)
class StepTiming:
    """Seconds per clip of one student, as a trial would run it."""

    train: float  # a training step's seconds / its batch's clips
    evaluate: float  # an evaluation batch's seconds / its clips
    batch_size: int
    device: str


def planned_trials(space: Space) -> dict[str, int]:
    """Student trials per stage of the run (stage → trials), in the order they run."""
    groups = len(space.subsets) if space.spec.by_subset else 1
    stages = {"seeds" if space.kind == "replication" else "search": space.samples * groups}
    if space.kind == "search" and space.confirm_top_k:
        stages["confirmation"] = space.confirm_top_k * space.confirm_seeds * groups
    if space.spec.references and space.compare_without_kd:
        stages["no-KD"] = (space.confirm_seeds if space.confirm_top_k else 1) * groups  # search/tuning.reference_seeds
    return stages


def training_clips(space: Space, data: AscData) -> dict[int, int]:
    """Subset → the clips one trial trains on in one epoch (its steps × batch size, or one pass over the subset)."""
    settings = space.settings
    counts = {}
    for subset in space.subsets:
        rows = len(data.splits[f"split{subset}"])
        counts[subset] = settings.steps_per_epoch(rows) * settings.batch_size if settings.train_steps else rows
    return counts


def _device(space: Space) -> torch.device:
    gpus = space.resources.gpus_per_trial
    return torch.device("cuda" if torch.cuda.is_available() and (gpus is None or gpus > 0) else "cpu")


def time_steps(space: Space, data_dir: Path | None) -> StepTiming | None:
    """The timing of one of `space`'s trials, for a system that times them (a KD student's); else None."""
    if space.spec.time_trial is None or data_dir is None:
        return None
    try:
        return space.spec.time_trial(space, data_dir)
    except (RuntimeError, ValueError, OSError) as error:  # no estimate is no reason to stop; a trial says it better
        print(f"No time estimate: one student's steps could not be timed ({str(error)[:120]})", flush=True)
        return None


def time_student(space: Space, data_dir: Path) -> StepTiming:
    """A few training steps and one evaluation batch of one student of `space` on the data, on the device and with
    the CPU threads its trials get; the caller's random state is left as it was."""
    data = load_prepared(data_dir)
    settings = dataclasses.replace(space.settings, subset=space.subsets[0])
    device = _device(space)
    teacher = np.zeros((len(data.labels), len(data.classes)), dtype=np.float32) if settings.uses_teacher else None
    threads = torch.get_num_threads()
    if device.type == "cpu":  # Ray gives a trial as many threads as CPUs
        torch.set_num_threads(max(1, math.floor(space.resources.cpus_per_trial or 1)))
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what a trial would warn about once, it says in its own log
            step = StudentStep.build(settings, data, teacher, device)
            rows = data.splits[f"split{settings.subset}"]
            started, clips = 0.0, 0
            for number, batch in enumerate(epoch_batches(data, rows, settings.batch_size, TIMED_STEPS + 1, device)):
                if number == 1:
                    started = time.perf_counter()
                elif number > 1 and time.perf_counter() - started > TIMED_SECONDS:
                    break
                step.model.zero_grad(set_to_none=True)
                loss = step.loss(batch)
                loss.backward()  # no optimizer: its step costs little beside this, and making one imports torch's
                loss.item()  # compiler (2 s); .item() waits for the device
                clips += len(batch.rows) if number else 0
            train = (time.perf_counter() - started) / max(clips, 1)
            step.model.eval()
            batch = min(EVAL_CLIPS, eval_batch_size(settings.eval_batch_size, device, on_cpu=32))
            held_out = data.splits["val"][:batch]
            started = time.perf_counter()
            with torch.inference_mode():
                predict(step.logits, data, held_out, len(held_out), device)
            evaluate = (time.perf_counter() - started) / max(len(held_out), 1)
    finally:
        torch.set_num_threads(threads)
    return StepTiming(train=train, evaluate=evaluate, batch_size=settings.batch_size, device=device.type)


def student_seconds(space: Space, data: AscData, timing: StepTiming) -> float:
    """Seconds of all the planned student trials, run one after another, every one to its last epoch."""
    epochs = space.settings.epochs
    clips = training_clips(space, data)
    held_out = sum(len(data.splits[s]) for s in ("test", "full_test") if s in data.splits)  # once, after the last epoch
    per_trial = {s: epochs * (clips[s] * timing.train + len(data.splits["val"]) * timing.evaluate)
                 + held_out * timing.evaluate for s in space.subsets}  # fmt: skip
    return sum(planned_trials(space).values()) * sum(per_trial.values()) / len(space.subsets)


def plan_line(space: Space, data_dir: Path | None, timing: StepTiming | None, at_once: int | None) -> str:
    """The run's planned work in one line; with a timing, its estimated length."""
    stages = planned_trials(space)
    total = sum(stages.values())
    kind = space.spec.trials_are
    split = ", ".join(f"{n} {stage}" for stage, n in stages.items())
    line = f"Planned: {total} {kind} ({split}) × {getattr(space.settings, 'epochs', '?')} epochs"
    if timing is None or data_dir is None or not space.spec.by_subset:
        return line
    data = load_prepared(data_dir)
    clips = training_clips(space, data)
    low, high = min(clips.values()), max(clips.values())
    line += f" × {low:,} clips" if low == high else f" × {low:,}–{high:,} clips (by subset)"
    line += f", validated on {len(data.splits['val']):,} clips an epoch"
    parallel = max(1, at_once or 1)
    estimate = student_seconds(space, data, timing) / parallel
    return (f"{line}; about {duration(estimate)} at {parallel} trial{'s' * (parallel > 1)} at once (a step of "
            f"{timing.batch_size} clips timed: {timing.train * timing.batch_size:.2f} s on the {timing.device}; "
            "students only, before ASHA's early stops)")  # fmt: skip
