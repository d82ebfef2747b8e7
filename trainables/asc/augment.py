"""The baseline's training-time augmentations: time roll, frequency masking, Freq-MixStyle, DIR.

Each works on the device of the batch it is given. Every random draw is a small per-example vector
taken from torch's global CPU generator (which the training loops seed and checkpoint) and moved to
the batch's device: a run draws the same augmentations on a CPU and on a GPU, and resuming needs only
the CPU generator's state. The work itself (gathers, masks, FFTs) runs where the batch is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch


def time_roll(waveform: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Circularly shift each clip [B, samples] by its own uniform offset in [-max_shift, max_shift] samples."""
    if max_shift <= 0:
        return waveform
    batch, length = waveform.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (batch, 1)).to(waveform.device, non_blocking=True)
    index = (torch.arange(length, device=waveform.device).unsqueeze(0) - shifts) % length
    return torch.gather(waveform, 1, index)


def frequency_mask(spec: torch.Tensor, max_width: int, fill: float = 0.0) -> torch.Tensor:
    """Set one band of 0…max_width−1 mel bins in each example of [B, 1, F, T] to `fill` (iid masks, as torchaudio's)."""
    if max_width <= 0:
        return spec
    batch, _, n_bins, _ = spec.shape
    width = (torch.rand(batch) * max_width).long()
    start = (torch.rand(batch) * (n_bins - width)).long()
    bounds = torch.stack([start, start + width], dim=1).to(spec.device, non_blocking=True)
    bins = torch.arange(n_bins, device=spec.device).unsqueeze(0)
    masked = (bins >= bounds[:, :1]) & (bins < bounds[:, 1:])
    return spec.masked_fill(masked[:, None, :, None], fill)


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
    weight = torch.distributions.Beta(alpha, alpha).sample((batch, 1, 1, 1)).to(spec.device, spec.dtype, non_blocking=True)
    perm = torch.randperm(batch).to(spec.device, non_blocking=True)
    mixed_mean = weight * mean + (1 - weight) * mean[perm]
    mixed_std = weight * std + (1 - weight) * std[perm]
    return (spec - mean) / std * mixed_std + mixed_mean


@dataclass
class Mix:
    weight: float  # of the batch itself; 1 − weight goes to the partner
    perm: torch.Tensor  # each example's partner, on the batch's device


def mixup(batch: int, alpha: float, device: torch.device) -> Mix | None:
    """One Beta(α, α) weight for the batch and a partner for each example; None when α is 0 (off).
    The caller mixes inputs and, with the same weight, the losses against both examples' targets."""
    if alpha <= 0 or batch < 2:
        return None
    weight = float(torch.distributions.Beta(alpha, alpha).sample())
    return Mix(weight, torch.randperm(batch).to(device, non_blocking=True))


# What a `dir_path` setting's folder must hold: (glob, what they are), for the message when it holds none.
IMPULSE_RESPONSES = ("*.wav", ".wav impulse responses")


class DeviceImpulseResponses:
    """DIR augmentation: convolve device-a clips with recorded device impulse responses.

    The impulse responses are the wav files of a folder (read with soundfile, resampled to the
    clips' rate, trailing silence cut), used at their recorded level as CP-JKU and NTU load them:
    MicIRP's 66 responses have norms from 0.22 to 2.37, so a convolved clip also changes loudness.
    With probability `p` a device-a clip is convolved with one chosen at random (full convolution,
    cropped to the clip's length).
    """

    def __init__(self, folder: Path, sample_rate: int, p: float):
        from trainables.asc.audio_files import read_clip

        paths = sorted(Path(folder).glob(IMPULSE_RESPONSES[0]))
        if not paths:
            raise ValueError(f"DIR augmentation: no {IMPULSE_RESPONSES[1]} in {folder}")
        responses = []
        for path in paths:
            ir = read_clip(path, sample_rate, int(soundfile.info(path).duration * sample_rate) + 1, {})
            ir = ir[: np.nonzero(np.abs(ir) > 1e-6)[0].max() + 1] if np.abs(ir).max() > 0 else ir[:1]
            responses.append(ir)
        longest = max(len(ir) for ir in responses)
        padded = np.zeros((len(responses), longest), dtype=np.float32)
        for i, ir in enumerate(responses):
            padded[i, : len(ir)] = ir
        self.responses = torch.from_numpy(padded)  # [responses, longest]; zeros past each one's end
        self.p = p
        self._spectra: dict[tuple[torch.device, int], torch.Tensor] = {}

    def _spectrum(self, device: torch.device, size: int) -> torch.Tensor:
        """The responses' rFFTs at `size` points on `device`, made once per device and clip length."""
        key = (device, size)
        if key not in self._spectra:
            self._spectra[key] = torch.fft.rfft(self.responses.to(device), n=size)
        return self._spectra[key]

    def __call__(self, waveform: torch.Tensor, is_device_a: torch.Tensor) -> torch.Tensor:
        """waveform [B, samples] on any device; is_device_a [B] bool on the host."""
        chosen = torch.nonzero(is_device_a & (torch.rand(len(waveform)) < self.p)).flatten()
        if len(chosen) == 0:
            return waveform
        which = torch.randint(len(self.responses), (len(chosen),))
        length = waveform.shape[1]
        size = length + self.responses.shape[1] - 1
        chosen, which = chosen.to(waveform.device, non_blocking=True), which.to(waveform.device, non_blocking=True)
        spectrum = torch.fft.rfft(waveform[chosen].float(), n=size) * self._spectrum(waveform.device, size)[which]
        return waveform.index_copy(0, chosen, torch.fft.irfft(spectrum, n=size)[:, :length].to(waveform.dtype))
