"""Decode audio files (any PCM width soundfile reads) into one resampled, memory-mapped int16 array."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from trainables.prepared import DatasetError

# Resampling a full-scale PCM file overshoots by a few percent (Gibbs ripple); only louder files are worth a word.
_FULL_SCALE = 1.1


def read_clip(path: Path, sample_rate: int, length: int, resamplers: dict) -> np.ndarray:
    """Mono float32 [length] at `sample_rate`: resampled with torchaudio, zero-padded or cut to length.

    A file with no samples or with a NaN or infinite sample is refused (DatasetError naming it): decoded
    silently, the first becomes a clip of zeros and the second poisons every figure computed from it."""
    if Path(path).stat().st_size == 0:
        raise DatasetError(f"{path}: an empty file")
    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise DatasetError(f"{path}: unreadable audio ({err})") from None
    if audio.size == 0:
        raise DatasetError(f"{path}: holds no audio samples")
    if not np.isfinite(audio).all():
        raise DatasetError(f"{path}: holds NaN or infinite samples")
    mono = torch.from_numpy(audio.mean(axis=1))
    if rate != sample_rate:
        if rate not in resamplers:
            resamplers[rate] = torchaudio.transforms.Resample(rate, sample_rate)
        mono = resamplers[rate](mono)
    clip = np.zeros(length, dtype=np.float32)
    clip[: min(length, mono.numel())] = mono.numpy()[:length]
    return clip


def decode_to_memmap(paths: Sequence[Path], target: Path, sample_rate: int, seconds: float, label: str,
                     progress: bool = True, pieces: int = 1) -> None:  # fmt: skip
    """Write clips.npy int16 at `target`, showing a progress line on stderr.

    Each file gives `pieces` consecutive rows of seconds/pieces each: [len(paths) · pieces, seconds·rate/pieces].
    Float files louder than full scale are clipped, and reported on stderr (how many, the loudest).
    """
    length = int(round(seconds * sample_rate))
    clips = np.lib.format.open_memmap(target, mode="w+", dtype=np.int16, shape=(len(paths) * pieces, length // pieces))
    resamplers: dict = {}
    started = time.perf_counter()
    loud: list[tuple[float, Path]] = []
    for i, path in enumerate(paths):
        audio = read_clip(path, sample_rate, length, resamplers)
        peak = float(np.abs(audio).max())
        if peak > _FULL_SCALE:
            loud.append((peak, path))
        audio = np.clip(audio, -1, 1)
        clips[i * pieces : (i + 1) * pieces] = np.round(audio[: length // pieces * pieces].reshape(pieces, -1) * 32767)
        if progress and (i + 1 == len(paths) or (i + 1) % max(1, len(paths) // 50) == 0):
            rate = (i + 1) / (time.perf_counter() - started)
            print(f"\r{label}: {i + 1}/{len(paths)} clips ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    if loud:
        peak, path = max(loud)
        print(f"warning: {len(loud)} of {len(paths)} audio files exceed full scale and were clipped to [-1, 1]; "
              f"the loudest, {path}, peaks at {peak:.2f} ({20 * np.log10(peak):+.1f} dBFS)", file=sys.stderr,
              flush=True)  # fmt: skip
    clips.flush()
    del clips
