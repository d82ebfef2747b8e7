"""Teacher logits on disk, keyed by filename.

The project's cache file is a dict saved with torch.save and read with weights_only=True:
    {"filenames": [str, …], "logits": float32 tensor [clips, classes], "metrics": {str: float}}
Keyed by filename, it stays valid whatever the row order of the dataset that reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from trainables.asc_data import AscData


class LogitsMismatch(ValueError):
    """A logits file that does not cover the clips a dataset needs."""


def save_logits(path: Path, filenames: list[str], logits: np.ndarray, metrics: dict[str, float]) -> None:
    """Write atomically: a reader never sees half a file, and two writers of the same key do no harm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"filenames": list(filenames), "logits": torch.tensor(np.ascontiguousarray(logits), dtype=torch.float32),
               "metrics": {k: float(v) for k, v in metrics.items()}}  # fmt: skip
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_logits(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def aligned_logits(path: Path, data: AscData, rows: np.ndarray) -> np.ndarray:
    """Logits [clips, classes] in `data` row order; every row in `rows` must be covered (others are NaN)."""
    payload = read_logits(path)
    logits = payload["logits"].numpy()
    if logits.ndim != 2 or logits.shape[1] != len(data.classes):
        raise LogitsMismatch(f"{path}: logits of shape {tuple(logits.shape)}, expected [clips, {len(data.classes)}]")
    position = {name: i for i, name in enumerate(payload["filenames"])}
    out = np.full((len(data.filenames), logits.shape[1]), np.nan, dtype=np.float32)
    missing = []
    for row in rows:
        index = position.get(data.filenames[row])
        if index is None:
            missing.append(data.filenames[row])
        else:
            out[row] = logits[index]
    if missing:
        raise LogitsMismatch(f"{path}: no logits for {len(missing)} training clips, e.g. {missing[0]}")
    return out
