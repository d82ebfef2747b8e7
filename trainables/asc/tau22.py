"""Read TAU Urban Acoustic Scenes 2022 Mobile from disk into a prepared dataset (see data.py).

ROOT holds `meta.csv` (tab-separated: filename with its `audio/` prefix, scene_label, identifier,
source_label) and `audio/`. The DCASE24 split files `split5.csv` … `split100.csv` and `test.csv`
(tab-separated filename, scene_label) lie in ROOT or in a separate folder. The 44.1 kHz wav files
are read with soundfile whatever their PCM width, resampled to 32 kHz with torchaudio, and
written once into a memory-mapped int16 array; the prepared directory's fingerprint covers
meta.csv, the split files and every audio file's size and modification time, so a changed
dataset gets a fresh cache.

Validation: TAU22 has no validation split that contains the unseen devices s4–s6, and ranking on
the test split would select on it. Unless the splits folder has its own `val.csv`, the test split's
recording locations are halved within each scene, so that both halves hold about as many clips of
every scene: one half becomes `val`, on which the search ranks, the other stays `test`, on which
figures are reported. The whole of test.csv is kept as `full_test`: the set the published tables
report on, so figures comparable with them come from it (it includes the validation half).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from trainables.asc.audio_files import decode_to_memmap
from trainables.asc.data import (
    META_COLUMNS,
    SUBSETS,
    AscData,
    check_split_lists,
    check_unique,
    device_of,
    load_prepared,
    write_prepared,
)  # fmt: skip
from trainables.atomic import build_directory, set_aside
from trainables.prepared import DatasetError

SAMPLE_RATE = 32000
CLASSES = [
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
]  # fmt: skip


def is_tau22_root(root: Path) -> bool:
    return (Path(root) / "meta.csv").is_file()


def find_split_files(root: Path, splits_dir: Path | None) -> dict[str, Path]:
    """split<N>/test/val files by name, from `splits_dir` if given, else from ROOT (or ROOT/split_setup)."""
    folders = [splits_dir] if splits_dir else [root, root / "split_setup"]
    found: dict[str, Path] = {}
    for name in [*(f"split{s}" for s in SUBSETS), "test", "val"]:
        for folder in folders:
            if folder and (folder / f"{name}.csv").is_file():
                found[name] = folder / f"{name}.csv"
                break
    if "test" not in found:
        where = splits_dir or root
        raise DatasetError(f"no test.csv in {where}; put the DCASE24 split files there or name their folder with --splits")
    if not any(name.startswith("split") for name in found):
        raise DatasetError(f"no split5.csv … split100.csv next to test.csv in {found['test'].parent}")
    return found


def read_meta(root: Path) -> pd.DataFrame:
    """ROOT/meta.csv, checked to be a TAU22 meta file: its columns, a row per file, every cell of them filled, and
    only TAU22's scene labels (DatasetError naming the file and what it lacks)."""
    path = root / "meta.csv"
    expected = f"a TAU22 meta file is tab-separated {', '.join(META_COLUMNS)} with a row per audio file"
    try:
        # Read as text: a column of numbers or of empty cells would otherwise come back as floats.
        meta = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: empty; {expected}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot parse ({str(err).strip()[:120]}); {expected}") from None
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise DatasetError(f"{path}: not a TAU22 meta file, it has no column {', '.join(missing)} (found "
                           f"{', '.join(str(c)[:30] for c in meta.columns[:6])}); {expected}")  # fmt: skip
    if meta.empty:
        raise DatasetError(f"{path}: names no audio file; {expected}")
    for column in META_COLUMNS:
        blank = meta.index[meta[column].str.strip() == ""]
        if len(blank):
            raise DatasetError(f"{path}: row {blank[0] + 2} has no {column} ({len(blank)} rows lack one); {expected}")
    unknown = sorted(set(meta["scene_label"]) - set(CLASSES))
    if unknown:
        shown = ", ".join(label[:30] for label in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DatasetError(f"{path}: scene labels that are not TAU22's: {shown} (TAU22's: {', '.join(CLASSES)})")
    check_unique(meta["filename"], path)
    for filename in meta["filename"]:
        try:
            device_of(filename)
        except DatasetError as err:
            raise DatasetError(f"{root / 'meta.csv'}: {err}") from None
    return meta


def fingerprint(root: Path, meta: pd.DataFrame, split_files: dict[str, Path]) -> str:
    """A hash of meta.csv, the split files and each audio file's size and mtime; names the first missing file."""
    digest = hashlib.sha256(b"tau22/2")  # /2: validation halves balanced per scene
    digest.update((root / "meta.csv").read_bytes())
    for name in sorted(split_files):
        digest.update(name.encode() + split_files[name].read_bytes())
    for filename in meta["filename"]:
        try:
            stat = os.stat(root / filename)
        except FileNotFoundError:
            raise DatasetError(f"{root / filename} is named in meta.csv but missing") from None
        digest.update(f"{filename}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _split_lists(meta: pd.DataFrame, split_files: dict[str, Path]) -> dict[str, list[str]]:
    known = set(meta["filename"])
    lists: dict[str, list[str]] = {}
    for name, path in split_files.items():
        try:
            files = pd.read_csv(path, sep="\t")["filename"].astype(str).tolist()
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{path}: names no file") from None
        except (pd.errors.ParserError, UnicodeDecodeError, KeyError) as err:
            raise DatasetError(f"{path}: cannot parse (expected tab-separated filename, scene_label; "
                               f"{str(err)[:80]})") from None  # fmt: skip
        unknown = [f for f in files if f not in known]
        if unknown:
            raise DatasetError(f"{path} names {len(unknown)} files not in meta.csv, e.g. {unknown[0]}")
        lists[name] = files
    check_split_lists(lists, split_files)
    lists["full_test"] = list(lists["test"])
    if "val" not in lists:
        lists["val"], lists["test"] = halve_by_location(meta, lists["test"])
    else:
        val = set(lists["val"])
        lists["test"] = [f for f in lists["test"] if f not in val]
    return lists


def halve_by_location(meta: pd.DataFrame, files: list[str]) -> tuple[list[str], list[str]]:
    """Split `files` into two halves of whole recording locations, balanced per scene.

    Within each scene, locations go largest first to the half that holds fewer of that scene's clips
    so far (ties to the first half): both halves end up within one location's clips of each other
    for every scene. Deterministic: ties between equal locations are broken by name."""
    rows = meta.set_index("filename").loc[files, ["scene_label", "identifier"]]
    half_of: dict[str, int] = {}
    for _scene, group in rows.groupby("scene_label"):
        counts = group["identifier"].value_counts()
        held = [0, 0]
        for location in sorted(counts.index, key=lambda loc: (-counts[loc], loc)):
            half = 0 if held[0] <= held[1] else 1
            half_of[location] = half
            held[half] += int(counts[location])
    halves: tuple[list[str], list[str]] = ([], [])
    for filename, location in zip(files, rows["identifier"]):
        halves[half_of[location]].append(filename)
    return halves


def prepare_tau22(root: Path, cache_dir: Path, splits_dir: Path | None = None, progress: bool = True,
                  sample_rate: int = SAMPLE_RATE) -> Path:  # fmt: skip
    """The prepared directory for ROOT at `sample_rate` (made once per fingerprint under cache_dir); stops on a
    missing or bad file. Students read 32 kHz; NTU's teachers read TAU22 at its own 44.1 kHz."""
    root = Path(root).resolve()
    meta = read_meta(root)
    split_files = find_split_files(root, splits_dir)
    key = fingerprint(root, meta, split_files) + ("" if sample_rate == SAMPLE_RATE else f"-{sample_rate}")
    directory = Path(cache_dir) / f"tau22-{key}"
    if directory.exists():  # made whole under a temporary name, so a damaged one was damaged later
        try:
            load_prepared(directory)
            return directory
        except (ValueError, KeyError, OSError) as err:  # DatasetError, or what pandas says of a damaged meta.csv
            set_aside(directory, str(err)[:200])
    lists = _split_lists(meta, split_files)

    def build(work: Path) -> None:
        paths = [root / f for f in meta["filename"]]
        decode_to_memmap(paths, work / "clips.npy", sample_rate, 1.0, f"Resampling TAU22 to {sample_rate / 1000:g} kHz",
                         progress)  # fmt: skip
        named = meta.assign(source_label=[device_of(f) for f in meta["filename"]])
        write_prepared(work, named, None, lists, sample_rate, CLASSES, key, source=f"tau22:{root}")

    build_directory(directory, build)
    return directory


def tau22_root_of(data: AscData) -> Path | None:
    """The TAU22 root `data` was read from, when it was read from one that is still there."""
    if not data.source.startswith("tau22:"):
        return None
    root = Path(data.source.removeprefix("tau22:"))
    return root if is_tau22_root(root) else None


def prepare_at_rate(data: AscData, root: Path, cache_dir: Path, sample_rate: int) -> Path:
    """TAU22 at ROOT read again at `sample_rate`, split as `data` is, clip for clip (its --splits included):
    NTU's teachers hear the full 44.1 kHz band, not the students' 32 kHz clips resampled."""
    rows = {name: data.splits[name] for name in data.splits if name.startswith("split")}
    rows |= {"val": data.splits["val"], "test": data.splits["full_test"]}  # all of test.csv: read again, it halves
    splits_dir = Path(cache_dir) / f"splits-{data.fingerprint}"
    if not splits_dir.is_dir():
        def write(work: Path) -> None:
            for name, picked in rows.items():
                frame = pd.DataFrame({"filename": [data.filenames[r] for r in picked],
                                      "scene_label": [data.classes[label] for label in data.labels[picked]]})
                frame.to_csv(work / f"{name}.csv", sep="\t", index=False)

        build_directory(splits_dir, write)
    return prepare_tau22(root, cache_dir, splits_dir, progress=False, sample_rate=sample_rate)
