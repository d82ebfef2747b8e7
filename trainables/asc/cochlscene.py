"""Read CochlScene (13 acoustic scenes, 10-s clips) into a prepared dataset for the teacher's SIT stage.

Layout: ROOT/{Train,Val,Test}/<Class>/*.wav. Each 10-s clip becomes ten 1-s clips at 32 kHz (named
`<Split>/<Class>/<file>.wav:<k>`), so the teacher sees TAU22-length inputs in both SIT stages;
Train → split100, Val → val, Test → test. CochlScene records no device: every clip's device is
`cochl`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from trainables.asc.audio_files import decode_to_memmap
from trainables.asc.data import is_prepared, write_prepared
from trainables.atomic import build_directory
from trainables.prepared import DatasetError

SAMPLE_RATE = 32000
CLASSES = ["Bus", "Cafe", "Car", "CrowdedIndoor", "Elevator", "Kitchen", "Park", "ResidentialArea", "Restaurant",
           "Restroom", "Street", "Subway", "SubwayStation"]  # fmt: skip
_SPLITS = {"Train": "split100", "Val": "val", "Test": "test"}
PIECES = 10  # 1-s pieces per 10-s clip


def prepare_cochlscene(root: Path, cache_dir: Path, progress: bool = True, sample_rate: int = SAMPLE_RATE) -> Path:
    """The prepared directory for a CochlScene ROOT at `sample_rate`, made once per fingerprint under cache_dir."""
    root = Path(root).resolve()
    files: list[tuple[str, str, Path]] = []  # (split, class, path)
    for split in _SPLITS:
        if not (root / split).is_dir():
            raise DatasetError(f"{root} is not CochlScene: no {split}/ folder")
        for label_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if label_dir.name not in CLASSES:
                raise DatasetError(f"{label_dir}: unknown CochlScene class (expected one of {', '.join(CLASSES)})")
            files += [(split, label_dir.name, p) for p in sorted(label_dir.glob("*.wav"))]
    if not files:
        raise DatasetError(f"{root}: no wav files under Train/, Val/, Test/")
    digest = hashlib.sha256(b"cochlscene/1")
    for _, _, path in files:
        stat = os.stat(path)
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(f"rate:{sample_rate}".encode() if sample_rate != SAMPLE_RATE else b"")
    key = digest.hexdigest()[:16]
    directory = Path(cache_dir) / f"cochlscene-{key}"
    if is_prepared(directory):
        return directory

    def build(work: Path) -> None:
        decode_to_memmap([p for _, _, p in files], work / "clips.npy", sample_rate, 10.0,
                         f"Resampling CochlScene to {sample_rate / 1000:g} kHz", progress, pieces=PIECES)  # fmt: skip
        rows, splits = [], {name: [] for name in _SPLITS.values()}
        for split, label, path in files:
            relative = path.relative_to(root).as_posix()
            for k in range(PIECES):
                name = f"{relative}:{k}"
                rows.append({"filename": name, "scene_label": label, "identifier": relative, "source_label": "cochl"})
                splits[_SPLITS[split]].append(name)
        write_prepared(work, pd.DataFrame(rows), None, splits, sample_rate, CLASSES, key, source=f"cochlscene:{root}")

    build_directory(directory, build)
    return directory
