"""Evaluation of an ASC model or of saved logits: predictions over a split and their device-wise figures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from trainables.asc.data import AscData
from trainables.asc.loader import clip_batches
from trainables.asc.metrics import device_metrics


def eval_batch_size(configured: int, device: torch.device, on_cpu: int) -> int:
    """`configured`, or when 0 the device's own: large batches on a GPU, `on_cpu` on a CPU."""
    return configured or (1024 if device.type == "cuda" else on_cpu)


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor], data: AscData, rows: np.ndarray, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits [len(rows), classes] (fp32, on the CPU) of a model that maps waveforms to logits, in `rows` order.

    The logits stay on the device until the last batch, so evaluation waits for the GPU once."""
    outputs = [model(batch.waveform).float() for batch in clip_batches(data, rows, batch_size, False, device)]
    return torch.cat(outputs).cpu() if outputs else torch.empty(0, len(data.classes))


def split_metrics(logits: torch.Tensor, data: AscData, rows: np.ndarray, train_devices: list[str]) -> dict[str, float]:
    return device_metrics(
        logits.argmax(dim=1).numpy(), data.labels[rows], data.devices[rows], train_devices, len(data.classes)
    )


def logits_metrics(logits: np.ndarray, data: AscData, subset: int, rows: np.ndarray | None = None) -> dict[str, float]:
    """Device-wise figures of precomputed logits [clips, classes] on val, test and (real data) the whole of
    test.csv (keys val_*, test_*, full_test_*). `rows`: the dataset rows `logits` hold, in order (default:
    every clip), as many as cover those splits."""
    if rows is not None:
        every = np.full((len(data.filenames), logits.shape[1]), np.nan, dtype=np.float32)
        every[rows] = logits
        logits = every
    metrics: dict[str, float] = {}
    for split in ("val", "test", "full_test"):
        if split in data.splits:
            rows = data.splits[split]
            found = split_metrics(torch.from_numpy(np.asarray(logits[rows])), data, rows, data.train_devices(subset))
            metrics.update({f"{split}_{k}": v for k, v in found.items()})
    return metrics
