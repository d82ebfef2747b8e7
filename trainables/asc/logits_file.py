"""Teacher logits on disk, keyed by filename.

The project's cache file is a dict saved with torch.save and read with weights_only=True:
    {"filenames": [str, …], "logits": float32 tensor [clips, classes], "metrics": {str: float}}
Keyed by filename, it stays valid whatever the row order of the dataset that reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainables.asc.data import AscData
from trainables.atomic import write_file
from trainables.tensor_files import UnreadableFile, load_tensors


class LogitsMismatch(ValueError):
    """A logits file that does not cover the clips a dataset needs."""


def save_logits(path: Path, filenames: list[str], logits: np.ndarray, metrics: dict[str, float]) -> None:
    """Write atomically: a reader never sees half a file, and two writers of the same key do no harm."""
    payload = {"filenames": list(filenames), "logits": torch.tensor(np.ascontiguousarray(logits), dtype=torch.float32),
               "metrics": {k: float(v) for k, v in metrics.items()}}  # fmt: skip
    write_file(path, lambda tmp: torch.save(payload, tmp))


def _load(path: Path):
    """Tensors and plain containers only: a planted pickle is refused, never run."""
    try:
        return load_tensors(path)
    except UnreadableFile as err:
        raise LogitsMismatch(str(err)) from None


def check_logits_cache(path: Path, data: AscData, rows: np.ndarray | None = None) -> None:
    """Refuse (LogitsMismatch) a cache file that is not whole, finite logits for `rows` of `data` (default: every
    clip)."""
    payload = _load(path)
    if not (isinstance(payload, dict) and {"filenames", "logits", "metrics"} <= set(payload)
            and isinstance(payload["logits"], torch.Tensor) and isinstance(payload["filenames"], list)):  # fmt: skip
        raise LogitsMismatch(f"{path}: not a logits cache (a dict of filenames, logits and metrics)")
    logits = payload["logits"]
    expected = (len(payload["filenames"]), len(data.classes))
    if logits.dtype != torch.float32 or tuple(logits.shape) != expected:
        raise LogitsMismatch(f"{path}: {logits.dtype} logits of shape {list(logits.shape)}, "
                             f"expected float32 {list(expected)}")  # fmt: skip
    _check_finite(path, logits.numpy(), payload["filenames"])
    needed = data.filenames if rows is None else [data.filenames[r] for r in rows]
    missing = set(needed) - set(payload["filenames"])
    if missing:
        raise LogitsMismatch(f"{path}: no logits for {len(missing)} clips of the dataset, e.g. {min(missing)}")


def _check_finite(path: Path, logits: np.ndarray, names: list[str]) -> None:
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if len(bad):
        raise LogitsMismatch(f"{path}: NaN or infinite logits for {len(bad)} clips, e.g. {names[bad[0]]}")


def read_logits(path: Path) -> dict:
    return _load(path)


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
    _check_finite(path, out[rows], [data.filenames[r] for r in rows])
    return out


def read_teacher_logits(path: Path, data: AscData) -> np.ndarray:
    """Logits [clips, classes] in `data` row order from either format, refusing any that does not fit.

    - the seed systems' file: a float tensor [rows of meta.csv, classes] in meta.csv row order (a
      prepared dataset keeps meta.csv's order, so rows map one to one);
    - this project's file: a dict with filenames, which must cover every clip.
    """
    payload = _load(path)
    if isinstance(payload, torch.Tensor):
        if payload.ndim != 2 or payload.shape[0] != len(data.filenames) or payload.shape[1] != len(data.classes):
            raise LogitsMismatch(f"{path}: a [{', '.join(map(str, payload.shape))}] tensor, but the dataset's meta.csv "
                                 f"has {len(data.filenames)} rows of {len(data.classes)} classes")  # fmt: skip
        logits = payload.float().numpy()
        _check_finite(path, logits, data.filenames)
        return logits
    if isinstance(payload, dict) and {"filenames", "logits"} <= set(payload):
        return aligned_logits(path, data, np.arange(len(data.filenames)))
    raise LogitsMismatch(f"{path}: neither a [rows, classes] tensor nor a dict with filenames and logits")


def average_logits(paths: list[Path], data: AscData) -> np.ndarray:
    """The mean of several teachers' raw logits [clips, classes], each file read and checked as by
    read_teacher_logits: how NTU averages the members of its ensembles."""
    return np.mean([read_teacher_logits(path, data) for path in paths], axis=0, dtype=np.float64).astype(np.float32)


def write_seed_logits(path: Path, logits: np.ndarray) -> None:
    """The seed systems' format: a float32 tensor [rows of meta.csv, classes] in meta.csv row order."""
    write_file(path, lambda tmp: torch.save(torch.tensor(np.ascontiguousarray(logits), dtype=torch.float32), tmp))
