"""The embedded default for OS-KDFT2: synthetic voices, generated deterministically from a seed.

Two corpora in one prepared dataset (trainables/speaker/data.py), at 16 kHz:

- **target domain ("VoxCeleb-like")**: training, validation and test speakers, disjoint. Speech
  in the wild: every speaker's utterances come from a few sessions (videos), each with its own
  microphone response, low cut, room reverberation (half the sessions) and coloured background
  noise, at 5–20 dB SNR; lively intonation.
- **out of domain ("LibriSpeech-like")**: other speakers, read speech: steadier pitch, one
  near-flat microphone per speaker with an MP3-like low-pass at 6.5–7.5 kHz, no reverberation,
  25–40 dB SNR.

A voice is a source–filter model. Every speaker has a sex, a mean pitch and pitch range, a
vocal-tract length (which scales all formants), their own realisation of every vowel (offsets
from a shared table of nine vowel formant triples), higher formants, formant bandwidths, spectral
tilt, breathiness, a fixed "timbre" curve and a speaking rate. An utterance is a random phoneme-like
sequence of vowels, nasals, fricatives and closures with smoothed (coarticulated) formant tracks
and a declining, wandering pitch contour; a glottal pulse train and aspiration/frication noise
are shaped frame by frame (32-ms Hann frames, 16-ms hop, overlap-added). The trial lists pair
held-out speakers' utterances: every same-speaker pair up to a number per speaker, and as many
pairs with another held-out speaker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainables.settings import FINITE, Rule, SettingError, Settings, seed_setting, setting
from trainables.speaker.data import SAMPLE_RATE, random_trials, write_prepared

_N_FFT = 512
_HOP = _N_FFT // 2  # a periodic Hann window at 50 % overlap sums to exactly 1, so overlap-add is transparent
_FREQS = np.fft.rfftfreq(_N_FFT, 1 / SAMPLE_RATE)
_LOGF = np.log2(np.maximum(_FREQS, 50.0) / 50.0)  # octaves above 50 Hz, 0 … 7.3
# F1, F2, F3 (Hz) of nine vowels for an average adult male vocal tract (Peterson & Barney-like).
_VOWELS = np.array([[270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410],
                    [730, 1090, 2440], [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240],
                    [520, 1190, 2390]], dtype=np.float64)  # fmt: skip
_NASAL = np.array([250.0, 1100.0, 2300.0])
_BANDWIDTHS = np.array([70.0, 90.0, 130.0, 180.0, 250.0])
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "ood": 4}


@dataclass(frozen=True)
class SyntheticSpeakerConfig(Settings):
    """Settings of the generator; the defaults make the embedded default (about 35 minutes of audio, 66 MB).

    Counts are speakers and utterances per speaker; durations in seconds; levels in dB.
    """

    # A trial list pairs two utterances of a speaker and two speakers' utterances, so held-out speakers come two at
    # a time and say two things each.
    seed: int = seed_setting()
    train_speakers: int = setting(48, low=2)  # target-domain training speakers (the classes of the speaker loss)
    train_utterances: int = setting(8, low=1)
    val_speakers: int = setting(12, rule=Rule(low=0, predicate=lambda n: n != 1, means="must be 0 (no validation "
                                             "trials) or at least 2"))  # held out, for the validation trial list
    val_utterances: int = setting(5, low=2)
    test_speakers: int = setting(16, low=2)  # held out, for the test trial list
    test_utterances: int = setting(6, low=2)
    ood_speakers: int = setting(40, low=1)  # out-of-domain ("LibriSpeech-like") speakers: the distillation draws
    # from them, and the default teacher learns from them
    ood_utterances: int = setting(6, low=1)
    min_seconds: float = setting(2.0, low=0.0, low_open=True)  # utterance duration, uniform in [min_seconds,
    # max_seconds]
    max_seconds: float = setting(3.5, low=0.0, low_open=True)
    sessions_per_speaker: int = setting(3, low=1)  # target-domain recording sessions (channels) per speaker
    trials_per_speaker: int = setting(15, low=1)  # same-speaker trials per held-out speaker (plus as many
    # different-speaker)
    # Signal-to-noise ratios in dB, each drawn uniformly from [low, high]: any finite number means something
    target_snr_low: float = setting(5.0, rule=FINITE)
    target_snr_high: float = setting(20.0, rule=FINITE)
    ood_snr_low: float = setting(25.0, rule=FINITE)
    ood_snr_high: float = setting(40.0, rule=FINITE)
    reverb_share: float = setting(0.5, low=0.0, high=1.0)  # share of target-domain sessions recorded in a reverberant
    # room

    def __post_init__(self) -> None:
        super().__post_init__()
        for low, high in (("min_seconds", "max_seconds"), ("target_snr_low", "target_snr_high"),
                          ("ood_snr_low", "ood_snr_high")):  # fmt: skip
            if getattr(self, low) > getattr(self, high):
                raise SettingError(high, f"{getattr(self, high)} must be at least {low} ({getattr(self, low)})")

    def fingerprint(self) -> str:
        text = json.dumps({"generator": "synthetic_speakers/1", **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate(config: SyntheticSpeakerConfig, directory: Path) -> None:
    """Write the synthetic corpus described by `config` as a prepared speaker dataset into `directory`."""
    entries: list[tuple[str, str, str, str, int]] = []
    waves: list[np.ndarray] = []
    held_out: dict[str, list[tuple[str, str]]] = {"val": [], "test": []}
    groups = (("train", config.train_speakers, config.train_utterances),
              ("val", config.val_speakers, config.val_utterances),
              ("test", config.test_speakers, config.test_utterances),
              ("ood", config.ood_speakers, config.ood_utterances))  # fmt: skip
    for split, n_speakers, n_utterances in groups:
        code = _SPLIT_CODES[split]
        for s in range(n_speakers):
            voice = _Voice(_rng(config.seed, code, s, 0), read_speech=split == "ood")
            if split == "ood":
                speaker = f"ls{s:04d}"
                mic = _Channel.ood(_rng(config.seed, code, s, 1))
                channels = [mic]
            else:
                speaker = f"id{code}{s:04d}"
                channels = [_Channel.target(_rng(config.seed, code, s, 1, k), config.reverb_share)
                            for k in range(config.sessions_per_speaker)]  # fmt: skip
            for u in range(n_utterances):
                rng = _rng(config.seed, code, s, 2, u)
                seconds = rng.uniform(config.min_seconds, config.max_seconds)
                session = u % len(channels)
                if split == "ood":
                    name = f"librispeech/{speaker}/{s:03d}/{speaker}-{u:04d}.flac"
                    snr = rng.uniform(config.ood_snr_low, config.ood_snr_high)
                else:
                    name = f"{speaker}/session{session}/{u:05d}.wav"
                    snr = rng.uniform(config.target_snr_low, config.target_snr_high)
                wave = channels[session].record(voice.speak(seconds, rng), snr, rng)
                domain = "ood" if split == "ood" else "target"
                entries.append((name, speaker, domain, "train" if split == "ood" else split, len(wave)))
                waves.append(wave)
                if split in held_out:
                    held_out[split].append((name, speaker))
    trials = {split: random_trials(utts, config.trials_per_speaker, _rng(config.seed, 9, _SPLIT_CODES[split]))
              for split, utts in held_out.items() if len(utts)}  # fmt: skip
    write_prepared(Path(directory), entries, lambda i: waves[i], trials, config.fingerprint(),
                   source=f"synthetic:{json.dumps(asdict(config))}")  # fmt: skip


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _smooth_db(rng: np.random.Generator, bumps: int, std_db: float) -> np.ndarray:
    """A smooth random dB curve over the FFT bins: Gaussian bumps in log frequency plus a tilt."""
    curve = rng.normal(0, std_db / 4) * (_LOGF - 3.5)
    for _ in range(bumps):
        centre, width = rng.uniform(0.5, 7.0), rng.uniform(0.3, 1.0)
        curve += rng.normal(0, std_db) * np.exp(-0.5 * ((_LOGF - centre) / width) ** 2)
    return curve


def _smooth(x: np.ndarray, frames: int) -> np.ndarray:
    """Moving average along axis 0 (edges held), `frames` wide."""
    kernel = np.ones(frames) / frames
    pad = [(frames // 2, frames - 1 - frames // 2)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x, pad, mode="edge")
    if x.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(x.shape[1])], axis=1)


class _Voice:
    """One speaker's fixed vocal properties; `speak` makes a dry utterance."""

    def __init__(self, rng: np.random.Generator, read_speech: bool):
        female = rng.random() < 0.5
        self.f0 = 2 ** rng.normal(np.log2(205.0 if female else 115.0), 0.15)  # mean pitch, Hz
        self.f0_range = rng.uniform(1.0, 2.5) if read_speech else rng.uniform(2.0, 4.0)  # semitones (std)
        alpha = rng.normal(1.16 if female else 1.0, 0.05)  # vocal-tract scale: shorter tract, higher formants
        self.vowels = _VOWELS * alpha * (1 + rng.normal(0, 0.06, _VOWELS.shape))
        self.nasal = _NASAL * alpha * (1 + rng.normal(0, 0.05, 3))
        self.high = alpha * np.array([rng.uniform(3200, 3700), rng.uniform(4200, 4900)])  # F4, F5
        self.bandwidths = _BANDWIDTHS * rng.uniform(0.7, 1.4)
        self.tilt_db = rng.uniform(-9.0, -3.0)  # source slope, dB per octave
        self.breath = 10 ** (rng.uniform(-32, -18) / 20)  # aspiration noise relative to the pulses
        self.timbre_db = _smooth_db(rng, 3, 3.0)
        self.fricative_centre = alpha * rng.uniform(4000, 6000)  # Hz, of the sibilant noise band
        self.rate = rng.uniform(0.8, 1.25) * (1.15 if read_speech else 1.0)  # segment-duration factor
        self.source = 10 ** ((self.tilt_db * _LOGF + self.timbre_db) / 20)

    def speak(self, seconds: float, rng: np.random.Generator) -> np.ndarray:
        n = int(seconds * SAMPLE_RATE)
        frames = n // _HOP + 2
        formants, voicing, frication = self._segments(frames, rng)
        formants = _smooth(formants, 5)  # ~80 ms of coarticulation
        voicing, frication = _smooth(voicing, 3), _smooth(frication, 3)

        # Pitch: a declination of about 2 semitones plus a smoothed random walk, per frame.
        walk = _smooth(np.cumsum(rng.normal(0, 0.6, frames)), 9)
        semitones = self.f0_range * (walk - walk.mean()) / (walk.std() + 1e-9) - np.linspace(0, 2, frames)
        centres = np.arange(frames) * _HOP + _N_FFT // 2
        length = (frames - 1) * _HOP + _N_FFT
        f0 = np.interp(np.arange(length), centres, self.f0 * 2 ** (semitones / 12))
        phase = np.cumsum(f0 / SAMPLE_RATE) + rng.random()
        pulses = np.diff(np.floor(phase), prepend=np.floor(phase[0])) * np.sqrt(SAMPLE_RATE / f0)
        noise = rng.standard_normal(length)

        # Frame-wise filtering: every frame's spectrum times that frame's vocal-tract envelope.
        index = np.arange(frames)[:, None] * _HOP + np.arange(_N_FFT)[None, :]
        window = np.hanning(_N_FFT + 1)[:-1]
        pulse_spec = np.fft.rfft(pulses[index] * window, axis=1)
        noise_spec = np.fft.rfft(noise[index] * window, axis=1)
        tract = self._tract(formants)
        sibilant = np.exp(-0.5 * ((_FREQS - self.fricative_centre) / (0.35 * self.fricative_centre)) ** 2)
        spectrum = (pulse_spec * voicing[:, None] + noise_spec * self.breath * voicing[:, None]) * tract * self.source
        # Frication about 12 dB below the vowels, as sibilants are in real speech.
        spectrum += noise_spec * frication[:, None] * (0.05 * sibilant + 0.008) * 10 ** (self.timbre_db / 20)
        pieces = np.fft.irfft(spectrum, n=_N_FFT, axis=1)
        out = np.zeros(length + _N_FFT)
        even, odd = pieces[0::2].reshape(-1), pieces[1::2].reshape(-1)
        out[: len(even)] += even
        out[_HOP : _HOP + len(odd)] += odd
        return out[_HOP : _HOP + n]

    def _segments(self, frames: int, rng: np.random.Generator):
        """Per-frame formant targets [frames, 5], voicing and frication amplitudes of a syllable sequence.

        A syllable is an optional onset (fricative, nasal, or stop: a closure and a short burst) and
        a vowel; now and then a pause follows. Durations in ms, scaled by the speaker's rate.
        """
        formants = np.empty((frames, 5))
        formants[:, 3:] = self.high
        voicing, frication = np.zeros(frames), np.zeros(frames)
        vowel = self.vowels[int(rng.integers(len(self.vowels)))]
        t = 0

        def span(ms: float) -> int:
            return max(1, int(round(ms * self.rate / 1000 * SAMPLE_RATE / _HOP)))

        while t < frames:
            onset = rng.choice(4, p=[0.25, 0.3, 0.2, 0.25])  # none, fricative, nasal, stop
            if onset == 1:
                end = min(frames, t + span(rng.uniform(60, 140)))
                frication[t:end] = rng.uniform(0.5, 1.0)
                voicing[t:end] = 0.12 if rng.random() < 0.3 else 0.0  # voiced fricatives, sometimes
                formants[t:end, :3] = vowel
                t = end
            elif onset == 2:
                end = min(frames, t + span(rng.uniform(40, 90)))
                voicing[t:end] = rng.uniform(0.3, 0.5)
                formants[t:end, :3] = self.nasal
                t = end
            elif onset == 3:
                end = min(frames, t + span(rng.uniform(30, 70)))  # closure: silence
                formants[t:end, :3] = vowel
                burst = min(frames, end + 1)
                frication[end:burst] = rng.uniform(0.6, 1.0)
                formants[end:burst, :3] = vowel
                t = burst
            vowel = self.vowels[int(rng.integers(len(self.vowels)))]
            end = min(frames, t + span(rng.uniform(70, 190)))
            voicing[t:end] = rng.uniform(0.7, 1.0)
            formants[t:end, :3] = vowel
            t = end
            if rng.random() < 0.12:  # a pause between words
                end = min(frames, t + span(rng.uniform(120, 300)))
                formants[t:end, :3] = vowel
                t = end
        return formants, voicing, frication

    def _tract(self, formants: np.ndarray) -> np.ndarray:
        """|H(f)| of five second-order resonances per frame, unit gain at 0 Hz: [frames, bins]."""
        f = _FREQS.astype(np.float32)[None, :]
        squared = np.ones((len(formants), len(_FREQS)), dtype=np.float32)
        for k in range(formants.shape[1]):  # |H|² of the cascade, one square root at the end
            fk = formants[:, k, None].astype(np.float32)
            squared *= (1 - (f / fk) ** 2) ** 2 + (f * np.float32(self.bandwidths[k]) / fk**2) ** 2
        return 1.0 / np.sqrt(squared)


class _Channel:
    """A recording condition: microphone response, optional room, background noise colour."""

    def __init__(self, response_db: np.ndarray, room: np.ndarray | None, noise_db: np.ndarray, babble: bool):
        self.response = 10 ** (response_db / 20)
        self.room = room
        self.noise = 10 ** (noise_db / 20)
        self.babble = babble

    @classmethod
    def target(cls, rng: np.random.Generator, reverb_share: float) -> _Channel:
        low_cut = rng.uniform(80, 250)
        response = _smooth_db(rng, 4, 4.0) + 20 * np.log10(1 / np.sqrt(1 + (low_cut / np.maximum(_FREQS, 1.0)) ** 4))
        room = None
        if rng.random() < reverb_share:
            rt60 = rng.uniform(0.2, 0.7)
            t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
            room = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 10 ** (rng.uniform(-18, -8) / 20)
            room[0] = 1.0  # the direct sound
        return cls(response, room, _smooth_db(rng, 3, 6.0) + rng.uniform(-4, -1) * _LOGF, babble=rng.random() < 0.5)

    @classmethod
    def ood(cls, rng: np.random.Generator) -> _Channel:
        cutoff = rng.uniform(6500, 7500)  # MP3-era audiobook recordings
        response = _smooth_db(rng, 2, 1.5) - 60 * np.clip((_FREQS - cutoff) / 1000, 0, None)
        return cls(response, None, _smooth_db(rng, 2, 2.0), babble=False)

    def record(self, speech: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
        n = len(speech)
        size = _fast_size(n + (0 if self.room is None else len(self.room)))
        freqs = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
        spectrum = np.fft.rfft(speech, size)
        if self.room is not None:
            spectrum *= np.fft.rfft(self.room, size)
        wave = np.fft.irfft(spectrum * np.interp(freqs, _FREQS, self.response), size)[:n]
        # Coloured noise straight from a random spectrum (white noise's spectrum is complex Gaussian).
        white = rng.standard_normal((2, len(freqs)))
        noise = np.fft.irfft((white[0] + 1j * white[1]) * np.interp(freqs, _FREQS, self.noise), size)[:n]
        if self.babble:  # crowd-like: the noise swells and fades a few times a second
            t = np.arange(n) / SAMPLE_RATE
            noise *= 1 + 0.6 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 2 * np.pi))
        speech_power, noise_power = np.mean(wave**2) + 1e-12, np.mean(noise**2) + 1e-12
        wave = wave + noise * np.sqrt(speech_power / noise_power * 10 ** (-snr_db / 10))
        level = 10 ** (rng.uniform(-26, -16) / 20)  # RMS level, dBFS
        return np.clip(wave * level / (np.sqrt(np.mean(wave**2)) + 1e-12), -1.0, 1.0)


def _fast_size(n: int) -> int:
    """The smallest 2^a · 3^b · 5^c ≥ n: FFT lengths that are fast without padding to a power of two."""
    best = 1 << int(np.ceil(np.log2(n)))
    threes = 1
    while threes < best:
        fives = threes
        while fives < best:
            size = fives << max(0, int(np.ceil(np.log2(n / fives))))
            best = min(best, size)
            fives *= 5
        threes *= 3
    return best
