"""Evaluate an exported student on one split of a prepared dataset: confusion matrix and device-wise accuracy.

The exported file's `metrics` and `test_confusion` already hold the test split's figures from
training; this recomputes them from the file and any dataset (so they can be checked, or had on
another split), including the confusion matrix, counts of clips per (true class, predicted class).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from results.student_file import load_student
from trainables.asc.data import AscData
from trainables.asc.evaluation import predict, split_metrics
from trainables.asc.metrics import confusion_matrix
from trainables.common import resolve_device


@dataclass(frozen=True)
class Evaluation:
    split: str
    classes: list[str]
    confusion: np.ndarray  # int64 [classes, classes]: rows true class, columns predicted class, clip counts
    metrics: dict[str, float]  # acc, acc_<device>, acc_seen, acc_unseen, macro_acc (fractions in [0, 1])


class IncompatibleStudent(ValueError):
    """The student cannot read this dataset (another sample rate or number of classes)."""


def evaluate_student(student_path: Path, data: AscData, split: str = "test", train_devices: list[str] | None = None,
                     batch_size: int = 32, device: torch.device | None = None) -> Evaluation:  # fmt: skip
    """Run the exported student over `split`; train_devices decide acc_seen/acc_unseen (default: the
    devices of the subset recorded in the file's training settings)."""
    frontend, model, _ = load_student(Path(student_path))
    if frontend.config.sample_rate != data.sample_rate:
        rates = f"{frontend.config.sample_rate} Hz, the dataset is {data.sample_rate} Hz"
        raise IncompatibleStudent(f"the student expects {rates}")
    if model.arch.n_classes != len(data.classes):
        raise IncompatibleStudent(f"the student has {model.arch.n_classes} classes, the dataset {len(data.classes)}")
    if split not in data.splits:
        raise IncompatibleStudent(f"the dataset has no {split} split")
    if train_devices is None:
        subset = torch.load(student_path, map_location="cpu", weights_only=True)["config"]["train"].get("subset")
        train_devices = data.train_devices(int(subset)) if f"split{subset}" in data.splits else []
    device = resolve_device(device)
    # channels_last, as in training: the depthwise convolutions run about 1.5× faster on CPU.
    frontend, model = frontend.to(device), model.to(device, memory_format=torch.channels_last)
    rows = data.splits[split]

    def logits_of(waveform: torch.Tensor) -> torch.Tensor:
        return model(frontend(waveform).contiguous(memory_format=torch.channels_last))

    logits = predict(logits_of, data, rows, batch_size, device)
    predictions = logits.argmax(dim=1).numpy()
    return Evaluation(split=split, classes=list(data.classes),
                      confusion=confusion_matrix(data.labels[rows], predictions, len(data.classes)),
                      metrics=split_metrics(logits, data, rows, train_devices))  # fmt: skip
