"""Device-wise accuracy, the figures ASC users rank by.

All accuracies are fractions in [0, 1]:
- `acc_<device>`: accuracy on the clips of one recording device;
- `acc_seen` / `acc_unseen`: pooled accuracy over the devices that do / do not occur in the
  training split (for TAU22 the unseen ones are s4–s6);
- `acc_real` / `acc_sim_seen`: pooled accuracy over the real devices (a, b, c) and over the simulated
  devices seen in training (s1–s3), the DCASE24 baseline's "Real" and "Seen" columns;
- `macro_acc`: the unweighted mean of the class-wise accuracies (DCASE's official metric);
- `acc`: the unweighted mean of the per-device accuracies, the default ranking metric.
The confusion matrix (clip counts per true and predicted class) is kept beside them for the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def device_metrics(
    predictions: np.ndarray,
    labels: np.ndarray,
    devices: Sequence[str],
    train_devices: Iterable[str],
    n_classes: int,
) -> dict[str, float]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    devices = np.asarray(devices)
    correct = predictions == labels
    train_devices = set(train_devices)
    metrics: dict[str, float] = {}
    per_device = []
    for device in sorted(set(devices.tolist()), key=device_sort_key):
        accuracy = float(correct[devices == device].mean())
        metrics[f"acc_{device}"] = accuracy
        per_device.append(accuracy)
    seen = np.isin(devices, list(train_devices))
    real = np.array([not is_simulated(d) for d in devices.tolist()], dtype=bool)
    for name, group in zip(DEVICE_GROUPS, (seen, ~seen, real, seen & ~real)):
        metrics[f"acc_{name}"] = float(correct[group].mean()) if group.any() else float("nan")
    class_acc = [correct[labels == c].mean() for c in range(n_classes) if (labels == c).any()]
    metrics["macro_acc"] = float(np.mean(class_acc))
    metrics["acc"] = float(np.mean(per_device))
    return metrics


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [classes, classes]: clip counts, rows the true class, columns the predicted one."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts


# The pooled groups beside the devices' own figures (acc_seen, …): not device names.
DEVICE_GROUPS = ("seen", "unseen", "real", "sim_seen")


def is_simulated(device: str) -> bool:
    """TAU22's simulated devices are s1 … s6; the real ones a, b, c."""
    return device.startswith("s") and device[1:].isdigit()


def device_sort_key(device: str) -> tuple[int, str]:
    """Order a, b, c before s1 … s9 (and anything else after)."""
    return (0 if len(device) == 1 else 1 if device.startswith("s") else 2, device.zfill(3))
