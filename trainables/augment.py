"""The baseline's training-time augmentations: time roll, frequency masking, Freq-MixStyle.

All randomness comes from torch's global generator, which the training loop seeds and checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
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


class DeviceImpulseResponses:
    """DIR augmentation: convolve device-a clips with recorded device impulse responses.

    The impulse responses are the wav files of a folder (read with soundfile, resampled to the
    clips' rate, normalised to unit energy). With probability `p` a device-a clip is convolved with
    one chosen at random (full convolution, cropped to the clip's length), as CP-JKU and NTU do.
    """

    def __init__(self, folder: Path, sample_rate: int, p: float):
        from trainables.audio_files import read_clip

        paths = sorted(Path(folder).glob("*.wav"))
        if not paths:
            raise ValueError(f"DIR augmentation: no .wav impulse responses in {folder}")
        responses = []
        for path in paths:
            ir = read_clip(path, sample_rate, int(soundfile.info(path).duration * sample_rate) + 1, {})
            ir = ir[: np.nonzero(np.abs(ir) > 1e-6)[0].max() + 1] if np.abs(ir).max() > 0 else ir[:1]
            responses.append(torch.from_numpy(ir / (np.sqrt((ir**2).sum()) + 1e-12)))
        self.responses = responses
        self.p = p

    def __call__(self, waveform: torch.Tensor, is_device_a: torch.Tensor) -> torch.Tensor:
        chosen = is_device_a & (torch.rand(len(waveform)) < self.p)
        if not chosen.any():
            return waveform
        out = waveform.clone()
        length = waveform.shape[1]
        for i in torch.nonzero(chosen).flatten().tolist():
            ir = self.responses[int(torch.randint(len(self.responses), (1,)))]
            size = length + len(ir) - 1
            spectrum = torch.fft.rfft(waveform[i], n=size) * torch.fft.rfft(ir, n=size)
            out[i] = torch.fft.irfft(spectrum, n=size)[:length]
        return out
