"""Shared data in memory: peak memory of 4 concurrent trials against 1 trial, on the embedded dataset
scaled to 20,000 clips. Target: under 1.5 times.

Memory is the sum of the trial processes' proportional set sizes (PSS: a page shared by n processes
counts 1/n in each), sampled every 0.5 s, so the memory-mapped clips count once however many trials
read them, and each trial's private memory (the torch runtime, the model's activations, batches)
counts in full. At the peak the benchmark splits the sum into the clips (clips.npy mapped by the
trials) and the rest, so the figures say what sharing saves and what each trial costs of its own.

    .venv/bin/python tests/benchmarks/bench_shared_memory.py                # 20,000 clips
    .venv/bin/python tests/benchmarks/bench_shared_memory.py --segments 440  # about 60,000 clips
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import yaml
from common import dataset, run_search

from trainables.asc.synthetic import SyntheticConfig

GiB = 2**30


def trial_memory(clips: Path, ray_dir: str) -> tuple[int, int, int]:
    """(trial processes, sum of their PSS, the part of it that is `clips`), bytes, read from /proc (Linux).

    Only the trials of the Ray whose temporary directory is `ray_dir` count, not other searches' trials.
    """
    processes = total = of_clips = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"ImplicitFunc" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            if f"RAY_TMPDIR={ray_dir}".encode() not in Path(f"/proc/{pid}/environ").read_bytes():
                continue
            smaps = Path(f"/proc/{pid}/smaps").read_text()
        except OSError:
            continue
        processes += 1
        inside = False
        for line in smaps.splitlines():
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header: address range … path
                inside = fields[-1] == str(clips)
            elif fields[0] == "Pss:":
                total += int(fields[1]) * 1024
                of_clips += int(fields[1]) * 1024 if inside else 0
    return processes, total, of_clips


def peak_memory(trials: int, data_dir: Path) -> tuple[tuple[int, int, int], float]:
    """The sample with the largest summed PSS while `trials` concurrent trials train one epoch on every clip."""
    clips = (data_dir / "clips.npy").resolve()
    ray_dir = f"/tmp/kdm{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "memory.yaml"
        space.write_text(yaml.safe_dump({
            "system": "asc_kd", "samples": trials, "compare_without_kd": False, "kd_lambda": 1.0, "epochs": 1,
            "batch_size": 32, "search": {"subset": [100], "lr": {"low": 0.002, "high": 0.02, "log": True}},
            "scheduler": {"type": "fifo"}, "resources": {"cpus_per_trial": 2 / trials},
        }))  # fmt: skip
        peak, done = (0, 0, 0), threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                found = trial_memory(clips, ray_dir)
                if found[1] > peak[1]:
                    peak = found
                time.sleep(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            seconds = run_search("--space", str(space), "--data", str(data_dir), "--storage", tmp, "--name", "memory",
                                 env={"RAY_TMPDIR": ray_dir})  # fmt: skip
        finally:
            done.set()
            sampler.join()
        return peak, seconds


parser = argparse.ArgumentParser()
# 146 device-a segments per scene, with the extra devices about 2,000 segments: ~20,000 training clips.
parser.add_argument("--segments", type=int, default=146, help="device-a training segments per scene")
segments = parser.parse_args().segments
data_dir, data = dataset(SyntheticConfig(train_segments_per_class=segments, val_segments_per_class=1,
                                         test_segments_per_class=1, held_out_clips_per_segment=2))  # fmt: skip
print(f"{len(data.filenames):,} clips ({data.clips.nbytes / GiB:.2f} GiB of int16 audio, memory-mapped)", flush=True)
for trials in (1, 4):
    (processes, total, of_clips), seconds = peak_memory(trials, data_dir)
    own = (total - of_clips) / max(1, processes)
    print(f"{trials} trial(s): peak {total / GiB:.2f} GiB in {processes} trial processes = clips {of_clips / GiB:.2f} "
          f"GiB + {own / GiB:.2f} GiB of each trial's own; run took {seconds:.0f} s", flush=True)
    if trials == 1:
        one = total
print(f"ratio 4 trials / 1 trial: {total / one:.2f} (target < 1.5)")
