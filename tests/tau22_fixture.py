"""A small dataset in the exact TAU22 layout, with real DCASE24 filenames from tests/data/tau22.

24-bit wav files at 44.1 kHz, meta.csv and the split files written as TAU22 and the DCASE24
baseline have them. The audio comes from the synthetic world, driven by each filename's scene,
city, location and device. The filenames are rows cut from the DCASE24 split files, shipped with
the tests (tests/data/tau22/README.md says how they were cut).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

from trainables.asc.data import device_of
from trainables.asc.synthetic import CITIES, CLASSES, SyntheticConfig, _rng, _World

SPLITS = Path(__file__).resolve().parent / "data" / "tau22"  # split5 … split50 and test, .csv.gz


def _segments(frame: pd.DataFrame) -> pd.Series:
    return frame["filename"].str.rsplit("-", n=2).str[0] + "-" + frame["filename"].str.rsplit("-", n=1).str[1]


def _pick(frame: pd.DataFrame, per_class: int, rng: np.random.Generator, exclude: set[str] = frozenset()) -> list[str]:
    """Whole segments, `per_class` of each scene, none of those in `exclude`."""
    frame = frame.assign(segment=_segments(frame))
    frame = frame[~frame["segment"].isin(exclude)]
    files = []
    for _, rows in frame.groupby("scene_label"):
        segments = sorted(rows["segment"].unique())
        for segment in rng.choice(segments, size=min(per_class, len(segments)), replace=False):
            files += rows[rows["segment"] == segment]["filename"].tolist()
    return files


def write_tau22(root: Path, per_class: int = 2, test_locations_per_class: int = 2, seed: int = 0,
                test_clips_per_segment: int = 10) -> Path:  # fmt: skip
    """Write a TAU22-layout dataset into `root`: split5 ⊂ split10 ⊂ split25 ⊂ split50, and test.

    test_clips_per_segment < 10 keeps only the first clips of each test segment (a smaller test.csv).
    The shipped cut holds, for each scene, 4 segments new in each split and 4 test locations: per_class
    and test_locations_per_class go up to 4.
    """
    rng = np.random.default_rng(seed)
    names = ("split5", "split10", "split25", "split50", "test")
    read = {name: pd.read_csv(SPLITS / f"{name}.csv.gz", sep="\t") for name in names}
    chosen: dict[str, list[str]] = {}
    previous: list[str] = []
    for name in ("split5", "split10", "split25", "split50"):
        taken = set(_segments(pd.DataFrame({"filename": previous}))) if previous else set()
        extra = _pick(read[name], per_class if name == "split5" else 1, rng, taken)
        chosen[name] = previous + [f for f in extra if f not in previous]
        previous = chosen[name]
    test = read["test"].assign(location=read["test"]["filename"].str.split("-").str[1:3].str.join("-"))
    test = test.assign(segment=_segments(test), device=test["filename"].map(device_of))
    test_files = []
    for _, rows in test.groupby("scene_label"):
        for location in sorted(rows["location"].unique())[:test_locations_per_class]:
            at = rows[rows["location"] == location]
            for _, by_device in at.groupby("device"):  # one segment of each device recorded there
                segment = by_device[by_device["segment"] == by_device["segment"].iloc[0]]["filename"].tolist()
                test_files += sorted(segment, key=lambda f: int(f.rsplit("-", 2)[1]))[:test_clips_per_segment]
    all_files = sorted(set(chosen["split50"]) | set(test_files))
    labels = pd.concat(read.values()).drop_duplicates("filename").set_index("filename")["scene_label"]

    # A segment is recorded only as long as the clips kept of it (a test segment keeps a few of its 10): the k-th
    # kept clip is its k-th second. Most of the writing was FFTs of 10-s recordings whose clips were dropped.
    kept: dict[str, set[int]] = {}
    for filename in all_files:
        scene, city, location, segment, k, _ = Path(filename).stem.split("-")
        kept.setdefault(f"{scene}-{city}-{location}-{segment}", set()).add(int(k))
    seconds_of = {key: sorted(ks) for key, ks in kept.items()}
    worlds: dict[int, _World] = {}
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    scenes: dict[str, np.ndarray] = {}
    recorded: dict[tuple[str, str], np.ndarray] = {}  # a device's recording, cut into its 1-s clips
    for filename in all_files:
        scene, city, location, segment, k, _ = Path(filename).stem.split("-")
        device = device_of(filename)
        key = f"{scene}-{city}-{location}-{segment}"
        seconds = seconds_of[key]
        if len(seconds) not in worlds:
            worlds[len(seconds)] = _World(SyntheticConfig(sample_rate=44100), seconds=len(seconds))
        world = worlds[len(seconds)]
        if key not in scenes:
            scenes[key] = world.scene_spectrum(CLASSES.index(scene), city if city in CITIES else CITIES[0],
                                               int(location), _rng(seed, int(segment)))  # fmt: skip
        if (key, device) not in recorded:
            recorded[key, device] = world.record(scenes[key], device,
                                                 _rng(seed, int(segment), len(device), ord(device[-1])))  # fmt: skip
        at = seconds.index(int(k)) * 44100
        clip = recorded[key, device][at : at + 44100]
        soundfile.write(root / filename, np.clip(clip, -1, 1), 44100, subtype="PCM_24")
        rows.append({"filename": filename, "scene_label": labels[filename], "identifier": f"{city}-{location}",
                     "source_label": device})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "meta.csv", sep="\t", index=False)
    for name, files in {**chosen, "test": test_files}.items():
        pd.DataFrame({"filename": files, "scene_label": [labels[f] for f in files]}).to_csv(
            root / f"{name}.csv", sep="\t", index=False)  # fmt: skip
    return root


COCHL_CLASSES = ["Bus", "Cafe", "Car", "CrowdedIndoor", "Elevator", "Kitchen", "Park", "ResidentialArea", "Restaurant",
                 "Restroom", "Street", "Subway", "SubwayStation"]  # fmt: skip


def write_cochlscene(root: Path, files_per_class: int = 1, seed: int = 0) -> Path:
    """A CochlScene-layout folder: {Train,Val,Test}/<Class>/*.wav, 10-s clips at 44.1 kHz, 16-bit."""
    world = _World(SyntheticConfig(sample_rate=44100), [c.lower() for c in COCHL_CLASSES], [f"q{i}" for i in range(4)],
                   stream=20_000)  # fmt: skip
    for split_index, split in enumerate(("Train", "Val", "Test")):
        for c, name in enumerate(COCHL_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(files_per_class):
                rng = _rng(seed, 30_000 + split_index, c, i)
                audio = world.record(world.scene_spectrum(c, CITIES[i % len(CITIES)], 1000 + i, rng), f"q{i % 4}", rng)
                soundfile.write(folder / f"{name}_{i:04d}.wav", np.clip(audio, -1, 1), 44100, subtype="PCM_16")
    return root
