"""Read a torch.save file that may be damaged or hostile: tensors and plain containers only, never code.

torch.load(weights_only=True) refuses a planted pickle, but its message then advises loading with
weights_only=False, the one thing never to do with a file of unknown origin; random bytes and a
truncated file give other errors. Here every one of them is an UnreadableFile naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class UnreadableFile(ValueError):
    """A file that is not a plain torch.save file of tensors and containers; the message names it."""


def load_tensors(path: Path) -> Any:
    """torch.load(path, weights_only=True) on the CPU; UnreadableFile for anything it cannot read safely."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = "holds objects other than tensors and plain containers, or is not a torch.save file"
        found = _unsupported(str(err))
        raise UnreadableFile(f"{path}: refused to load it: {reason}{found}") from None
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - on damaged bytes torch's unpickler raises anything (IndexError, …)
        detail = str(err).strip().splitlines()[0][:100] if str(err).strip() else type(err).__name__
        raise UnreadableFile(f"{path}: not a readable torch.save file ({detail})") from None


def _unsupported(message: str) -> str:
    """What torch found (an unsupported global or operand), from its message, without its advice."""
    for line in message.splitlines():
        detail = line.partition("WeightsUnpickler error:")[2].strip() or line.strip()
        if detail.startswith(("Unsupported", "Trying to load unsupported")):
            return f" ({detail.split('. ')[0][:100]})"
    return ""
