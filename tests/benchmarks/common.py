"""Shared by the benchmarks: a synthetic dataset of a given size, made once under /tmp."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from trainables.asc.data import AscData, is_prepared, load_prepared  # noqa: E402
from trainables.asc.synthetic import SyntheticConfig, generate  # noqa: E402

# The embedded default's training pool (10 device-a segments per scene), with small held-out splits.
POOL = SyntheticConfig(train_segments_per_class=10, val_segments_per_class=1, test_segments_per_class=1,
                       held_out_clips_per_segment=1)  # fmt: skip


def dataset(config: SyntheticConfig = POOL) -> tuple[Path, AscData]:
    directory = Path("/tmp/kd-bench") / f"synthetic-{config.fingerprint()}"
    if not is_prepared(directory):
        generate(config, directory)
    return directory, load_prepared(directory)


def run_search(*args: str, env: dict | None = None) -> float:
    """Run `search/run.py ARGS` to the end and return its wall time in seconds; on failure show why and stop."""
    import os
    import subprocess
    import time

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "search/run.py", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})})  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"search/run.py {' '.join(args)} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return time.perf_counter() - started
