"""The baseline's training-time augmentations: time roll, frequency masking, Freq-MixStyle.

All randomness comes from torch's global generator, which the training loop seeds and checkpoints.
"""

from __future__ import annotations

import torch


def time_roll(waveform: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Circularly shift each clip [B, samples] by its own uniform offset in [-max_shift, max_shift] samples."""
    if max_shift <= 0:
        return waveform
    batch, length = waveform.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (batch, 1))
    index = (torch.arange(length).unsqueeze(0) - shifts) % length
    return torch.gather(waveform, 1, index)


def frequency_mask(spec: torch.Tensor, max_width: int) -> torch.Tensor:
    """Zero one band of 0…max_width−1 mel bins in each example of [B, 1, F, T] (iid masks, as torchaudio's)."""
    if max_width <= 0:
        return spec
    batch, _, n_bins, _ = spec.shape
    width = (torch.rand(batch) * max_width).long()
    start = (torch.rand(batch) * (n_bins - width)).long()
    bins = torch.arange(n_bins).unsqueeze(0)
    masked = (bins >= start.unsqueeze(1)) & (bins < (start + width).unsqueeze(1))
    return spec.masked_fill(masked[:, None, :, None], 0.0)


def freq_mixstyle(spec: torch.Tensor, p: float, alpha: float) -> torch.Tensor:
    """Freq-MixStyle: with probability p, mix per-frequency statistics across the batch.

    Mean and std are taken per example and mel bin over channel and time, detached from the graph,
    mixed with those of a shuffled batch using Beta(alpha, alpha) weights, and the spectrogram is
    re-normalised to the mixed statistics.
    """
    if p <= 0 or spec.shape[0] < 2 or torch.rand(1).item() > p:
        return spec
    batch = spec.shape[0]
    mean = spec.mean(dim=(1, 3), keepdim=True).detach()
    std = (spec.var(dim=(1, 3), keepdim=True) + 1e-6).sqrt().detach()
    weight = torch.distributions.Beta(alpha, alpha).sample((batch, 1, 1, 1))
    perm = torch.randperm(batch)
    mixed_mean = weight * mean + (1 - weight) * mean[perm]
    mixed_std = weight * std + (1 - weight) * std[perm]
    return (spec - mean) / std * mixed_std + mixed_mean
