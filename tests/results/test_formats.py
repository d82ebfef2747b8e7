import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from results import formats, predict
from trainables.asc.frontend import FrontendConfig, LogMel
from trainables.asc.student import Student, StudentArch
from trainables.asc.synthetic import CLASSES

ROOT = Path(__file__).resolve().parents[2]
# Exported files compute the same float32 graph (ONNX with a real-valued STFT): the logits of a
# freshly initialised student are about 0.05 in size and agree to about 1e-8, so these leave room.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def student_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = Student()
    path = tmp_path_factory.mktemp("student") / "student.pt"
    torch.save({"state_dict": model.state_dict(),
                "config": {"arch": StudentArch().as_dict(), "frontend": FrontendConfig().as_dict(), "train": {}},
                "metrics": {"acc": 0.5}, "trial_id": "fresh"}, path)  # fmt: skip
    return path


def _reference(student_file: Path, waveform: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return formats.waveform_classifier(student_file)(waveform)


def test_exportable_front_end_computes_the_same_log_mel():
    logmel = LogMel().eval()
    waveform = formats.example_waveform(FrontendConfig(), batch=2, seed=5)
    with torch.no_grad():
        expected, got = logmel(waveform), formats.ExportableLogMel(logmel)(waveform)
    assert got.shape == expected.shape == (2, 1, 256, 65)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_torchscript_file_matches_pytorch(student_file, tmp_path):
    path = formats.to_torchscript(student_file, tmp_path / "student.ts")
    waveform = formats.example_waveform(FrontendConfig(), batch=3, seed=1)  # traced with batch 2
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        got = loaded(waveform)
    expected = _reference(student_file, waveform)
    assert got.shape == (3, 10)
    assert torch.allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert formats.max_difference(student_file, path) < ATOL


def test_onnx_file_matches_pytorch(student_file, tmp_path):
    import onnxruntime

    path = formats.to_onnx(student_file, tmp_path / "student.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == CLASSES and meta["sample_rate"] == "32000" and meta["trial_id"] == "fresh"
    for batch, seconds in ((3, 1.0), (1, 1.5)):  # batch and length are dynamic
        waveform = formats.example_waveform(FrontendConfig(), batch=batch, seconds=seconds, seed=2)
        (got,) = session.run(["logits"], {"waveform": waveform.numpy()})
        expected = _reference(student_file, waveform).numpy()
        assert got.shape == (batch, 10)
        assert np.allclose(got, expected, rtol=RTOL, atol=ATOL)


def _write_audio(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    clips = {
        "a.wav": (rng.standard_normal(32000) * 0.1, 32000),  # already 1 s, 32 kHz, mono
        "sub/b.wav": (rng.standard_normal((66150, 2)) * 0.1, 44100),  # 1.5 s stereo at 44.1 kHz: one whole second
        "c.WAV": (rng.standard_normal(8000) * 0.1, 16000),  # 0.5 s at 16 kHz: pad
        "d.flac": (rng.standard_normal(80000) * 0.1, 32000),  # 2.5 s of FLAC: two 1-s windows averaged
    }
    for name, (audio, rate) in clips.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        subtype = "PCM_16" if name.endswith(".flac") else "FLOAT"
        soundfile.write(folder / name, audio.astype(np.float32), rate, subtype=subtype)
    (folder / "notes.txt").write_text("not audio")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00 not really a wav file")
    return {name: audio for name, (audio, _) in clips.items()}


def test_read_clip_resamples_mixes_and_fits_to_one_second(tmp_path):
    _write_audio(tmp_path)
    for name in ("a.wav", "sub/b.wav", "c.WAV", "d.flac"):
        assert predict.read_clip(tmp_path / name, 32000).shape == (32000,)
    short = predict.read_clip(tmp_path / "c.WAV", 32000)
    assert short[16100:].abs().max() == 0  # 0.5 s of audio, then zeros
    assert predict.windows(predict.read_waveform(tmp_path / "d.flac", 32000), 32000).shape == (2, 32000)


def test_predictions_file_in_submission_format(student_file, tmp_path):
    audio = _write_audio(tmp_path / "eval")
    out = tmp_path / "out" / "predictions.csv"
    found = predict.write_predictions(student_file, tmp_path / "eval", out)
    frame = pd.read_csv(out, sep="\t")
    assert frame.columns.tolist() == ["filename", "scene_label", *CLASSES]
    assert CLASSES[:3] == ["airport", "bus", "metro"] and CLASSES[-1] == "tram"
    assert frame["filename"].tolist() == ["audio/a.wav", "audio/c.WAV", "audio/d.flac", "audio/sub/b.wav"]
    probs = frame[CLASSES].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert frame["scene_label"].tolist() == [CLASSES[i] for i in probs.argmax(axis=1)]
    expected = _reference(student_file, torch.from_numpy(audio["a.wav"].astype(np.float32))[None]).softmax(1)
    assert np.allclose(probs[0], expected[0].numpy(), atol=1e-5)  # written with 6 decimals
    flac = torch.from_numpy(soundfile.read(tmp_path / "eval" / "d.flac", dtype="float32")[0][:64000].reshape(2, 32000))
    assert np.allclose(probs[2], _reference(student_file, flac).softmax(1).mean(0).numpy(), atol=1e-5)
    assert found.averaged == {"audio/d.flac": 2} and found.padded == {"audio/c.WAV": 0.5}
    assert list(found.unreadable) == ["audio/broken.wav"]


def test_predict_command_takes_a_whole_run(student_file, tmp_path, capsys):
    _write_audio(tmp_path / "eval")
    run_dir = tmp_path / "run"
    for subset in (5, 25):
        (run_dir / "best" / f"subset_{subset}").mkdir(parents=True)
        (run_dir / "best" / f"subset_{subset}" / "student.pt").write_bytes(student_file.read_bytes())
    assert predict.main([str(run_dir), str(tmp_path / "eval"), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["subset_25.csv", "subset_5.csv"]
    assert len(pd.read_csv(tmp_path / "out" / "subset_5.csv", sep="\t")) == 4
    captured = capsys.readouterr()
    assert "1 file(s) longer than 1 s: each classified as the mean of its whole 1-s windows" in captured.out
    assert "warning: 1 file(s) shorter than 1 s, zero-padded: audio/c.WAV (0.50 s)" in captured.out
    assert "Skipped 1 unreadable file(s)" in captured.err and "audio/broken.wav" in captured.err


def test_predict_command(student_file, tmp_path, capsys):
    _write_audio(tmp_path / "eval")
    assert predict.main([str(student_file), str(tmp_path / "eval"), str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv", sep="\t")) == 4
    (tmp_path / "empty").mkdir()
    assert predict.main([str(student_file), str(tmp_path / "empty"), str(tmp_path / "q.csv")]) == 2
    assert predict.main([str(student_file), str(tmp_path / "nowhere"), str(tmp_path / "q.csv")]) == 2
    assert "no such folder" in capsys.readouterr().err
    command = [sys.executable, str(ROOT / "results" / "predict.py"), str(tmp_path / "missing.pt"),
               str(tmp_path / "eval"), str(tmp_path / "q.csv")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no such student file" in done.stderr
    assert not (tmp_path / "q.csv").exists()


def test_formats_command(student_file, tmp_path, capsys):
    assert formats.main([str(tmp_path / "missing.pt"), str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_predict_refuses_a_file_with_non_finite_samples(student_file, tmp_path, capsys, bad):
    """Issue 26, case 9: such a file was written as `airport` with empty probabilities, and exit 0."""
    _write_audio(tmp_path / "eval")
    audio = np.random.default_rng(1).standard_normal(32000).astype(np.float32) * 0.1
    audio[1000] = bad
    soundfile.write(tmp_path / "eval" / "poisoned.wav", audio, 32000, subtype="FLOAT")
    assert predict.main([str(student_file), str(tmp_path / "eval"), str(tmp_path / "p.csv")]) == 0
    frame = pd.read_csv(tmp_path / "p.csv", sep="\t")
    assert "audio/poisoned.wav" not in frame["filename"].tolist() and len(frame) == 4, "the others are still written"
    assert np.isfinite(frame[CLASSES].to_numpy()).all()
    err = capsys.readouterr().err
    assert "Skipped 2 unreadable file(s)" in err and "audio/poisoned.wav: NaN or infinite samples" in err


def test_exported_models_classify_a_long_input_as_predict_does(student_file, tmp_path):
    """Issue 26, case 13: a 10-s input is the mean of its ten 1-s windows' probabilities in both exported files, as
    predict.py classifies the same file, and the metadata says so; a 1-s clip keeps the student's probabilities."""
    import onnxruntime

    formats.write_formats(student_file, tmp_path / "exported")
    rng = np.random.default_rng(3)
    long = (rng.standard_normal((2, 10 * 32000 + 1234)) * 0.1).astype(np.float32)  # a partial second at the end
    (tmp_path / "eval").mkdir()
    for i, row in enumerate(long):
        soundfile.write(tmp_path / "eval" / f"long{i}.wav", row, 32000, subtype="FLOAT")
    found = predict.predict_folder(student_file, tmp_path / "eval")
    assert found.averaged == {"audio/long0.wav": 10, "audio/long1.wav": 10}
    expected = found.table[CLASSES].to_numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "exported" / "student.onnx"), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"waveform": long})
    script_logits = formats.run_torchscript(tmp_path / "exported" / "student.ts", torch.from_numpy(long))
    for logits in (torch.from_numpy(onnx_logits), script_logits):
        assert logits.shape == (2, 10)
        assert np.allclose(logits.softmax(1).numpy(), expected, atol=1e-5)
    with torch.no_grad():
        one = torch.from_numpy(long[:, :32000])
        frontend, model, _ = formats.load_student(student_file)
        student = model(frontend(one)).softmax(1)
    assert torch.allclose(formats.run_torchscript(tmp_path / "exported" / "student.ts", one).softmax(1), student, atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["clip_samples"] == "32000" and "windows" in meta["input"] and "mean class probabilities" in meta["output"]
    extra = {"metadata.json": ""}
    torch.jit.load(str(tmp_path / "exported" / "student.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["clip_samples"] == "32000"
