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

from trainables.prepared import DatasetError

SUBSETS = (5, 10, 25, 50, 100)
# full_test: all of a real dataset's test.csv, when its val and test are halves of it (see tau22.py)
SPLIT_FILES = {**{f"split{s}": f"split{s}.csv" for s in SUBSETS}, "val": "val.csv", "test": "test.csv",
               "full_test": "full_test.csv"}  # fmt: skip
META_COLUMNS = ["filename", "scene_label", "identifier", "source_label"]



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
    source: str = ""  # where the clips came from: "tau22:<root>" for TAU22 read by trainables/asc/tau22.py

    def waveforms(self, rows: np.ndarray) -> torch.Tensor:
        """Float waveforms [len(rows), samples] in [-1, 1] for the given rows."""
        return torch.from_numpy(self.clips[rows].astype(np.float32) / 32768.0)

    def train_devices(self, subset: int) -> list[str]:
        return sorted(set(self.devices[self.splits[f"split{subset}"]].tolist()))

    def teacher_rows(self, subset: int) -> np.ndarray:
        """The rows a subset's teacher logits cover: the clips its students train on and the held-out splits its
        figures come from. A 5 % teacher has no use for logits of the other 95 % of the pool, which would cost
        it 20 times the forward passes it needs."""
        held_out = [self.splits[name] for name in ("val", "test", "full_test") if name in self.splits]
        return np.unique(np.concatenate([self.splits[f"split{subset}"], *held_out]))


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
    """Open a prepared dataset; DatasetError naming the file if any part of it is damaged or inconsistent."""
    directory = Path(directory)
    if not is_prepared(directory):
        raise DatasetError(f"{directory} holds no prepared dataset (no dataset.json)")
    try:
        info = json.loads((directory / "dataset.json").read_text())
        fingerprint, sample_rate, classes = info["fingerprint"], int(info["sample_rate"]), list(info["classes"])
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{directory / 'dataset.json'}: damaged ({str(err)[:80]})") from None
    meta = pd.read_csv(directory / "meta.csv", sep="\t")
    check_unique(meta["filename"], directory / "meta.csv")
    clips = open_clips(directory / "clips.npy")
    if len(meta) != clips.shape[0]:
        raise DatasetError(f"{directory}: meta.csv has {len(meta)} rows but clips.npy {clips.shape[0]} clips")
    class_index = {c: i for i, c in enumerate(classes)}
    filenames = meta["filename"].tolist()
    row = {name: i for i, name in enumerate(filenames)}
    lists = {}
    for name, file in SPLIT_FILES.items():
        path = directory / "splits" / file
        if path.is_file():
            split_files = pd.read_csv(path, sep="\t")["filename"]
            missing = [f for f in split_files if f not in row]
            if missing:
                raise DatasetError(f"{path} names {len(missing)} files not in meta.csv, e.g. {missing[0]}")
            lists[name] = split_files.tolist()
    splits = {name: np.sort(np.array([row[f] for f in files], dtype=np.int64)) for name, files in lists.items()}
    return AscData(
        directory=directory,
        fingerprint=fingerprint,
        sample_rate=sample_rate,
        classes=classes,
        filenames=filenames,
        labels=meta["scene_label"].map(class_index).to_numpy(dtype=np.int64, copy=True),  # writable, for torch
        devices=meta["source_label"].astype(str).to_numpy(),
        clips=clips,
        splits=splits,
        source=str(info.get("source", "")),
    )


def open_clips(path: Path) -> np.ndarray:
    """clips.npy memory-mapped, after checking it is a whole int16 [clips, samples] array."""
    try:
        clips = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:  # a truncated file: "mmap length is greater than file size"
        raise DatasetError(f"{path}: damaged ({str(err)[:80]})") from None
    if not isinstance(clips, np.ndarray) or clips.dtype != np.int16 or clips.ndim != 2:
        raise DatasetError(f"{path}: not an int16 [clips, samples] array")
    return clips


def check_splits(data: AscData) -> None:
    """check_split_lists on a prepared dataset (a dataset a user made by hand, given with --data)."""
    lists = {name: [data.filenames[row] for row in rows] for name, rows in data.splits.items()}
    check_split_lists(lists, {name: data.directory / "splits" / SPLIT_FILES[name] for name in lists})


def check_subsets(directory: Path, subsets: tuple[int, ...]) -> None:
    """A prepared dataset given with --data: its split files checked, and one for each subset the run trains on."""
    data = load_prepared(directory)
    check_splits(data)
    missing = [s for s in subsets if f"split{s}" not in data.splits]
    if missing:
        raise DatasetError(f"{directory}: no split file for subsets {missing}; choose others with --subsets")


def check_unique(filenames: pd.Series, where: Path) -> None:
    """A filename listed twice makes its row ambiguous (a split would map it to one of them)."""
    repeated = filenames[filenames.duplicated()]
    if len(repeated):
        raise DatasetError(f"{where}: {repeated.nunique()} filenames appear more than once, e.g. {repeated.iloc[0]}")


def check_split_lists(lists: dict[str, list[str]], paths: dict[str, Path]) -> None:
    """Refuse an empty split, a file listed twice in one split, and a training file that is also a
    validation or test file (its figures would be contaminated); `paths` names each split's file."""
    for name, files in lists.items():
        if not files:
            raise DatasetError(f"{paths[name]}: names no file")
        check_unique(pd.Series(files), paths[name])
    held_out = {f: name for name in ("val", "test") for f in lists.get(name, [])}
    for name, files in lists.items():
        if name.startswith("split"):
            shared = [f for f in files if f in held_out]
            if shared:
                raise DatasetError(f"{paths[name]}: {len(shared)} of its files are also in the "
                                   f"{held_out[shared[0]]} split, e.g. {shared[0]}; training and held-out files "
                                   "must not overlap")  # fmt: skip


def device_of(filename: str) -> str:
    """TAU22 filenames end in -<device>.wav."""
    _, dash, device = filename.rpartition("-")
    device = device.removesuffix(".wav")
    if not dash or not device or "/" in device:
        raise DatasetError(f"filename {filename[:200]} does not end in -<device>.wav (as TAU22's, e.g. ...-a.wav)")
    return device
