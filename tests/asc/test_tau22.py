"""The TAU22 reader on a small dataset in the exact TAU22 layout (24-bit wav, real filenames)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from trainables.asc.data import load_prepared
from trainables.asc.tau22 import prepare_at_rate, prepare_tau22, tau22_root_of
from trainables.prepared import DatasetError


@pytest.fixture(scope="module")
def tau22_root(tau22_written, tmp_path_factory):
    """A copy: these tests re-encode, delete and corrupt files."""
    return Path(shutil.copytree(tau22_written, tmp_path_factory.mktemp("tau22") / tau22_written.name))


def test_reads_24_bit_audio_resampled_to_32k(tau22_root, tmp_path):
    assert soundfile.info(next((tau22_root / "audio").iterdir())).subtype == "PCM_24"
    directory = prepare_tau22(tau22_root, tmp_path, progress=False)
    data = load_prepared(directory)
    assert data.sample_rate == 32000 and data.clips.shape == (len(data.filenames), 32000)
    row = 7
    original, rate = soundfile.read(tau22_root / data.filenames[row], dtype="float32")
    expected = torchaudio.functional.resample(torch.from_numpy(original), rate, 32000).numpy()
    assert np.abs(data.clips[row] / 32767 - expected[:32000]).max() < 1e-3
    assert data.devices[row] == data.filenames[row].rsplit("-", 1)[1][:-4]


def test_splits_nested_and_val_test_split_by_location(tau22_root, tmp_path):
    data = load_prepared(prepare_tau22(tau22_root, tmp_path, progress=False))
    previous: set[int] = set()
    for name in ("split5", "split10", "split25", "split50"):
        rows = set(data.splits[name].tolist())
        assert previous <= rows
        previous = rows
    assert "split100" not in data.splits  # not among the split files shipped in tests/data/tau22
    location = {f: f.split("-")[1] + f.split("-")[2] for f in data.filenames}
    val = {location[data.filenames[i]] for i in data.splits["val"]}
    test = {location[data.filenames[i]] for i in data.splits["test"]}
    assert val and test and not val & test
    assert {"s4", "s5", "s6"} <= set(data.devices[data.splits["val"]])


def test_cache_is_reused_and_a_changed_dataset_invalidates_it(tau22_root, tmp_path):
    first = prepare_tau22(tau22_root, tmp_path, progress=False)
    stamp = (first / "clips.npy").stat().st_mtime_ns
    assert prepare_tau22(tau22_root, tmp_path, progress=False) == first
    assert (first / "clips.npy").stat().st_mtime_ns == stamp
    victim = next((tau22_root / "audio").iterdir())
    audio, rate = soundfile.read(victim)
    soundfile.write(victim, audio * 0.5, rate, subtype="PCM_16")  # re-encoded at another width
    os.utime(victim, ns=(stamp, stamp + 10**9))
    second = prepare_tau22(tau22_root, tmp_path, progress=False)
    assert second != first and load_prepared(second).fingerprint != load_prepared(first).fingerprint


def test_missing_or_unreadable_files_stop_before_training(tau22_root, tmp_path):
    victim = sorted((tau22_root / "audio").iterdir())[3]
    saved = victim.read_bytes()
    try:
        victim.unlink()
        with pytest.raises(DatasetError, match=victim.name):
            prepare_tau22(tau22_root, tmp_path / "a", progress=False)
        victim.write_bytes(b"not a wav file at all")
        with pytest.raises(DatasetError, match=f"{victim.name}.*unreadable"):
            prepare_tau22(tau22_root, tmp_path / "b", progress=False)
        assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith("tau22-")], "no half-made cache"
    finally:
        victim.write_bytes(saved)


def test_split_files_from_another_folder(tau22_root, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    for name in ("split5", "split10", "test"):
        (splits / f"{name}.csv").write_bytes((tau22_root / f"{name}.csv").read_bytes())
    data = load_prepared(prepare_tau22(tau22_root, tmp_path / "cache", splits_dir=splits, progress=False))
    assert set(data.splits) == {"split5", "split10", "val", "test", "full_test"}
    with pytest.raises(DatasetError, match="test.csv"):
        prepare_tau22(tau22_root, tmp_path / "cache", splits_dir=tmp_path, progress=False)


def test_teachers_at_another_rate_read_tau22_again_split_clip_for_clip_as_the_run(tau22_written, tmp_path):
    """NTU's PaSST teachers hear TAU22 at 44.1 kHz: the students' 32 kHz dataset is read again at that rate, with
    the same clips in every split (the val/test halves included), once."""
    students = load_prepared(prepare_tau22(tau22_written, tmp_path, progress=False))
    assert tau22_root_of(students) == tau22_written.resolve()
    directory = prepare_at_rate(students, tau22_written, tmp_path, 44100)
    teachers = load_prepared(directory)
    assert (students.sample_rate, teachers.sample_rate) == (32000, 44100)
    assert teachers.clips.shape == (len(teachers.filenames), 44100) and teachers.fingerprint != students.fingerprint
    assert set(teachers.splits) == set(students.splits)
    for name, rows in students.splits.items():
        assert [students.filenames[r] for r in rows] == [teachers.filenames[r] for r in teachers.splits[name]], name
    original, rate = soundfile.read(tau22_written / teachers.filenames[3], dtype="float32")
    assert rate == 44100 and np.abs(teachers.clips[3] / 32767 - original[:44100]).max() < 1e-3, "not resampled"
    made = directory.stat().st_mtime_ns
    assert prepare_at_rate(students, tau22_written, tmp_path, 44100) == directory
    assert directory.stat().st_mtime_ns == made, "read once, then cached"

    assert tau22_root_of(dataclasses.replace(students, source=f"tau22:{tmp_path / 'moved'}")) is None, "root gone"
    assert tau22_root_of(dataclasses.replace(students, source="synthetic")) is None
