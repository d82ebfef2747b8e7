import re
from collections import Counter

import numpy as np

from tests.conftest import TINY
from trainables.asc.data import SUBSETS, load_prepared
from trainables.asc.synthetic import CLASSES, N_EVENTS, SyntheticConfig, _World, generate

NAME = re.compile(r"^audio/([a-z_]+)-([a-z]+)-(\d+)-(\d+)-(\d)-(a|b|c|s[1-6])\.wav$")


def _segment(name: str) -> str:
    return name.rsplit("-", 2)[0] + "-" + name.rsplit("-", 1)[1]  # drop the clip index k


def test_generation_is_deterministic(tiny_data, tmp_path):
    generate(TINY, tmp_path / "again")
    again = load_prepared(tmp_path / "again")
    assert again.filenames == tiny_data.filenames
    assert np.array_equal(np.asarray(again.clips), np.asarray(tiny_data.clips))
    assert again.fingerprint == tiny_data.fingerprint
    other = SyntheticConfig(**{**TINY.__dict__, "seed": TINY.seed + 1})
    assert other.fingerprint() != TINY.fingerprint()


def test_layout_is_tau22_like(tiny_data):
    assert tiny_data.classes == CLASSES
    assert tiny_data.clips.shape[1] == 32000 and tiny_data.clips.dtype == np.int16
    for name in tiny_data.filenames:
        assert NAME.match(name), name
    pool = [tiny_data.filenames[i] for i in tiny_data.splits["split100"]]
    assert set(Counter(_segment(n) for n in pool).values()) == {10}, "training segments are 10 clips"


def test_subsets_are_nested_whole_segments_and_balanced(tiny_data):
    previous = set()
    for percent in SUBSETS:
        files = {tiny_data.filenames[i] for i in tiny_data.splits[f"split{percent}"]}
        assert previous <= files, f"split{percent} does not contain the smaller subset"
        previous = files
        per_segment = Counter(_segment(f) for f in files)
        assert set(per_segment.values()) == {10}, "a subset holds part of a segment"
        per_class = Counter(NAME.match(f).group(1) for f in files)
        assert set(per_class) == set(CLASSES)
    full = tiny_data.splits["split100"]
    assert set(tiny_data.devices[full]) <= {"a", "b", "c", "s1", "s2", "s3"}
    assert Counter(tiny_data.devices[full])["a"] / len(full) > 0.6


def test_unseen_devices_only_in_val_and_test(tiny_data):
    for split in ("val", "test"):
        devices = Counter(tiny_data.devices[tiny_data.splits[split]])
        assert set(devices) == {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}
        assert len(set(devices.values())) == 1, "every device equally often"
    train_locations = {tiny_data.filenames[i].split("-")[2] for i in tiny_data.splits["split100"]}
    test_locations = {tiny_data.filenames[i].split("-")[2] for i in tiny_data.splits["test"]}
    assert not train_locations & test_locations


def test_devices_change_the_audio(tiny_data):
    """The same segment recorded by two devices differs, but only by the device (highly correlated)."""
    test = tiny_data.splits["test"]
    by_name = {tiny_data.filenames[i]: i for i in test}
    name_a = next(n for n in by_name if n.endswith("-a.wav"))
    name_s5 = name_a[: -len("a.wav")] + "s5.wav"
    a = tiny_data.clips[by_name[name_a]].astype(float)
    s5 = tiny_data.clips[by_name[name_s5]].astype(float)
    assert not np.allclose(a, s5)
    spectrum_a = np.abs(np.fft.rfft(a))
    spectrum_s5 = np.abs(np.fft.rfft(s5))
    assert np.corrcoef(np.log(spectrum_a + 1), np.log(spectrum_s5 + 1))[0, 1] > 0.5


def test_scenes_are_made_of_the_pretraining_corpus_events():
    """The teacher's pretraining corpus (the AudioSet stand-in) and the scenes share one bank of sound events,
    whatever the seeds: the pretrained teacher knows what the scenes are made of, as on real data."""
    scenes = _World(SyntheticConfig(seed=1))
    corpus = _World(SyntheticConfig(seed=0), [f"event{i:02d}" for i in range(N_EVENTS)], ["p00", "p01"],
                    stream=10_000, sound_events=True)  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(scenes.event_envelopes, corpus.event_envelopes))
    assert [r[0][0] for r in corpus.recipes] == list(range(N_EVENTS)), "each corpus class is one event"
    events = {scene: {e for e, _ in recipe} for scene, recipe in zip(CLASSES, scenes.recipes)}
    assert all(len(e) == 3 for e in events.values())
    assert len(events["bus"] & events["tram"]) == 2 and len(events["bus"] & events["park"]) == 0
    assert len(set.union(*events.values())) == 18 <= N_EVENTS
