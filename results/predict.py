"""Classify every audio file under a folder and write the DCASE24 submission file: one per subset's student.

    python results/predict.py RUN_DIR AUDIO_DIR OUT_DIR     # every subset's student: OUT_DIR/subset_<N>.csv
    python results/predict.py STUDENT.pt AUDIO_DIR OUT.csv  # one student

Each output is tab-separated with a header: `filename`, `scene_label` (the most probable class),
then one column per class holding its probability (softmax of the logits, in [0, 1], summing to 1
per row), in the student's class order (TAU22: airport, bus, metro, metro_station, park,
public_square, shopping_mall, street_pedestrian, street_traffic, tram). Filenames are written as
TAU22 writes them, relative paths under `audio/`: AUDIO_DIR/x.wav → audio/x.wav (a folder that
itself holds an audio/ folder keeps that prefix once).

Every file soundfile reads is classified (wav, flac, ogg, aiff, …; other suffixes are not looked at). It is
mixed down to mono and resampled to the student's sample rate (32 kHz) with torchaudio. The students
classify 1-s clips: a longer file is cut into its whole 1-s windows and their class probabilities are
averaged (said once, with how many files); a shorter one is zero-padded to 1 s and named in a warning. The
exported student.ts and student.onnx do the same inside the model (results/formats.py), so a whole file fed to
them gets the probabilities written here.
A file that cannot be read, or that holds a NaN or infinite sample, is skipped and listed at the end; the others
are still written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import torch
import torchaudio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.student_file import CLIP_SECONDS, exported_students, load_student, student_classes  # noqa: E402
from trainables.tensor_files import UnreadableFile  # noqa: E402
# soundfile names its formats (WAV, FLAC, OGG, AIFF, …); these are the suffixes they go by besides their names.
_EXTRA_SUFFIXES = {".aif", ".oga", ".opus", ".wave"}


def read_waveform(path: Path, sample_rate: int) -> torch.Tensor:
    """The whole file as a mono float waveform at `sample_rate` Hz, full scale 1.0."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [frames, channels]
    waveform = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    if rate != sample_rate:
        waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=sample_rate)
    return waveform


def windows(waveform: torch.Tensor, samples: int) -> torch.Tensor:
    """[windows, samples]: the whole `samples`-long windows of a long waveform (the rest after the last is left
    out), or a short one zero-padded at the end to one window."""
    if waveform.numel() < samples:
        return torch.nn.functional.pad(waveform, (0, samples - waveform.numel()))[None]
    count = waveform.numel() // samples
    return waveform[: count * samples].reshape(count, samples)


def read_clip(path: Path, sample_rate: int, seconds: float = CLIP_SECONDS) -> torch.Tensor:
    """The first `seconds` of a file as a mono waveform at `sample_rate`, zero-padded when shorter."""
    return windows(read_waveform(path, sample_rate), int(round(seconds * sample_rate)))[0]


def audio_files(audio_dir: Path) -> list[Path]:
    """Every file under `audio_dir` (any depth) whose suffix names a format soundfile reads, sorted by path."""
    suffixes = {f".{name.lower()}" for name in soundfile.available_formats()} | _EXTRA_SUFFIXES
    return sorted(p for p in Path(audio_dir).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def submission_name(path: Path, audio_dir: Path) -> str:
    relative = Path(path).relative_to(audio_dir)
    return relative.as_posix() if relative.parts[0] == "audio" else f"audio/{relative.as_posix()}"


@dataclass
class Predictions:
    table: pd.DataFrame  # the submission table: filename, scene_label, one probability column per class
    averaged: dict[str, int] = field(default_factory=dict)  # file → 1-s windows averaged (files longer than 1 s)
    padded: dict[str, float] = field(default_factory=dict)  # file → its seconds (files shorter than 1 s)
    unreadable: dict[str, str] = field(default_factory=dict)  # file → why (unreadable, or not finite)


@torch.no_grad()
def predict_folder(student_path: Path, audio_dir: Path, batch_size: int = 64) -> Predictions:
    """Every readable audio file's class probabilities (mean over its 1-s windows)."""
    frontend, model, _ = load_student(Path(student_path))
    classes = student_classes(Path(student_path))
    sample_rate = frontend.config.sample_rate
    samples = int(round(CLIP_SECONDS * sample_rate))
    found = Predictions(pd.DataFrame())
    names, rows = [], []
    for path in audio_files(audio_dir):
        name = submission_name(path, Path(audio_dir))
        try:
            waveform = read_waveform(path, sample_rate)
        except (soundfile.SoundFileError, RuntimeError, ValueError) as error:
            found.unreadable[name] = str(error).splitlines()[0] if str(error) else type(error).__name__
            continue
        if waveform.numel() == 0:
            found.unreadable[name] = "no audio in it"
            continue
        if not torch.isfinite(waveform).all():  # a float file may hold them; the student would say NaN for every class
            found.unreadable[name] = "NaN or infinite samples in it"
            continue
        clips = windows(waveform, samples)
        if waveform.numel() < samples:
            found.padded[name] = waveform.numel() / sample_rate
        elif len(clips) > 1:
            found.averaged[name] = len(clips)
        probabilities = torch.cat([model(frontend(clips[i : i + batch_size])).softmax(dim=1)
                                   for i in range(0, len(clips), batch_size)])  # fmt: skip
        rows.append(probabilities.mean(dim=0).numpy())
        names.append(name)
    probs = np.stack(rows) if rows else np.empty((0, len(classes)), dtype=np.float32)
    table = pd.DataFrame(probs, columns=list(classes))
    table.insert(0, "scene_label", [classes[i] for i in probs.argmax(axis=1)])
    table.insert(0, "filename", names)
    found.table = table
    return found


def write_predictions(student_path: Path, audio_dir: Path, out_path: Path) -> Predictions:
    found = predict_folder(student_path, audio_dir)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    found.table.to_csv(out_path, sep="\t", index=False, float_format="%.6f")
    return found


def _notes(found: Predictions) -> list[str]:
    notes = []
    if found.averaged:
        most = max(found.averaged.values())
        notes.append(f"{len(found.averaged)} file(s) longer than 1 s: each classified as the mean of its whole 1-s "
                     f"windows (up to {most}; the rest after the last whole second is left out)")  # fmt: skip
    if found.padded:
        shown = ", ".join(f"{n} ({s:.2f} s)" for n, s in list(found.padded.items())[:5])
        more = f" and {len(found.padded) - 5} more" if len(found.padded) > 5 else ""
        notes.append(f"warning: {len(found.padded)} file(s) shorter than 1 s, zero-padded: {shown}{more}")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/predict.py", description=__doc__.splitlines()[0])
    parser.add_argument("student", help="a run directory (every subset's student) or one student file, "
                                        "e.g. runs/kd or runs/kd/best/subset_25/student.pt")  # fmt: skip
    parser.add_argument("audio_dir", help="a folder; every audio file under it is classified")
    parser.add_argument("out", help="for a run: the folder of subset_<N>.csv files; for a student: the file to write")
    args = parser.parse_args(argv)
    source, audio_dir = Path(args.student), Path(args.audio_dir)
    if source.is_dir():
        students = {f"subset_{s}": p for s, p in exported_students(source).items()}
        if not students:
            print(f"error: {source} holds no exported student (best/subset_<N>/student.pt)", file=sys.stderr)
            return 2
        outputs = {key: Path(args.out) / f"{key}.csv" for key in students}
    elif source.is_file():
        students, outputs = {"student": source}, {"student": Path(args.out)}
    else:
        print(f"error: no such student file or run directory: {source}", file=sys.stderr)
        return 2
    if not audio_dir.is_dir():
        print(f"error: no such folder: {audio_dir}", file=sys.stderr)
        return 2
    if not audio_files(audio_dir):
        print(f"error: {audio_dir} holds no audio file soundfile reads", file=sys.stderr)
        return 2
    found = None
    for key, student in students.items():
        try:
            found = write_predictions(student, audio_dir, outputs[key])
        except UnreadableFile as error:  # a damaged or hostile student file
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"Wrote {outputs[key]} ({len(found.table)} files, {key.replace('_', ' ')})")
    for note in _notes(found):  # the same files for every student
        print(note)
    if found.unreadable:
        print(f"Skipped {len(found.unreadable)} unreadable file(s):", file=sys.stderr)
        for name, why in found.unreadable.items():
            print(f"  {name}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
