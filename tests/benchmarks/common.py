"""Shared by the benchmarks: a synthetic dataset of a given size, made once under /tmp."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from trainables.asc_data import AscData, is_prepared, load_prepared  # noqa: E402
from trainables.synthetic_asc import SyntheticConfig, generate  # noqa: E402


def dataset(config: SyntheticConfig) -> tuple[Path, AscData]:
    directory = Path("/tmp/kd-bench") / f"synthetic-{config.fingerprint()}"
    if not is_prepared(directory):
        generate(config, directory)
    return directory, load_prepared(directory)
