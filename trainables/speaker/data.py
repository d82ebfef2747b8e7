"""The prepared speaker dataset that OS-KDFT2 training reads, and the readers that write it.

A prepared dataset is a directory:

    meta.csv        tab-separated: filename, speaker, domain, split, offset, length; row i is utterance i
                    domain: "target" (VoxCeleb-like, the task's data) or "ood" (LibriSpeech-like)
                    split:  "train", "val" or "test" (held-out speakers; "ood" rows are all "train")
                    offset, length: where the utterance lies in audio.npy, in samples
    audio.npy       int16 [total samples], every utterance end to end, mono at 16 kHz, full scale = 1.0
    trials/         test.txt (and optionally val.txt): VoxCeleb's format, one trial a line,
                    "<1 = same speaker | 0> <enrolment filename> <test filename>"
    dataset.json    {"fingerprint", "sample_rate", "source"}

Utterances differ in length, so they are stored end to end in one flat array rather than as rows
of a matrix. `audio.npy` is opened memory-mapped: trials on one machine share the page cache.

The readers stream real corpora into this layout without holding them in memory: VoxCeleb1 (wav,
`<speaker>/<video>/<nnnnn>.wav`, filenames kept relative so its trial lists apply unchanged) and
LibriSpeech (flac, `<speaker>/<chapter>/*.flac`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainables.prepared import DatasetError

SAMPLE_RATE = 16000
META_COLUMNS = ["filename", "speaker", "domain", "split", "offset", "length"]
DOMAINS = ("target", "ood")
SPLITS = ("train", "val", "test")



@dataclass
class Trials:
    """A trial list as row indices into the dataset."""

    enroll: np.ndarray  # int64 [trials]
    test: np.ndarray  # int64 [trials]
    labels: np.ndarray  # int64 [trials], 1 = same speaker

    def rows(self) -> np.ndarray:
        """Every utterance the trials use, sorted."""
        return np.unique(np.concatenate([self.enroll, self.test]))


@dataclass
class SpeakerData:
    directory: Path
    fingerprint: str
    sample_rate: int
    filenames: list[str]
    speakers: np.ndarray  # str [utterances]
    domains: np.ndarray  # str [utterances]
    splits: np.ndarray  # str [utterances]
    offsets: np.ndarray  # int64 [utterances]
    lengths: np.ndarray  # int64 [utterances]
    audio: np.ndarray  # int16 [total samples], memory-mapped
    trials: dict[str, Trials]  # "test" and, when present, "val"
    train_speakers: list[str]  # the target-domain training speakers, sorted: the classes of the speaker loss
    labels: np.ndarray  # int64 [utterances]: index into train_speakers, −1 for other utterances

    def rows(self, domain: str, split: str = "train") -> np.ndarray:
        return np.flatnonzero((self.domains == domain) & (self.splits == split))

    def utterance(self, row: int) -> torch.Tensor:
        """The whole utterance as float [samples] in [−1, 1]."""
        start = int(self.offsets[row])
        return torch.from_numpy(self.audio[start : start + int(self.lengths[row])].astype(np.float32) / 32768.0)

    def crops(self, rows: Sequence[int], samples: int) -> torch.Tensor:
        """One random crop of `samples` per row, float [len(rows), samples].

        Start positions come from torch's global generator, so a resumed run draws the same crops.
        Utterances shorter than the crop are repeated end to end (wrap padding, as VoxCeleb recipes do).
        """
        out = np.empty((len(rows), samples), dtype=np.float32)
        starts = torch.rand(len(rows)).numpy()
        for i, row in enumerate(rows):
            offset, length = int(self.offsets[row]), int(self.lengths[row])
            if length >= samples:
                start = offset + int(starts[i] * (length - samples + 1))
                out[i] = self.audio[start : start + samples]
            else:
                out[i] = np.resize(self.audio[offset : offset + length], samples)
        return torch.from_numpy(out / 32768.0)


def write_prepared(
    directory: Path,
    entries: Sequence[tuple[str, str, str, str, int]],
    read: Callable[[int], np.ndarray],
    trials: dict[str, Sequence[tuple[int, str, str]]],
    fingerprint: str,
    source: str,
    sample_rate: int = SAMPLE_RATE,
) -> None:
    """Write a prepared dataset, streaming the audio.

    entries: (filename, speaker, domain, split, length in samples) per utterance.
    read(i): utterance i as int16 [length] (or float in [−1, 1], converted).
    trials: name ("test", "val") → (label, enroll filename, test filename) per trial.
    dataset.json goes last, so a half-written directory never loads.
    """
    directory = Path(directory)
    (directory / "trials").mkdir(parents=True, exist_ok=True)
    lengths = np.array([e[4] for e in entries], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    audio = np.lib.format.open_memmap(directory / "audio.npy", mode="w+", dtype=np.int16, shape=(int(lengths.sum()),))
    for i, (offset, length) in enumerate(zip(offsets, lengths)):
        wave = np.asarray(read(i))
        if wave.dtype != np.int16:
            wave = (np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)
        if len(wave) != length:
            raise DatasetError(f"{entries[i][0]}: read {len(wave)} samples, expected {length}")
        audio[offset : offset + length] = wave
    audio.flush()
    del audio
    meta = pd.DataFrame([e[:4] for e in entries], columns=META_COLUMNS[:4])
    meta["offset"], meta["length"] = offsets, lengths
    meta.to_csv(directory / "meta.csv", sep="\t", index=False)
    for name, lines in trials.items():
        text = "".join(f"{int(label)} {enroll} {test}\n" for label, enroll, test in lines)
        (directory / "trials" / f"{name}.txt").write_text(text)
    info = {"fingerprint": fingerprint, "sample_rate": sample_rate, "source": source}
    (directory / "dataset.json").write_text(json.dumps(info, indent=1))


def is_prepared(directory: Path) -> bool:
    return (Path(directory) / "dataset.json").is_file() and (Path(directory) / "audio.npy").is_file()


def load_prepared(directory: Path) -> SpeakerData:
    directory = Path(directory)
    if not is_prepared(directory):
        raise DatasetError(f"{directory} holds no prepared speaker dataset (no dataset.json)")
    info = json.loads((directory / "dataset.json").read_text())
    meta = pd.read_csv(directory / "meta.csv", sep="\t", dtype={"speaker": str, "filename": str})
    audio = np.load(directory / "audio.npy", mmap_mode="r")
    lengths, offsets = meta["length"].to_numpy(np.int64), meta["offset"].to_numpy(np.int64)
    if len(meta) and int((offsets + lengths).max()) > len(audio):
        raise DatasetError(f"{directory}: meta.csv points past the end of audio.npy")
    bad = set(meta["domain"]) - set(DOMAINS) | set(meta["split"]) - set(SPLITS)
    if bad:
        raise DatasetError(f"{directory}: unknown domain or split values {sorted(bad)}")
    filenames = meta["filename"].tolist()
    row = {name: i for i, name in enumerate(filenames)}
    trials = {}
    for name in ("test", "val"):
        path = directory / "trials" / f"{name}.txt"
        if path.is_file():
            trials[name] = read_trials(path, row)
    if "test" not in trials:
        raise DatasetError(f"{directory}: no trials/test.txt")
    speakers = meta["speaker"].astype(str).to_numpy()
    domains, splits = meta["domain"].to_numpy(str), meta["split"].to_numpy(str)
    train = (domains == "target") & (splits == "train")
    train_speakers = sorted(set(speakers[train].tolist()))
    index = {s: i for i, s in enumerate(train_speakers)}
    labels = np.array([index[s] if t else -1 for s, t in zip(speakers, train)], dtype=np.int64)
    return SpeakerData(
        directory=directory, fingerprint=info["fingerprint"], sample_rate=int(info["sample_rate"]),
        filenames=filenames, speakers=speakers, domains=domains, splits=splits, offsets=offsets,
        lengths=lengths, audio=audio, trials=trials, train_speakers=train_speakers, labels=labels,
    )  # fmt: skip


def read_trials(path: Path, row: dict[str, int]) -> Trials:
    """A VoxCeleb-format trial list, filenames resolved to rows."""
    enroll, test, labels = [], [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise DatasetError(f"{path}:{number}: expected '<0|1> <enrol file> <test file>', got {line!r}")
        for name in parts[1:]:
            if name not in row:
                raise DatasetError(f"{path}:{number}: {name} is not in meta.csv")
        labels.append(int(parts[0]))
        enroll.append(row[parts[1]])
        test.append(row[parts[2]])
    return Trials(np.array(enroll, dtype=np.int64), np.array(test, dtype=np.int64), np.array(labels, dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Readers for the real corpora


def _audio_info(path: Path) -> tuple[int, int]:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames, info.samplerate


def _read_int16(path: Path) -> np.ndarray:
    import soundfile

    wave, _ = soundfile.read(str(path), dtype="int16", always_2d=True)
    return wave[:, 0]


def voxceleb_entries(roots: Iterable[Path]) -> list[tuple[str, Path, str]]:
    """(filename relative to its root, path, speaker) of every `id*/<video>/*.wav` under the roots.

    VoxCeleb1 ships dev and test as two trees (vox1_dev_wav/wav, vox1_test_wav/wav); pass both.
    """
    found = []
    for root in roots:
        root = Path(root)
        for path in sorted(root.glob("id*/*/*.wav")):
            found.append((path.relative_to(root).as_posix(), path, path.parts[-3]))
    if not found:
        raise DatasetError(f"no VoxCeleb wav files (id*/<video>/*.wav) under {', '.join(map(str, roots))}")
    return found


def prepare_corpus(
    out: Path,
    voxceleb_dirs: Sequence[Path],
    trials_file: Path,
    librispeech_dir: Path | None = None,
    val_speakers: int = 0,
    val_trials_per_speaker: int = 300,
    max_ood_utterances_per_speaker: int | None = None,
    seed: int = 0,
) -> None:
    """Write VoxCeleb1 (target domain) and LibriSpeech (out-of-domain) as one prepared dataset.

    trials_file: VoxCeleb's list (e.g. veri_test2.txt, "label enroll test" with paths relative to
        the wav roots); its speakers become the test split, every other VoxCeleb speaker trains.
    val_speakers: how many training speakers to hold out for a validation trial list (0: none; then
        training reports its figures on the test trials, as OS-KDFT's code does).
    val_trials_per_speaker: same-speaker trials per held-out speaker, plus as many different-speaker
        ones (the command's defaults, 60 speakers × 300, give about 36,000 trials, as many as Vox1-O's
        37,611, so that the EER that ranks trials is about as precise as the one reported).
    max_ood_utterances_per_speaker: cap on LibriSpeech utterances per speaker (None: all).
    """
    rows = [line.split() for line in Path(trials_file).read_text().splitlines() if line.strip()]
    lines = [(int(label), enroll, test) for label, enroll, test in rows]
    test_speakers = {name.split("/")[0] for _, enroll, test in lines for name in (enroll, test)}
    vox = voxceleb_entries(voxceleb_dirs)
    rng = np.random.default_rng(seed)
    train_pool = sorted({spk for _, _, spk in vox} - test_speakers)
    if val_speakers and val_speakers >= len(train_pool):
        raise DatasetError(f"--val-speakers {val_speakers}: only {len(train_pool)} speakers are not in the trial list; "
                           "hold out fewer, so that some remain to train on")  # fmt: skip
    held = set(rng.choice(train_pool, size=val_speakers, replace=False).tolist()) if val_speakers else set()
    items: list[tuple[str, str, str, str, Path]] = []
    for name, path, speaker in vox:
        split = "test" if speaker in test_speakers else "val" if speaker in held else "train"
        items.append((name, speaker, "target", split, path))
    if librispeech_dir is not None:
        items += librispeech_items(Path(librispeech_dir), max_ood_utterances_per_speaker, rng)
    missing = {n for _, a, b in lines for n in (a, b)} - {i[0] for i in items}
    if missing:
        raise DatasetError(
            f"{len(missing)} files of {trials_file} are not under the VoxCeleb roots, e.g. {sorted(missing)[0]}"
        )
    entries = []
    for name, speaker, domain, split, path in items:
        frames, rate = _audio_info(path)
        if rate != SAMPLE_RATE:
            raise DatasetError(f"{path}: {rate} Hz; the models here take {SAMPLE_RATE} Hz audio")
        entries.append((name, speaker, domain, split, frames))
    trials = {"test": lines}
    if held:
        trials["val"] = random_trials([(e[0], e[1]) for e in entries if e[3] == "val"], val_trials_per_speaker, rng)
    source = {"voxceleb": [str(d) for d in voxceleb_dirs], "trials": str(trials_file),
              "librispeech": str(librispeech_dir)}  # fmt: skip
    listing = json.dumps([entries, trials, source], sort_keys=True).encode()
    fingerprint = "corpus-" + hashlib.sha256(listing).hexdigest()[:16]
    write_prepared(out, entries, lambda i: _read_int16(items[i][4]), trials, fingerprint, json.dumps(source))


def librispeech_items(root: Path, max_per_speaker: int | None, rng: np.random.Generator) -> list:
    """Out-of-domain items from a LibriSpeech tree `<speaker>/<chapter>/*.flac`, speakers prefixed "libri-"."""
    by_speaker: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*/*/*.flac")):
        by_speaker.setdefault(path.parts[-3], []).append(path)
    if not by_speaker:
        raise DatasetError(f"no LibriSpeech flac files (<speaker>/<chapter>/*.flac) under {root}")
    items = []
    for speaker, paths in by_speaker.items():
        if max_per_speaker is not None and len(paths) > max_per_speaker:
            paths = [paths[i] for i in sorted(rng.choice(len(paths), max_per_speaker, replace=False))]
        for path in paths:
            items.append((f"librispeech/{path.relative_to(root).as_posix()}", f"libri-{speaker}", "ood", "train", path))
    return items


def random_trials(
    utterances: Sequence[tuple[str, str]], per_speaker: int, rng: np.random.Generator
) -> list[tuple[int, str, str]]:
    """Balanced trials over (filename, speaker) pairs: per speaker, `per_speaker` same-speaker pairs
    (fewer if it has fewer) and as many pairs with a random other speaker's utterance."""
    by_speaker: dict[str, list[str]] = {}
    for name, speaker in utterances:
        by_speaker.setdefault(speaker, []).append(name)
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise DatasetError("trials need at least two speakers")
    lines = []
    for s, speaker in enumerate(speakers):
        names = by_speaker[speaker]
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        chosen = [pairs[i] for i in rng.permutation(len(pairs))[:per_speaker]]
        for a, b in chosen:
            lines.append((1, a, b))
            other = speakers[(s + 1 + int(rng.integers(len(speakers) - 1))) % len(speakers)]
            lines.append((0, a, by_speaker[other][int(rng.integers(len(by_speaker[other])))]))
    return lines


def train_batches(rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Shuffled batches (torch's global generator) of `batch_size`; a last partial batch only if it has ≥ 2
    rows, since the embedding's batch norm needs two."""
    order = rows[torch.randperm(len(rows)).numpy()]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) >= 2:
            yield batch


def main(argv: list[str] | None = None) -> int:
    """python -m trainables.speaker.data --voxceleb DIR [DIR …] --trials FILE [--librispeech DIR] --out DIR"""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m trainables.speaker.data",
                                     description="Prepare VoxCeleb1 (+ LibriSpeech) for an OS-KDFT2 search.")  # fmt: skip
    parser.add_argument("--voxceleb", nargs="+", required=True, help="wav folders by speaker id (vox1_dev_wav/wav …)")
    parser.add_argument("--trials", required=True, help="trial list: lines 'label enroll test' (e.g. veri_test2.txt)")
    parser.add_argument("--librispeech", help="LibriSpeech folder (speaker/chapter/*.flac), the out-of-domain corpus")
    parser.add_argument("--val-speakers", type=int, default=60, help="training speakers held out for validation trials")
    parser.add_argument("--val-trials-per-speaker", type=int, default=300,
                        help="same-speaker validation trials per held-out speaker, plus as many different-speaker ones")
    parser.add_argument("--out", required=True, help="where to write the prepared dataset")
    args = parser.parse_args(argv)
    try:
        prepare_corpus(Path(args.out), [Path(p) for p in args.voxceleb], Path(args.trials),
                       librispeech_dir=Path(args.librispeech) if args.librispeech else None,
                       val_speakers=args.val_speakers, val_trials_per_speaker=args.val_trials_per_speaker)  # fmt: skip
    except (DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Prepared {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
