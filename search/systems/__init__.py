"""The registry: every system the service searches, one module each (its `SYSTEM`), and the spaces built for them.

A new system is one module here, beside its trainables, and one line in SYSTEMS.
"""

from __future__ import annotations

from search.system import System
from search.systems import asc_kd, asc_kd_ensemble, asc_teacher, oskdft2
from spaces.errors import SpaceError, shown
from spaces.space import Space, build

SYSTEMS: dict[str, System] = {s.name: s for s in (asc_kd.SYSTEM, asc_teacher.SYSTEM, oskdft2.SYSTEM,
                                                  asc_kd_ensemble.SYSTEM)}  # fmt: skip


def system_of(raw: dict) -> System:
    """The system a space file's mapping names (asc_kd when it names none)."""
    system = raw.get("system", "asc_kd")
    if system not in SYSTEMS:
        raise SpaceError(f"system: {shown(system)} is not known; expected one of {', '.join(SYSTEMS)}")
    return SYSTEMS[system]


def build_space(raw: dict) -> Space:
    """Validate the raw mapping into a `Space` of the system it names; raise SpaceError naming the first problem."""
    return build(raw, system_of(raw))
