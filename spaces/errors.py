"""How bad input is reported: `SpaceError`, a bad value shown short, and the nearest known name."""

from __future__ import annotations

import reprlib
from typing import Any

from trainables.settings import suggest

__all__ = ["SpaceError", "shown", "suggest"]


class SpaceError(ValueError):
    """A space file or override that cannot be used; the message says which key and why."""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 2, 3, 4, 4
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40


def shown(value: Any, limit: int = 80) -> str:
    """A bad value for a message: a short prefix of its repr, whatever its size or nesting."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
