"""Concurrent trials on one node read one copy of the clips: the memory-mapped cache file, shared.

While two student trials run at once, the test reads each trial process's memory map (/proc/PID/smaps)
for the dataset's clips.npy: both must hold its pages, and the pages must be the same ones, so that the
proportional set sizes (a page shared by n processes counts 1/n in each) add up to one copy.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from search.run import main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SETTINGS = ["epochs=2", "batch_size=50", "kd_lambda=1.0", "compare_without_kd=false", "confirm_top_k=0",
            "scheduler.type=fifo", "base_channels=8"]  # fmt: skip


def clip_mappings(clips: Path) -> dict[int, dict[str, int]]:
    """PID → Rss and Pss (bytes) of its mapping of `clips`, for every process that maps it."""
    found = {}
    for pid in (p.name for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            if str(clips) not in Path(f"/proc/{pid}/maps").read_text():
                continue
            smaps = Path(f"/proc/{pid}/smaps").read_text()
        except OSError:
            continue
        sizes = {"Rss": 0, "Pss": 0}
        inside = False
        for line in smaps.splitlines():
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header: address range … path
                inside = fields[-1] == str(clips)
            elif inside and fields[0].rstrip(":") in sizes:
                sizes[fields[0].rstrip(":")] += int(fields[1]) * 1024
        found[int(pid)] = sizes
    return found


def test_concurrent_trials_share_one_copy_of_the_clips(ray_session, tmp_path, service_data):
    """On the session's prepared dataset, which another test's trials may map at the same time: the moments that count
    are those when both of this run's trials held it."""
    storage = tmp_path / "runs"
    space = tmp_path / "lr_only.yaml"
    space.write_text("system: asc_kd\nsearch:\n  subset: [100]\n  lr: {low: 0.002, high: 0.02, log: true}\n")
    argv = ["--space", str(space), "--storage", str(storage), "--name", "shared", "--samples", "2",
            "--data", str(service_data)]  # fmt: skip
    for setting in SETTINGS:
        argv += ["--set", setting]

    samples: list[dict[int, dict[str, int]]] = []
    done = threading.Event()

    clips = (service_data / "clips.npy").resolve()

    def watch() -> None:
        while not done.is_set():
            samples.append(clip_mappings(clips))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert main(argv) == 0
    finally:
        done.set()
        watcher.join()

    board = pd.read_csv(storage / "shared" / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "complete").all()
    trials = set(board["trial_dir"].map(lambda d: pd.read_json(Path(d) / "result.json", lines=True)["pid"].iloc[0]))
    assert len(trials) == 2
    size = clips.stat().st_size
    # Moments when both trials held more than half of the file, read twice in a row with nothing changed (the
    # processes are read one after the other). Were their pages private, their PSS would add up to their RSS,
    # more than the file; shared, the PSS of every process mapping it adds up to at most one copy.
    both = [s for s, again in zip(samples, samples[1:])
            if s == again and all(pid in s and s[pid]["Rss"] > size / 2 for pid in trials)]  # fmt: skip
    assert both, "the two trials never mapped the clips file at the same time"
    for sample in both:
        assert sum(m["Pss"] for m in sample.values()) <= 1.02 * size, f"more than one copy of the clips: {sample}"
