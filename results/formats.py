"""Export a student file to formats that run without this project: TorchScript and ONNX.

    python results/formats.py STUDENT.pt OUT_DIR    # writes student.ts and student.onnx, checks both

Every run writes both next to each exported student (best/subset_<N>/student.ts, student.onnx).

Both files hold the front end and the student together, as one model that maps a waveform
[batch, samples] at the front end's sample rate (32 kHz: 32,000 samples per 1-s clip) to class
logits [batch, classes]; softmax gives the class probabilities. The student classifies 1-s clips, so the
model classifies an input of any length as results/predict.py classifies a file (`WindowedClassifier`):
its whole 1-s windows (the rest after the last is left out; an input shorter than 1 s is zero-padded to
one), the output being the log of the mean of their class probabilities. Its softmax is that mean; for a
1-s clip the output is the student's log-softmax (its logits less their logsumexp: the same classes, the
same probabilities). A 10-s recording fed whole gets the answer of its ten 1-s windows, not of one 10-s
spectrogram the student never saw in training.

- TorchScript (`to_torchscript`): the exported LogMel and Student, traced together; load with
  torch.jit.load(path). It computes exactly what `load_student` rebuilds. Its extra file
  `metadata.json` holds the class names and sample rate: torch.jit.load(path, _extra_files={"metadata.json": ""}).
- ONNX (`to_onnx`, opset 17, legacy TorchScript-based exporter): torchaudio's spectrogram uses a
  complex STFT, which the ONNX exporter cannot express, so the ONNX model carries
  `ExportableLogMel`, the same log-mel written with a real-valued STFT (ONNX's STFT operator). It
  agrees with LogMel to float rounding (about 1e-6 on the log-mel), so the ONNX file also takes the
  raw waveform. Input `waveform` [batch, samples], output `logits` [batch, classes]; batch and
  samples are dynamic. Run it with onnxruntime.InferenceSession(path). Its metadata
  (`session.get_modelmeta().custom_metadata_map`) holds `classes` (a JSON list, in output order),
  `sample_rate`, `clip_seconds`, `clip_samples` (the window), `input`, `output` and `trial_id`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.student_file import CLIP_SECONDS, load_student, read_student, student_classes  # noqa: E402
from trainables.asc.frontend import FrontendConfig, LogMel  # noqa: E402
from trainables.tensor_files import UnreadableFile  # noqa: E402

ONNX_OPSET = 17  # the first opset with an STFT operator


class WaveformClassifier(nn.Module):
    """Front end + student as one module: waveform [B, samples] → logits [B, classes]."""

    def __init__(self, frontend: nn.Module, model: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(self.frontend(waveform))


class WindowedClassifier(nn.Module):
    """A 1-s classifier over inputs of any length: waveform [B, samples] → logits [B, classes], the log of the mean
    class probabilities of the whole `clip_samples` windows of each row (a row shorter than one window: zero-padded
    to one). The window count is computed from the input's shape by tensor operations, so TorchScript tracing and the
    ONNX exporter keep it dynamic."""

    def __init__(self, classifier: nn.Module, clip_samples: int):
        super().__init__()
        self.classifier = classifier
        self.clip_samples = clip_samples

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        clip = self.clip_samples
        batch, samples = waveform.shape[0], waveform.shape[1]
        count = torch.clamp(torch.div(torch.as_tensor(samples), clip, rounding_mode="floor"), min=1)
        windows = F.pad(waveform, (0, clip))[:, : count * clip].reshape(batch * count, clip)
        probabilities = self.classifier(windows).softmax(dim=1)
        return probabilities.reshape(batch, count, -1).mean(dim=1).log()


class ExportableLogMel(nn.Module):
    """LogMel's computation with a real-valued STFT, which the ONNX exporter can translate.

    Same steps as torchaudio's MelSpectrogram with LogMel's settings: reflect-pad n_fft/2 on both
    sides (center=True), Hann window of `window_length` zero-padded to n_fft in the middle, power
    spectrum, the same mel filter bank, then log(x + 1e-5). Waveform [B, samples] → [B, 1, n_mels, frames].
    """

    def __init__(self, logmel: LogMel):
        super().__init__()
        config = logmel.config
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        window = logmel.mel.spectrogram.window.detach().clone()
        left = (config.n_fft - window.numel()) // 2
        self.register_buffer("window", F.pad(window, (left, config.n_fft - window.numel() - left)))
        self.register_buffer("filterbank", logmel.mel.mel_scale.fb.detach().clone())  # [n_fft/2 + 1, n_mels]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2
        # Reflect padding needs a channel axis in PyTorch; ONNX's STFT then takes [B, samples].
        padded = F.pad(waveform.unsqueeze(1), (half, half), mode="reflect").squeeze(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # return_complex=False is deprecated, and exactly what ONNX needs
            spectrum = torch.stft(padded, self.n_fft, self.hop_length, window=self.window, center=False,
                                  return_complex=False)  # fmt: skip
        power = spectrum.pow(2).sum(-1)  # [B, freqs, frames]
        mel = torch.matmul(power.transpose(1, 2), self.filterbank).transpose(1, 2)
        return (mel + 1e-5).log().unsqueeze(1)


def example_waveform(config: FrontendConfig, batch: int = 2, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A reproducible noise waveform [batch, samples] in about [-0.3, 0.3], to trace and to check with."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(round(seconds * config.sample_rate)), generator=generator)


def waveform_classifier(student_path: Path) -> WindowedClassifier:
    """The exported student with its own front end over 1-s windows, in eval mode (the reference the exports must
    match)."""
    frontend, model, _ = load_student(Path(student_path))
    return WindowedClassifier(WaveformClassifier(frontend, model), clip_samples(frontend.config)).eval()


def clip_samples(config: FrontendConfig) -> int:
    """Samples of the 1-s clip a student classifies."""
    return int(round(CLIP_SECONDS * config.sample_rate))


def metadata(student_path: Path) -> dict[str, str]:
    """What a user of an exported file needs besides the graph: class names in output order and the input."""
    payload = read_student(student_path)
    frontend = FrontendConfig(**payload["config"]["frontend"])
    return {"classes": json.dumps(student_classes(student_path)), "sample_rate": str(frontend.sample_rate),
            "clip_seconds": f"{CLIP_SECONDS:g}", "clip_samples": str(clip_samples(frontend)),
            "input": "waveform [batch, samples], mono, float in [-1, 1], at sample_rate; any length: its whole "
                     "clip_samples windows are classified (the rest after the last is left out), a shorter input "
                     "is zero-padded to one window",
            "output": "logits [batch, classes]: log of the mean class probabilities of the windows (softmax gives "
                      "them, as results/predict.py writes them)",
            "trial_id": str(payload.get("trial_id", ""))}  # fmt: skip


def to_torchscript(student_path: Path, out_path: Path) -> Path:
    """Trace front end + student into one TorchScript file; load it with torch.jit.load."""
    classifier = waveform_classifier(student_path)
    example = example_waveform(classifier.classifier.frontend.config)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; tracing still works in torch 2.11
        # No trace check here: the file is compared with the PyTorch student afterwards (max_difference).
        traced = torch.jit.trace(classifier, example, check_trace=False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out_path), _extra_files={"metadata.json": json.dumps(metadata(student_path))})
    return out_path


def to_onnx(student_path: Path, out_path: Path) -> Path:
    """Write front end (as ExportableLogMel) + student as one ONNX model: `waveform` → `logits`."""
    reference = waveform_classifier(student_path).classifier
    onnx_classifier = WaveformClassifier(ExportableLogMel(reference.frontend), reference.model)
    classifier = WindowedClassifier(onnx_classifier, clip_samples(reference.frontend.config)).eval()
    example = example_waveform(reference.frontend.config)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles the STFT.
        torch.onnx.export(classifier, (example,), str(out_path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["waveform"], output_names=["logits"],
                          dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "logits": {0: "batch"}})  # fmt: skip
    import onnx

    model = onnx.load(str(out_path))
    onnx.helper.set_model_props(model, metadata(student_path))
    onnx.save(model, str(out_path))
    return out_path


def write_formats(student_path: Path, out_dir: Path) -> list[Path]:
    """student.ts and student.onnx of an exported student, in `out_dir`."""
    out_dir = Path(out_dir)
    return [to_torchscript(student_path, out_dir / "student.ts"), to_onnx(student_path, out_dir / "student.onnx")]


def run_torchscript(path: Path, waveform: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")(waveform)


def run_onnx(path: Path, waveform: torch.Tensor) -> torch.Tensor:
    import onnxruntime  # only needed to check or run the ONNX file

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"waveform": waveform.numpy()})
    return torch.from_numpy(logits)


def max_difference(student_path: Path, exported: Path, waveform: torch.Tensor | None = None) -> float:
    """Largest absolute logit difference between an exported file and the PyTorch student."""
    reference = waveform_classifier(student_path)
    waveform = example_waveform(reference.classifier.frontend.config, batch=3, seed=1) if waveform is None else waveform
    with torch.no_grad():
        expected = reference(waveform)
    run = run_onnx if Path(exported).suffix == ".onnx" else run_torchscript
    return float((run(exported, waveform) - expected).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/formats.py", description=__doc__.splitlines()[0])
    parser.add_argument("student", help="an exported student file, e.g. runs/kd/best/subset_25/student.pt")
    parser.add_argument("out_dir", help="where student.ts and student.onnx go")
    args = parser.parse_args(argv)
    student = Path(args.student)
    if not student.is_file():
        print(f"error: no such file: {student}", file=sys.stderr)
        return 2
    try:
        load_student(student)  # a file that is no student is refused before anything is written
    except UnreadableFile as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    for path in write_formats(student, out_dir):
        print(f"Wrote {path} (largest logit difference to PyTorch: {max_difference(student, path):.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
