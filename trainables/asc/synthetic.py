"""The embedded default: a synthetic acoustic-scene dataset shaped like TAU22 Mobile.

Generated deterministically from a seed, with no files or downloads needed:
- the 10 TAU22 scene classes; 1-s clips at 32 kHz cut from 10-s segments (10 clips per segment),
  named like TAU22: audio/<scene>-<city>-<location>-<segment>-<k>-<device>.wav;
- a scene is a mix of three sound events from a bank shared with the teacher's pretraining corpus
  (an event: a spectral envelope, an amplitude modulation and a rate of tonal blips); scenes sharing
  a base share two of their events, so some are easily confused;
- every recording location perturbs its scene's envelope, and every city adds its own background,
  so a model must generalise across locations;
- devices a, b, c, s1–s6 each have their own smooth frequency response and noise floor, the
  simulated s-devices stronger than the real ones; s4–s6 occur only in the val and test splits;
- the training pool is 73 % device a (as TAU22), with nested subsets 5/10/25/50/100 % made of whole
  segments, each inside the next, with scenes balanced;
- val and test have every device for every segment and locations not in training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.asc.data import SUBSETS, write_prepared
from trainables.settings import FINITE, Settings, seed_setting, setting

CLASSES = [
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
]  # fmt: skip
CITIES = ["barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna"]
TRAIN_DEVICES_EXTRA = ["b", "c", "s1", "s2", "s3"]
ALL_DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
# Scenes that share a base envelope, and so are the hard confusions (as in TAU22's tram/metro/bus).
_SHARED_BASE = {"bus": "tram", "metro": "tram", "metro_station": "airport", "shopping_mall": "airport",
                "street_pedestrian": "public_square", "street_traffic": "public_square"}  # fmt: skip
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
N_EVENTS = 20  # sound events of the shared bank: the pretraining corpus's classes; TAU22's scenes use 18 of them
_EVENT_STREAM = 20_000_000  # the bank's random stream, independent of every seed


@dataclass(frozen=True)
class SyntheticConfig(Settings):
    """Settings of the generator; the defaults make the embedded default dataset.

    Sizes are in 10-s segments; levels in dB.
    """

    # Every count is at least 1: a count of 0 makes a split empty, and a run on it trains on nothing or ranks on NaN.
    seed: int = seed_setting()
    sample_rate: int = setting(32000, low=8000)
    train_segments_per_class: int = setting(16, low=1)  # device-a segments per scene in the 100 % pool
    extra_device_share: float = setting(0.37, low=0.0, high=1.0)  # chance a training segment is also recorded by one of
    # b, c, s1–s3
    val_segments_per_class: int = setting(1, low=1)  # each recorded by all 9 devices
    test_segments_per_class: int = setting(2, low=1)  # each recorded by all 9 devices
    held_out_clips_per_segment: int = setting(10, low=1, high=10)  # val/test keep the first k clips of a segment
    # (fewer: faster tests)
    locations_per_class: int = setting(6, low=1)  # training locations per scene
    # Standard deviations (of random dB curves and levels) are not negative; a level relative to another (an SNR, a
    # noise floor) means something at any finite number of dB.
    class_spread_db: float = setting(2.0, low=0.0)  # a scene's own colouring beyond the events it is made of
    location_jitter_db: float = setting(3.0, low=0.0)  # per-location perturbation of a scene's envelope
    event_level_db: float = setting(2.0, low=0.0)  # std of each event's level in one recording: the mix varies, its
    # events stay
    background_snr_db: float = setting(3.0, rule=FINITE)  # scene level over its city's background
    real_device_db: float = setting(3.0, low=0.0)  # std of the frequency response of devices b and c (a gets a third)
    simulated_device_db: float = setting(5.0, low=0.0)  # std of s1–s3's response; s4–s6 get 1.5 times this
    noise_floor_db: float = setting(-35.0, rule=FINITE)  # device noise floor relative to the signal (s-devices 5 dB
    # higher)

    def fingerprint(self) -> str:
        text = json.dumps({"generator": "synthetic_asc/3", **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate(config: SyntheticConfig, directory: Path) -> None:
    """Write the synthetic dataset described by `config` as a prepared dataset into `directory`."""
    world = _World(config)
    rows: list[dict] = []
    clips: list[np.ndarray] = []
    splits: dict[str, list[str]] = {}
    pool_segments: dict[int, list[list[str]]] = {c: [] for c in range(len(CLASSES))}

    for split, per_class in (("train", config.train_segments_per_class), ("val", config.val_segments_per_class),
                             ("test", config.test_segments_per_class)):  # fmt: skip
        split_files: list[str] = []
        for c, scene in enumerate(CLASSES):
            for s in range(per_class):
                rng = _rng(config.seed, _SPLIT_CODES[split], c, s)
                city = CITIES[int(rng.integers(len(CITIES)))]
                if split == "train":
                    location = int(rng.integers(config.locations_per_class))
                    devices = ["a"]
                    if rng.random() < config.extra_device_share:
                        devices.append(TRAIN_DEVICES_EXTRA[int(rng.integers(len(TRAIN_DEVICES_EXTRA)))])
                else:  # held-out locations: ids after the training ones
                    location = config.locations_per_class + _SPLIT_CODES[split] * 1000 + s
                    devices = ALL_DEVICES
                location_id = 1000 + c * 100000 + location
                segment_id = _SPLIT_CODES[split] * 100000 + c * 1000 + s
                scene_signal = world.scene_spectrum(c, city, location_id, rng)
                for device in devices:
                    audio = world.record(scene_signal, device, rng)
                    names = []
                    for k in range(10 if split == "train" else config.held_out_clips_per_segment):
                        name = f"audio/{scene}-{city}-{location_id}-{segment_id}-{k}-{device}.wav"
                        names.append(name)
                        rows.append({"filename": name, "scene_label": scene,
                                     "identifier": f"{city}-{location_id}", "source_label": device})  # fmt: skip
                        clips.append(_pcm16(audio[k * config.sample_rate:(k + 1) * config.sample_rate]))
                    split_files += names
                    if split == "train":
                        pool_segments[c].append(names)
        splits[split] = split_files

    out = {"val": splits["val"], "test": splits["test"]}
    out.update(nested_subsets(pool_segments, _rng(config.seed, 9)))
    write_prepared(
        Path(directory), pd.DataFrame(rows), np.stack(clips), out,
        config.sample_rate, CLASSES, config.fingerprint(), source=f"synthetic:{json.dumps(asdict(config))}",
    )  # fmt: skip


@dataclass(frozen=True)
class PretrainingConfig(Settings):
    """The stand-in for AudioSet: the bank's sound events as classes, recorded by a pool of many devices.

    A PaSST teacher pretrained on it learns the events TAU22's scenes are made of, and that a device's
    colouring is not part of a sound, the way the real one learns both from AudioSet; none of its
    recordings or devices is TAU22's.
    """

    seed: int = seed_setting()
    segments_per_class: int = setting(12, low=1)  # 10-s recordings per event, each by one random device of the pool
    devices: int = setting(24, low=1)
    val_segments_per_class: int = setting(1, low=1)

    def fingerprint(self) -> str:
        text = json.dumps({"generator": "synthetic_pretraining/3", **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate_pretraining(config: PretrainingConfig, directory: Path) -> None:
    """Write the pretraining world as a prepared dataset (train = split100, and val)."""
    classes = [f"event{i:02d}" for i in range(N_EVENTS)]
    devices = [f"p{i:02d}" for i in range(config.devices)]
    world = _World(SyntheticConfig(seed=config.seed), classes, devices, stream=10_000, sound_events=True)
    rows, clips, splits = [], [], {"split100": [], "val": []}
    for split, per_class in (("split100", config.segments_per_class), ("val", config.val_segments_per_class)):
        for c, name in enumerate(classes):
            for s in range(per_class):
                rng = _rng(config.seed, 10_000 + _SPLIT_CODES["val" if split == "val" else "train"], c, s)
                city = CITIES[int(rng.integers(len(CITIES)))]
                device = devices[int(rng.integers(len(devices)))]
                location_id = 1000 + c * 100000 + (s if split == "val" else 500 + s)
                audio = world.record(world.scene_spectrum(c, city, location_id, rng), device, rng)
                for k in range(10):
                    filename = f"audio/{name}-{city}-{location_id}-{c * 1000 + s}-{k}-{device}.wav"
                    rows.append({"filename": filename, "scene_label": name, "identifier": f"{city}-{location_id}",
                                 "source_label": device})  # fmt: skip
                    clips.append(_pcm16(audio[k * 32000 : (k + 1) * 32000]))
                    splits[split].append(filename)
    write_prepared(Path(directory), pd.DataFrame(rows), np.stack(clips), splits, 32000, classes,
                   config.fingerprint(), source=f"synthetic-pretraining:{json.dumps(asdict(config))}")  # fmt: skip


def nested_subsets(segments_by_class: dict[int, list[list[str]]], rng: np.random.Generator) -> dict[str, list[str]]:
    """Nested subsets 5 ⊂ 10 ⊂ 25 ⊂ 50 ⊂ 100 % of whole segments, each scene taking its own share.

    Every class's segments are put in one random order; subset p % takes the first ceil(p/100 · n)
    of them (at least one), so each subset is inside the next and scenes stay balanced.
    """
    order = {c: rng.permutation(len(segs)) for c, segs in segments_by_class.items()}
    subsets = {}
    for percent in SUBSETS:
        files: list[str] = []
        for c, segs in segments_by_class.items():
            take = max(1, int(np.ceil(percent / 100 * len(segs))))
            for i in order[c][:take]:
                files += segs[i]
        subsets[f"split{percent}"] = files
    return subsets


def _pcm16(audio: np.ndarray) -> np.ndarray:
    # Each clip is quantised as soon as it is cut: a float64 copy of a whole large dataset (20,000 clips:
    # 5 GB, three times over while clipping and scaling) would not fit in memory.
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


class _World:
    """The fixed properties of a synthetic world: sound classes, locations, cities and devices.

    Every world draws its sounds from one bank of sound events (`N_EVENTS`, the same in every world and
    for every seed, as the sounds of the real world are): an event is a spectral envelope, an amplitude
    modulation and a rate of tonal blips. A TAU22 scene is a mix of events: scenes that share a base
    (_SHARED_BASE) share two of them and differ by a third, so they are the hard confusions. The
    pretraining world (`sound_events`) has the events themselves as its classes, each clip one event
    over quieter others, recorded by a pool of devices (`devices`) none of which is a TAU22 device:
    what a teacher learns there (the events, and that a device's colouring is not the event) is what
    the scenes are made of, as AudioSet's sounds are what TAU22's scenes are made of. Other worlds
    (`devices` given, e.g. the CochlScene stand-in of the tests) mix three random events per class.
    """

    def __init__(self, config: SyntheticConfig, classes: list[str] = CLASSES, devices: list[str] | None = None,
                 stream: int = 0, sound_events: bool = False, seconds: int = 10):  # fmt: skip
        self.config = config
        self.sound_events = sound_events
        self.samples = seconds * config.sample_rate  # a recording: TAU22's 10-s segment unless told shorter
        self.freqs = np.fft.rfftfreq(self.samples, 1 / config.sample_rate)
        self.logf = np.log2(np.maximum(self.freqs, 20.0) / 20.0)  # 0 … ~9.6 octaves above 20 Hz
        bank = _rng(_EVENT_STREAM)  # not the seed: every dataset and corpus hears the same sounds
        self.event_envelopes = [self._random_envelope(bank, 3, 12.0) for _ in range(N_EVENTS)]
        self.event_modulation = [(bank.uniform(0.2, 6.0), bank.uniform(0.1, 0.6)) for _ in range(N_EVENTS)]  # Hz, depth
        self.event_tones = [(bank.uniform(0.2, 3.0), bank.uniform(300, 6000)) for _ in range(N_EVENTS)]  # per s, Hz
        rng = _rng(config.seed, stream)
        order = [int(e) for e in rng.permutation(N_EVENTS)]
        if sound_events:
            self.recipes = [[(c, 0.0)] for c in range(len(classes))]
        elif devices is None:
            bases = sorted({_SHARED_BASE.get(scene, scene) for scene in classes})
            base_events = {base: order[2 * i : 2 * i + 2] for i, base in enumerate(bases)}
            own = order[2 * len(bases) :]
            self.recipes = [[(e, rng.uniform(-6.0, 0.0)) for e in base_events[_SHARED_BASE.get(scene, scene)]]
                            + [(own[c], rng.uniform(-2.0, 0.0))] for c, scene in enumerate(classes)]  # fmt: skip
        else:
            self.recipes = [[(int(e), rng.uniform(-6.0, 0.0)) for e in rng.choice(N_EVENTS, 3, replace=False)]
                            for _ in classes]  # fmt: skip
        self.class_colour = [self._random_envelope(rng, 2, config.class_spread_db) for _ in classes]
        self.city_background = {city: self._random_envelope(rng, 3, 8.0) for city in CITIES}
        self.device_response = {}
        if devices is not None:
            for device in devices:
                response = self._random_envelope(rng, 5, rng.uniform(1.0, 1.5 * config.simulated_device_db), (0.5, 1.5))
                if rng.random() < 0.3:
                    response -= 12.0 * np.clip(1.0 - self.logf / rng.uniform(2.5, 4.0), 0, None)
                self.device_response[device] = response
            self.noise_floor = {d: config.noise_floor_db + rng.uniform(0, 5) for d in devices}
            return
        for device in ALL_DEVICES:
            if device == "a":
                std = config.real_device_db / 3
            elif device in ("b", "c"):
                std = config.real_device_db
            elif device in ("s1", "s2", "s3"):
                std = config.simulated_device_db
            else:
                std = 1.5 * config.simulated_device_db
            response = self._random_envelope(rng, 5, std, width=(0.5, 1.5))
            if device in ("s4", "s5", "s6"):  # small phone-like transducers: weak lows
                response -= 12.0 * np.clip(1.0 - self.logf / rng.uniform(2.5, 4.0), 0, None)
            self.device_response[device] = response
        self.noise_floor = {d: config.noise_floor_db + (5.0 if d.startswith("s") else 0.0) for d in ALL_DEVICES}

    def _random_envelope(self, rng: np.random.Generator, bumps: int, gain_db: float, width=(0.4, 1.2)) -> np.ndarray:
        """A smooth dB curve over frequency: Gaussian bumps in log-frequency plus a tilt."""
        env = rng.normal(0, gain_db / 4) * (self.logf - 5.0)
        for _ in range(bumps):
            centre, w = rng.uniform(0.5, 9.5), rng.uniform(*width)
            env += rng.normal(0, gain_db) * np.exp(-0.5 * ((self.logf - centre) / w) ** 2)
        return env

    def _event(self, event: int, colour_db: np.ndarray, rate_scale: float, rng: np.random.Generator) -> np.ndarray:
        """One recording's length of one sound event, unit power: shaped noise, modulated, with its tonal blips."""
        noise = np.fft.rfft(rng.standard_normal(self.samples))
        sound = np.fft.irfft(noise * 10 ** ((self.event_envelopes[event] + colour_db) / 20), n=self.samples)
        t = np.arange(self.samples) / self.config.sample_rate
        rate, depth = self.event_modulation[event]
        sound *= 1 + depth * np.sin(2 * np.pi * rate * rate_scale * t + rng.uniform(0, 2 * np.pi))
        tone_rate, centre = self.event_tones[event]
        blip_level = 2.0 * sound.std()  # once: over 320,000 samples for every blip, it was a fifth of the generation
        for _ in range(rng.poisson(tone_rate * self.samples / self.config.sample_rate)):
            start, length = int(rng.integers(self.samples)), int(rng.uniform(0.05, 0.4) * self.config.sample_rate)
            freq = centre * 2 ** rng.normal(0, 0.3)
            piece = np.sin(2 * np.pi * freq * np.arange(length) / self.config.sample_rate) * np.hanning(length)
            end = min(self.samples, start + length)
            sound[start:end] += blip_level * piece[: end - start]
        return sound / (sound.std() + 1e-9)

    def scene_spectrum(self, c: int, city: str, location_id: int, rng: np.random.Generator) -> np.ndarray:
        """The complex spectrum of one recording of class `c`, before any device."""
        loc_rng = _rng(self.config.seed, 7, location_id)
        colour = self.class_colour[c] + self._random_envelope(loc_rng, 3, self.config.location_jitter_db)
        recipe = list(self.recipes[c])
        if self.sound_events:  # a corpus clip is rarely one sound alone: others, quieter, around it
            other = next(int(e) for e in rng.permutation(N_EVENTS) if e != c)
            recipe.append((other, rng.uniform(-16.0, -10.0)))
        rate_scale = loc_rng.uniform(0.8, 1.25)
        levels = [gain + rng.normal(0, self.config.event_level_db) for _, gain in recipe]
        scene = sum(10 ** (level / 20) * self._event(e, colour, rate_scale, rng) for (e, _), level in zip(recipe, levels))
        scene /= scene.std() + 1e-9
        background = np.fft.irfft(np.fft.rfft(rng.standard_normal(self.samples)) *
                                  10 ** (self.city_background[city] / 20), n=self.samples)  # fmt: skip
        background /= background.std() + 1e-9
        mix = scene * 10 ** (self.config.background_snr_db / 20) + background
        return np.fft.rfft(mix / mix.std() * 10 ** (rng.uniform(-6, 6) / 20))

    def record(self, spectrum: np.ndarray, device: str, rng: np.random.Generator) -> np.ndarray:
        """What `device` records of a scene: its frequency response and its noise floor, at about −20 dBFS."""
        audio = np.fft.irfft(spectrum * 10 ** (self.device_response[device] / 20), n=self.samples)
        level = audio.std()
        audio += rng.standard_normal(self.samples) * level * 10 ** (self.noise_floor[device] / 20)
        return audio * 0.1 / (level + 1e-9) * 10 ** (rng.uniform(-3, 3) / 20)
