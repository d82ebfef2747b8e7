"""Classify every .wav file under a folder and write the DCASE24 submission file.

    python results/predict.py STUDENT.pt AUDIO_DIR OUT.csv

The output is tab-separated with a header: `filename`, `scene_label` (the most probable class),
then one column per class holding its probability (softmax of the logits, in [0, 1], summing to 1
per row), in the dataset's class order (airport, bus, metro, metro_station, park, public_square,
shopping_mall, street_pedestrian, street_traffic, tram). Filenames are written as TAU22 writes
them, relative paths under `audio/`: AUDIO_DIR/x.wav → audio/x.wav (a folder that itself holds an
audio/ folder keeps that prefix once).

Each file is read with soundfile, mixed down to mono, resampled to the student's sample rate
(32 kHz) with torchaudio when it differs, and cropped or zero-padded at the end to 1 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import torch
import torchaudio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.export import load_student  # noqa: E402
from trainables.tensor_files import UnreadableFile  # noqa: E402
from trainables.synthetic_asc import CLASSES  # noqa: E402  (TAU22's class order, which prepared datasets use)

CLIP_SECONDS = 1.0


def read_clip(path: Path, sample_rate: int, seconds: float = CLIP_SECONDS) -> torch.Tensor:
    """A mono float waveform [sample_rate × seconds] at `sample_rate` Hz, full scale 1.0."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [frames, channels]
    waveform = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    if rate != sample_rate:
        waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=sample_rate)
    samples = int(round(seconds * sample_rate))
    return torch.nn.functional.pad(waveform[:samples], (0, max(0, samples - waveform.numel())))


def wav_files(audio_dir: Path) -> list[Path]:
    """Every .wav file under `audio_dir` (any depth, any case of the suffix), sorted by path."""
    return sorted(p for p in Path(audio_dir).rglob("*") if p.is_file() and p.suffix.lower() == ".wav")


def submission_name(path: Path, audio_dir: Path) -> str:
    relative = Path(path).relative_to(audio_dir)
    return relative.as_posix() if relative.parts[0] == "audio" else f"audio/{relative.as_posix()}"


@torch.no_grad()
def predict_folder(student_path: Path, audio_dir: Path, batch_size: int = 64,
                   classes: list[str] = CLASSES) -> pd.DataFrame:  # fmt: skip
    """The submission table: filename, scene_label, one probability column per class."""
    frontend, model, _ = load_student(Path(student_path))
    if model.arch.n_classes != len(classes):
        raise ValueError(f"{student_path} predicts {model.arch.n_classes} classes, the submission has {len(classes)}")
    files = wav_files(audio_dir)
    sample_rate = frontend.config.sample_rate
    probabilities = []
    for start in range(0, len(files), batch_size):
        waveforms = torch.stack([read_clip(p, sample_rate) for p in files[start : start + batch_size]])
        probabilities.append(model(frontend(waveforms)).softmax(dim=1))
    probs = torch.cat(probabilities).numpy() if probabilities else np.empty((0, len(classes)), dtype=np.float32)
    frame = pd.DataFrame(probs, columns=list(classes))
    frame.insert(0, "scene_label", [classes[i] for i in probs.argmax(axis=1)])
    frame.insert(0, "filename", [submission_name(p, Path(audio_dir)) for p in files])
    return frame


def write_predictions(student_path: Path, audio_dir: Path, out_path: Path) -> Path:
    frame = predict_folder(student_path, audio_dir)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_path, sep="\t", index=False, float_format="%.6f")
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/predict.py", description=__doc__.splitlines()[0])
    parser.add_argument("student", help="an exported student file, e.g. runs/kd/best/subset_25/student.pt")
    parser.add_argument("audio_dir", help="a folder; every .wav file under it is classified")
    parser.add_argument("out", help="the submission file to write (tab-separated)")
    args = parser.parse_args(argv)
    student, audio_dir = Path(args.student), Path(args.audio_dir)
    if not student.is_file():
        print(f"error: no such student file: {student}", file=sys.stderr)
        return 2
    if not audio_dir.is_dir():
        print(f"error: no such folder: {audio_dir}", file=sys.stderr)
        return 2
    if not wav_files(audio_dir):
        print(f"error: {audio_dir} holds no .wav file", file=sys.stderr)
        return 2
    try:
        path = write_predictions(student, audio_dir, Path(args.out))
    except soundfile.SoundFileError as error:
        print(f"error: cannot read audio: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    except UnreadableFile as error:  # a damaged or hostile student file
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {path} ({len(wav_files(audio_dir))} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
