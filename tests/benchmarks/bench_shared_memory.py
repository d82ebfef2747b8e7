"""Shared data in memory: peak memory of 4 concurrent trials against 1 trial, on the embedded dataset
scaled to 20,000 clips. Target: under 1.5 times.

Memory is the sum of the trial processes' proportional set sizes (PSS: a page shared by n processes
counts 1/n in each), sampled every 0.5 s, so the memory-mapped clips count once however many trials
read them, and each trial's private memory (model, batches, libraries) counts in full.

    .venv/bin/python tests/benchmarks/bench_shared_memory.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from common import ROOT, dataset
from trainables.synthetic_asc import SyntheticConfig

# 146 device-a segments per scene, with the extra devices about 2,000 segments: ~20,000 training clips.
DATA = SyntheticConfig(train_segments_per_class=146, val_segments_per_class=1, test_segments_per_class=1,
                       held_out_clips_per_segment=2)  # fmt: skip


def trial_pss() -> int:
    """Sum of PSS (bytes) of the processes running trials, read from /proc (Linux)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"ImplicitFunc" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def peak_memory(trials: int, data_dir: Path) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "memory.yaml"
        space.write_text(yaml.safe_dump({
            "system": "asc_kd", "samples": trials, "compare_without_kd": False, "kd_lambda": 1.0, "epochs": 1,
            "batch_size": 64, "search": {"subset": [100], "lr": {"low": 0.002, "high": 0.02, "log": True}},
            "scheduler": {"type": "fifo"}, "resources": {"cpus_per_trial": 2 / trials},
        }))  # fmt: skip
        peak, done = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, trial_pss())
                time.sleep(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        subprocess.run([sys.executable, "search/run.py", "--space", str(space), "--data", str(data_dir), "--storage",
                        tmp, "--name", "memory"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
        done.set()
        sampler.join()
        return peak, time.perf_counter() - started


data_dir, data = dataset(DATA)
clips_bytes = data.clips.nbytes
one, one_s = peak_memory(1, data_dir)
four, four_s = peak_memory(4, data_dir)
print(f"{len(data.filenames):,} clips ({clips_bytes / 2**30:.2f} GiB of int16 audio, memory-mapped): peak trial memory "
      f"{one / 2**30:.2f} GiB for 1 trial, {four / 2**30:.2f} GiB for 4 concurrent trials: ratio {four / one:.2f} "
      f"(target < 1.5); runs took {one_s:.0f} s and {four_s:.0f} s")
