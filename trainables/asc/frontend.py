"""The student's front end: 32 kHz waveform → log-mel spectrogram, as in the DCASE24 baseline.

n_fft 4096, window 3072 samples (96 ms), hop 500 samples (15.6 ms), 256 mel bins, log(x + 1e-5).
One second of audio (32,000 samples) gives a 256 × 65 spectrogram.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torchaudio
from torch import nn

from trainables.settings import SettingError, Settings, setting

LOG_OFFSET = 1e-5  # log(mel + LOG_OFFSET)
# What a mel bin set to zero power becomes after the log: the baseline masks frequencies before its log, so a
# masked bin reads log(1e-5) ≈ −11.5, below any bin that carries sound, not 0.0 (a middling level).
MASKED_LOG_MEL = math.log(LOG_OFFSET)


@dataclass(frozen=True)
class FrontendConfig(Settings):
    """The log-mel front end: torchaudio's MelSpectrogram, in samples at `sample_rate` and Hz."""

    sample_rate: int = setting(32000, low=8000)  # as the teacher's and the synthetic data's lowest rate
    n_fft: int = setting(4096, low=2)
    window_length: int = setting(3072, low=1)  # at most n_fft (torch.stft pads the window to n_fft)
    hop_length: int = setting(500, low=1)
    n_mels: int = setting(256, low=1)
    f_min: float = setting(0.0, low=0.0)
    f_max: float | None = setting(None, low=0.0, low_open=True)  # None: sample_rate / 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window_length > self.n_fft:
            raise SettingError("window_length", f"{self.window_length} must be at most n_fft ({self.n_fft})")
        if self.f_max is not None and self.f_max <= self.f_min:
            raise SettingError("f_max", f"{self.f_max} must be above f_min ({self.f_min})")

    def as_dict(self) -> dict:
        return asdict(self)


class LogMel(nn.Module):
    """Waveform [B, samples] → log-mel [B, 1, n_mels, frames]; has no trainable parameters."""

    def __init__(self, config: FrontendConfig = FrontendConfig()):
        super().__init__()
        self.config = config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.window_length,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # MelSpectrogram's own power, |X|^2 as abs().pow(2), takes a complex square root first: on a CPU that was
        # a third of the front end. re^2 + im^2 is the same power (to float rounding) at a third of its cost.
        spectrogram = self.mel.spectrogram
        spec = torch.stft(waveform, spectrogram.n_fft, spectrogram.hop_length, spectrogram.win_length,
                          spectrogram.window, center=spectrogram.center, pad_mode=spectrogram.pad_mode,
                          normalized=False, onesided=spectrogram.onesided, return_complex=True)  # fmt: skip
        power = spec.real.square() + spec.imag.square()
        return (self.mel.mel_scale(power) + LOG_OFFSET).log().unsqueeze(1)
