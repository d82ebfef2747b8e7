"""What one run is asked to do: its validated space, where it lives, what data it reads, which Ray to use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spaces.errors import SpaceError, shown
from spaces.space import Space

# Names a run may not take: the storage's own folders, and anything that would leave the storage.
RESERVED_NAMES = (".", "..", "cache")


def check_run_name(name: str) -> str:
    """`name` if it is a plain directory name for a run in the storage; SpaceError otherwise."""
    if not isinstance(name, str) or not name or "/" in name or "\0" in name or name in RESERVED_NAMES:
        raise SpaceError(f"--name {shown(name)}: use a plain directory name")
    return name


@dataclass(frozen=True)
class RunRequest:
    space: Space
    storage: Path  # absolute
    name: str
    data: Path | None  # a prepared dataset; None: the system's embedded one, until preflight.prepare_dataset
    address: str | None  # a running Ray cluster; None: start Ray here
    resume: bool
    verbose: bool = False  # Ray Tune's own console output as well as the run's
    trials_at_once: int | None = None  # student trials the cluster runs at once; known once Ray knows the cluster

    @property
    def run_dir(self) -> Path:
        return self.storage / self.name

    @property
    def cache_dir(self) -> Path:
        return self.storage / "cache"
