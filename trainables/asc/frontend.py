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

LOG_OFFSET = 1e-5  # log(mel + LOG_OFFSET)
# What a mel bin set to zero power becomes after the log: the baseline masks frequencies before its log, so a
# masked bin reads log(1e-5) ≈ −11.5, below any bin that carries sound, not 0.0 (a middling level).
MASKED_LOG_MEL = math.log(LOG_OFFSET)


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 32000
    n_fft: int = 4096
    window_length: int = 3072
    hop_length: int = 500
    n_mels: int = 256
    f_min: float = 0.0
    f_max: float | None = None

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
        return (self.mel(waveform) + LOG_OFFSET).log().unsqueeze(1)
