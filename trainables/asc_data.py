"""The prepared acoustic-scene dataset that every ASC trainable reads.

A prepared dataset is a directory:

    meta.csv        tab-separated: filename, scene_label, identifier, source_label (TAU22's columns);
                    row i describes clip i of clips.npy
    clips.npy       int16 [clips, samples], mono at `sample_rate` Hz, full scale = 1.0
    splits/         split5.csv … split100.csv, val.csv, test.csv (tab-separated filename, scene_label)
    dataset.json    {"fingerprint", "sample_rate", "classes", "source"}

Both the embedded synthetic generator and the TAU22 reader write this layout, so training code
knows one format. `clips.npy` is opened memory-mapped: trials on one machine share the page
cache instead of each holding a copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SUBSETS = (5, 10, 25, 50, 100)
# full_test: all of a real dataset's test.csv, when its val and test are halves of it (see tau22.py)
SPLIT_FILES = {**{f"split{s}": f"split{s}.csv" for s in SUBSETS}, "val": "val.csv", "test": "test.csv",
               "full_test": "full_test.csv"}  # fmt: skip
META_COLUMNS = ["filename", "scene_label", "identifier", "source_label"]


class DatasetError(ValueError):
    """A prepared dataset that is missing or inconsistent."""


@dataclass
class AscData:
    directory: Path
    fingerprint: str
    sample_rate: int
    classes: list[str]
    filenames: list[str]
    labels: np.ndarray  # int64 [clips], index into `classes`
    devices: np.ndarray  # str [clips]
    clips: np.ndarray  # int16 [clips, samples], memory-mapped
    splits: dict[str, np.ndarray]  # split name → sorted row indices

    def waveforms(self, rows: np.ndarray) -> torch.Tensor:
        """Float waveforms [len(rows), samples] in [-1, 1] for the given rows."""
        return torch.from_numpy(self.clips[rows].astype(np.float32) / 32768.0)

    def train_devices(self, subset: int) -> list[str]:
        return sorted(set(self.devices[self.splits[f"split{subset}"]].tolist()))


def write_prepared(
    directory: Path,
    meta: pd.DataFrame,
    clips: np.ndarray | None,
    splits: dict[str, list[str]],
    sample_rate: int,
    classes: list[str],
    fingerprint: str,
    source: str,
) -> None:
    """Write a prepared dataset; dataset.json goes last, so a half-written directory never loads.

    clips: None when the caller already wrote clips.npy (memory-mapped, for data larger than RAM).
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "splits").mkdir(exist_ok=True)
    meta[META_COLUMNS].to_csv(directory / "meta.csv", sep="\t", index=False)
    if clips is not None:
        np.save(directory / "clips.npy", clips)
    labels = dict(zip(meta["filename"], meta["scene_label"]))
    for name, files in splits.items():
        frame = pd.DataFrame({"filename": files, "scene_label": [labels[f] for f in files]})
        frame.to_csv(directory / "splits" / SPLIT_FILES[name], sep="\t", index=False)
    info = {"fingerprint": fingerprint, "sample_rate": sample_rate, "classes": classes, "source": source}
    (directory / "dataset.json").write_text(json.dumps(info, indent=1))


def is_prepared(directory: Path) -> bool:
    return (Path(directory) / "dataset.json").is_file() and (Path(directory) / "clips.npy").is_file()


def load_prepared(directory: Path) -> AscData:
    directory = Path(directory)
    if not is_prepared(directory):
        raise DatasetError(f"{directory} holds no prepared dataset (no dataset.json)")
    info = json.loads((directory / "dataset.json").read_text())
    meta = pd.read_csv(directory / "meta.csv", sep="\t")
    clips = np.load(directory / "clips.npy", mmap_mode="r")
    if len(meta) != clips.shape[0]:
        raise DatasetError(f"{directory}: meta.csv has {len(meta)} rows but clips.npy {clips.shape[0]} clips")
    classes = list(info["classes"])
    class_index = {c: i for i, c in enumerate(classes)}
    filenames = meta["filename"].tolist()
    row = {name: i for i, name in enumerate(filenames)}
    splits = {}
    for name, file in SPLIT_FILES.items():
        path = directory / "splits" / file
        if path.is_file():
            split_files = pd.read_csv(path, sep="\t")["filename"]
            missing = [f for f in split_files if f not in row]
            if missing:
                raise DatasetError(f"{path} names {len(missing)} files not in meta.csv, e.g. {missing[0]}")
            splits[name] = np.sort(np.array([row[f] for f in split_files], dtype=np.int64))
    return AscData(
        directory=directory,
        fingerprint=info["fingerprint"],
        sample_rate=int(info["sample_rate"]),
        classes=classes,
        filenames=filenames,
        labels=meta["scene_label"].map(class_index).to_numpy(dtype=np.int64, copy=True),  # writable, for torch
        devices=meta["source_label"].astype(str).to_numpy(),
        clips=clips,
        splits=splits,
    )


def device_of(filename: str) -> str:
    """TAU22 filenames end in -<device>.wav."""
    return filename.rsplit("-", 1)[1].removesuffix(".wav")
