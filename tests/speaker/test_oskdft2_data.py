"""The prepared speaker-dataset format, the synthetic default and the VoxCeleb1 / LibriSpeech readers."""

import hashlib

import numpy as np
import pytest
import soundfile
import torch

from trainables.prepared import DatasetError
from trainables.speaker.data import load_prepared, prepare_corpus
from trainables.speaker.data import main as data_main
from trainables.speaker.synthetic import SyntheticSpeakerConfig, generate

TINY = SyntheticSpeakerConfig(seed=5, train_speakers=4, train_utterances=3, val_speakers=2, val_utterances=2,
                              test_speakers=3, test_utterances=3, ood_speakers=3, ood_utterances=2,
                              min_seconds=1.0, max_seconds=1.5, trials_per_speaker=2)  # fmt: skip


def _digest(directory):
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in ("audio.npy", "meta.csv", "trials/test.txt", "trials/val.txt", "dataset.json")}  # fmt: skip


def test_synthetic_corpus_is_deterministic_and_complete(tmp_path):
    generate(TINY, tmp_path / "a")
    generate(TINY, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate(SyntheticSpeakerConfig(**{**TINY.__dict__, "seed": 6}), tmp_path / "c")
    assert _digest(tmp_path / "c")["audio.npy"] != _digest(tmp_path / "a")["audio.npy"]

    data = load_prepared(tmp_path / "a")
    assert data.sample_rate == 16000 and data.fingerprint == TINY.fingerprint()
    assert len(data.rows("target", "train")) == 12 and len(data.rows("ood", "train")) == 6
    assert len(data.rows("target", "val")) == 4 and len(data.rows("target", "test")) == 9
    assert len(data.train_speakers) == 4 and set(data.labels[data.rows("target", "train")]) == {0, 1, 2, 3}
    assert (data.labels[data.rows("ood")] == -1).all()
    assert ((data.lengths >= 16000) & (data.lengths <= 24000)).all()
    # Held-out speakers are disjoint from training ones and from each other; trials stay within a split.
    groups = [set(data.speakers[data.rows(d, s)]) for d, s in (("target", "train"), ("target", "val"),
                                                                ("target", "test"), ("ood", "train"))]  # fmt: skip
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    for split in ("val", "test"):
        trials = data.trials[split]
        assert set(data.splits[trials.rows()]) == {split}
        same = data.speakers[trials.enroll] == data.speakers[trials.test]
        assert np.array_equal(same, trials.labels == 1) and trials.labels.sum() == (trials.labels == 0).sum() > 0
    wave = data.utterance(0)
    assert wave.dtype == torch.float32 and len(wave) == data.lengths[0]
    rms = wave.pow(2).mean().sqrt().item()
    assert 0.02 < rms < 0.2 and wave.abs().max() <= 1.0  # about −20 dBFS, not clipped flat


def test_voices_differ_between_speakers_more_than_within(tmp_path):
    """A crude check that the corpus carries speaker identity: long-term spectra cluster by speaker."""
    generate(TINY, tmp_path / "d")
    data = load_prepared(tmp_path / "d")
    rows = data.rows("target", "train")
    spectra = []
    for row in rows:
        wave = data.utterance(int(row))
        spec = torch.stft(wave, 512, window=torch.hann_window(512), return_complex=True).abs().pow(2).mean(1)
        spectra.append((spec + 1e-8).log())
    spectra = torch.stack(spectra)
    spectra = spectra - spectra.mean(0)
    distance = torch.cdist(spectra, spectra)
    same = torch.as_tensor(data.speakers[rows][:, None] == data.speakers[rows][None, :])
    off_diagonal = ~torch.eye(len(rows), dtype=torch.bool)
    assert distance[same & off_diagonal].mean() < distance[~same].mean()


def test_crops_are_random_windows_or_wrapped(tmp_path):
    generate(TINY, tmp_path / "e")
    data = load_prepared(tmp_path / "e")
    torch.manual_seed(0)
    crops = data.crops([0, 1, 0], 8000)
    assert crops.shape == (3, 8000)
    full = data.utterance(0).numpy()
    windows = np.lib.stride_tricks.sliding_window_view(full, 16)
    start = int(np.flatnonzero(np.all(windows == crops[0, :16].numpy(), axis=1))[0])
    assert np.array_equal(full[start : start + 8000], crops[0].numpy())
    long = data.crops([0], int(data.lengths[0]) + 100)[0].numpy()
    assert np.array_equal(long[: len(full)], full) and np.array_equal(long[len(full) :], full[:100])
    torch.manual_seed(0)
    assert torch.equal(data.crops([0, 1, 0], 8000), crops), "crops follow torch's generator"


def _write(path, samples, rate=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = (np.random.default_rng(seed).normal(0, 0.1, samples) * 32767).astype(np.int16)
    soundfile.write(str(path), wave, rate)
    return wave


def test_voxceleb_and_librispeech_readers(tmp_path):
    vox_dev, vox_test, libri = tmp_path / "vox1_dev" / "wav", tmp_path / "vox1_test" / "wav", tmp_path / "LibriSpeech"
    written = {}
    for i, speaker in enumerate(["id10001", "id10002", "id10003"]):
        for k in range(2):
            name = f"{speaker}/vid{k}/00001.wav"
            written[name] = _write(vox_dev / name, 4000 + 10 * i, seed=i * 10 + k)
    for i, speaker in enumerate(["id10270", "id10271"]):
        for k in range(2):
            name = f"{speaker}/v{k}/0000{k}.wav"
            written[name] = _write(vox_test / name, 3000, seed=100 + i * 10 + k)
    flac = _write(libri / "19" / "198" / "19-198-0000.flac", 5000, seed=7)
    _write(libri / "26" / "495" / "26-495-0001.flac", 5000, seed=8)
    trials = tmp_path / "veri_test.txt"
    trials.write_text("1 id10270/v0/00000.wav id10270/v1/00001.wav\n0 id10270/v0/00000.wav id10271/v1/00001.wav\n")
    prepare_corpus(tmp_path / "prepared", [vox_dev, vox_test], trials, libri, val_speakers=2, val_trials_per_speaker=1)
    data = load_prepared(tmp_path / "prepared")
    assert len(data.filenames) == 12
    row = {name: i for i, name in enumerate(data.filenames)}
    for name, wave in written.items():
        assert np.array_equal((data.utterance(row[name]).numpy() * 32768).round().astype(np.int16), wave)
        assert data.domains[row[name]] == "target"
    assert np.array_equal(data.audio[data.offsets[row["librispeech/19/198/19-198-0000.flac"]]:][:5000], flac)
    assert set(data.speakers[data.rows("ood")]) == {"libri-19", "libri-26"}
    assert set(data.speakers[data.rows("target", "test")]) == {"id10270", "id10271"}
    assert len(data.train_speakers) == 1 and len(set(data.speakers[data.rows("target", "val")])) == 2
    test = data.trials["test"]
    assert test.labels.tolist() == [1, 0] and data.filenames[test.enroll[0]] == "id10270/v0/00000.wav"
    assert "val" in data.trials

    _write(tmp_path / "bad" / "id1" / "v" / "1.wav", 1000, rate=8000)
    (tmp_path / "bad_trials.txt").write_text("1 id1/v/1.wav id1/v/1.wav\n")
    with pytest.raises(DatasetError, match="8000 Hz"):
        prepare_corpus(tmp_path / "x", [tmp_path / "bad"], tmp_path / "bad_trials.txt")
    with pytest.raises(DatasetError, match="not under the VoxCeleb roots"):
        prepare_corpus(tmp_path / "y", [vox_dev], trials)
    with pytest.raises(DatasetError, match="no prepared speaker dataset"):
        load_prepared(tmp_path / "nothing")


def test_prepare_command_makes_many_validation_trials_per_held_out_speaker(tmp_path, capsys):
    vox = tmp_path / "vox1" / "wav"
    for i, speaker in enumerate(["id10001", "id10002", "id10003", "id10270", "id10271"]):
        for k in range(6):
            _write(vox / f"{speaker}/v{k}/00001.wav", 2000, seed=i * 10 + k)
    trials = tmp_path / "veri_test.txt"
    trials.write_text("1 id10270/v0/00001.wav id10270/v1/00001.wav\n0 id10270/v0/00001.wav id10271/v1/00001.wav\n")
    out = tmp_path / "prepared"
    assert data_main(["--voxceleb", str(vox), "--trials", str(trials), "--out", str(out), "--val-speakers", "2",
                      "--val-trials-per-speaker", "12"]) == 0  # fmt: skip
    val = load_prepared(out).trials["val"]
    # 2 held-out speakers × (12 same-speaker pairs of their C(6, 2) = 15 + 12 different-speaker pairs)
    assert len(val.labels) == 48 and val.labels.sum() == 24
    assert data_main(["--voxceleb", str(vox), "--trials", str(trials), "--out", str(tmp_path / "x"),
                      "--val-speakers", "9"]) == 2  # fmt: skip


def test_the_embedded_speaker_dataset_is_made_once_and_reused_by_the_next_run(tmp_path, capsys):
    from results.run_record import write_record
    from search.preflight import prepare_dataset
    from search.run import make_request, parse_args
    from spaces.space import to_mapping

    argv = ["--space", "oskdft2", "--storage", str(tmp_path), "--name", "first"]
    for setting in ("data.train_speakers=4", "data.val_speakers=2", "data.test_speakers=2", "data.ood_speakers=4"):
        argv += ["--set", setting]
    request = make_request(parse_args(argv))
    made = prepare_dataset(request)
    assert request.space.spec.dataset.is_prepared(made), "recognised as the speaker dataset it is"
    stamp = (made / "audio.npy").stat().st_mtime_ns
    assert prepare_dataset(make_request(parse_args(argv))) == made  # a second run with the same settings
    assert "Generating" in capsys.readouterr().out
    write_record(request.run_dir, to_mapping(request.space), made, request.storage)
    resumed = make_request(parse_args(["--resume", "--name", "first", "--storage", str(tmp_path)]))
    assert resumed.data == made and prepare_dataset(resumed) == made  # the record's dataset, as it is
    assert "Generating" not in capsys.readouterr().out
    assert (made / "audio.npy").stat().st_mtime_ns == stamp, "never generated again"


def _voxceleb_layout(tmp_path, val_speakers: int):
    vox = tmp_path / "vox1" / "wav"
    for i, speaker in enumerate(["id10001", "id10002", "id10003", "id10270", "id10271"]):
        for k in range(3):
            _write(vox / f"{speaker}/v{k}/00001.wav", 2000, seed=i * 10 + k)
    trials = tmp_path / "veri_test.txt"
    trials.write_text("1 id10270/v0/00001.wav id10270/v1/00001.wav\n0 id10270/v0/00001.wav id10271/v1/00001.wav\n")
    out = tmp_path / f"prepared_{val_speakers}"
    assert data_main(["--voxceleb", str(vox), "--trials", str(trials), "--out", str(out), "--val-speakers",
                      str(val_speakers), "--val-trials-per-speaker", "2"]) == 0  # fmt: skip
    return out


def test_real_speaker_data_refuses_an_untrained_teacher_and_a_search_without_validation_trials(tmp_path, capsys):
    from search.run import main

    with_val, without_val = _voxceleb_layout(tmp_path, 2), _voxceleb_layout(tmp_path, 0)
    base = ["--space", "oskdft2", "--storage", str(tmp_path / "runs"), "--name", "sv"]
    capsys.readouterr()
    assert main([*base, "--data", str(with_val)]) == 2
    err = capsys.readouterr().err
    assert "teacher_training.weights: on real data the SSL teacher would be trained from scratch" in err
    assert "teacher_training.allow_untrained: true" in err and "Traceback" not in err
    # Allowed, the teacher passes; a search on data without validation trials would rank on its test trials.
    allowed = ["--set", "teacher_training.allow_untrained=true"]
    assert main([*base, "--data", str(without_val), *allowed]) == 2
    err = capsys.readouterr().err
    assert "no validation trials (trials/val.txt)" in err and "--val-speakers N" in err and "kind: replication" in err
    assert not (tmp_path / "runs" / "sv").exists(), "refused before anything ran"


def test_the_paper_replication_trains_on_every_speaker_beside_the_published_eer(ray_session, tmp_path, capsys):
    """spaces/oskdft2_vox1.yaml on the VoxCeleb layout: the fixed configuration with 2 seeds on every dev speaker, its
    Vox1-O EER (the test trials) averaged over both seeds beside the published 4.75 %; refused on a dataset that holds
    speakers out for validation, since a replication selects nothing."""
    import json

    import pandas as pd

    from search.run import main
    from trainables.speaker.teacher import SslConfig, build_teacher

    with_val, every = _voxceleb_layout(tmp_path, 2), _voxceleb_layout(tmp_path, 0)
    weights = tmp_path / "reduced_hubert.pt"
    torch.manual_seed(0)
    torch.save(build_teacher(SslConfig(size="reduced")).state_dict(), weights)
    argv = ["--space", "oskdft2_vox1", "--storage", str(tmp_path / "runs"), "--name", "paper", "--cpus-per-trial", "1",
            "--gpus-per-trial", "0"]  # fmt: skip
    for setting in ("seeds=2", "epochs=2", "p0=0.5", "batch_size=4", "crop_seconds=0.5", "eval_crop_seconds=0.5",
                    "teacher.size=reduced", f"teacher_training.weights={weights}"):  # fmt: skip
        argv += ["--set", setting]
    capsys.readouterr()
    assert main([*argv, "--data", str(with_val)]) == 2
    err = capsys.readouterr().err
    assert "a replication trains on every speaker" in err and "holds 2 out" in err and "--val-speakers 0" in err
    assert main([*argv, "--data", str(every)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "paper"
    board = pd.read_csv(run / "leaderboard.csv", dtype={"trial_id": str})
    assert sorted(board["seed"]) == [1, 2] and (board["status"] == "complete").all(), "seed 1 (the reference's) and 2"
    assert (board["train_speakers"] == 3).all(), "every VoxCeleb1 dev speaker of the layout (id10001 … id10003)"
    for trial in (run / "search").glob("*/result.json"):
        shares = [json.loads(line)["target_share"] for line in trial.read_text().splitlines()]
        assert shares == [0.5, 1.0], "p = epoch / epochs"
    (row,) = pd.read_csv(run / "replication.csv").itertuples()
    eers = 100 * board["test_eer"]
    assert (row.figure, row.runs, row.planned, row.published) == ("test_eer", 2, 2, 4.75)
    assert row.mean == pytest.approx(eers.mean()) and row.std == pytest.approx(eers.std(ddof=1))
    assert row.difference == pytest.approx(eers.mean() - 4.75)
    assert "Jungwoo4021/OS-KDFT README.md:53" in out and "4.75" in out and "2 of 2" in out
    train = torch.load(run / "best" / "student.pt", weights_only=True)["config"]["train"]
    assert (train["schedule"], train["kd_weight"], train["lr"], train["crop_seconds"]) == ("linear", 1.0, 5e-5, 0.5)
