"""The OS-KDFT2 student and its tuner, built with torchaudio's wav2vec 2.0 / HuBERT / WavLM builders.

- The **student** is the teacher's architecture with 2 transformer layers (OS-KDFT's DistilHuBERT-shaped
  student), initialised from the teacher's convolutional feature extractor, feature projection,
  its layers 0 and 1, and optionally its positional convolution and encoder layer norm. In training
  it can drop layers and mask spans of frames (`StudentMasking`), as the reference's HuggingFace
  student does with the hub config of HuBERT base.
- **Prediction heads** map the student's last layer to teacher layers 4, 8, 12 (DistilHuBERT).
- The **target-task feature tuner** (TFT) turns the student's layer outputs into a 192-d speaker
  embedding: a bottleneck per layer, attention across layers, gating across time, mean+std pooling.

Layer numbering follows HuggingFace's `hidden_states` (see teacher.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import Wav2Vec2Model

from trainables.settings import Settings, flag, setting
from trainables.speaker.teacher import SslConfig, build_ssl, hidden_states, num_frames_of


class SslStudent(nn.Module):
    """The teacher's architecture cut to `layers` transformer layers: waveform → their outputs."""

    def __init__(self, ssl: SslConfig, layers: int = 2, dropout: float = 0.0, layer_drop: float = 0.0):
        super().__init__()
        self.ssl = build_ssl(ssl, num_layers=layers, dropout=dropout)
        self.layer_drop = layer_drop

    def forward(self, waveform: torch.Tensor, masking: StudentMasking | None = None) -> list[torch.Tensor]:
        """masking: in training, spans of frames replaced by its learned vector (none in eval mode)."""
        if masking is None or not self.training or masking.prob == 0:
            return hidden_states(self.ssl, waveform, layer_drop=self.layer_drop)
        frames = num_frames_of(self.ssl, waveform.shape[-1])
        mask = masking.mask(waveform.shape[0], frames, waveform.device)
        return hidden_states(self.ssl, waveform, mask, masking.embedding, self.layer_drop)


class StudentMasking(nn.Module):
    """Training-time time masking of the student's projected features (HuggingFace's `mask_time_*`).

    Each utterance gets max(min_spans, ⌊prob · frames / span + u⌋) spans (u ~ U(0, 1), one draw per
    batch) of `span` frames at distinct random starts; masked frames take a learned vector, initialised
    U(0, 1) as HuggingFace's `masked_spec_embed`. HuBERT base's hub config: prob 0.05, span 10, min 2.
    A training-only part (like the prediction heads): the exported student does not hold it.
    """

    def __init__(self, dim: int, prob: float = 0.0, span: int = 10, min_spans: int = 2):
        super().__init__()
        self.prob, self.span, self.min_spans = prob, span, min_spans
        self.embedding = nn.Parameter(torch.rand(dim))

    def mask(self, batch: int, frames: int, device: torch.device) -> torch.Tensor:
        """[batch, frames] bool on `device`: True where a frame is masked."""
        starts = max(frames - self.span + 1, 1)
        count = min(starts, max(self.min_spans, int(self.prob * frames / self.span + torch.rand(()).item())))
        # Distinct random starts per utterance: the top `count` of uniform scores, drawn on the data's device.
        chosen = torch.rand(batch, starts, device=device).topk(count, dim=1).indices
        begin = torch.zeros(batch, frames, device=device).scatter_(1, chosen, 1.0)
        covered = F.max_pool1d(F.pad(begin[:, None], (self.span - 1, 0)), self.span, stride=1)[:, 0]
        return covered > 0


def init_student_from_teacher(
    student: SslStudent, teacher: Wav2Vec2Model, teacher_layers: Sequence[int] = (0, 1), copy_positional: bool = True
) -> None:
    """Copy the teacher's front end, feature projection and the given layers (0-based) into the student.

    copy_positional: also copy the positional convolution and the encoder layer norm. OS-KDFT's
    released student leaves both at random init (the paper recipe, spaces/oskdft2_vox1.yaml, does
    too); DistilHuBERT copies the positional convolution. The embedded default copies both: in
    these post-LN models the encoder layer norm sits between the positional convolution and layer 0,
    so with both copied the student's layers start out computing exactly the teacher's layers 0 and
    1, instead of seeing differently scaled inputs.
    """
    target, source = student.ssl, teacher
    layers = len(target.encoder.transformer.layers)
    if len(teacher_layers) != layers:
        raise ValueError(f"{len(teacher_layers)} teacher layers for a {layers}-layer student")
    target.feature_extractor.load_state_dict(source.feature_extractor.state_dict())
    target.encoder.feature_projection.load_state_dict(source.encoder.feature_projection.state_dict())
    if copy_positional:
        student_encoder, teacher_encoder = target.encoder.transformer, source.encoder.transformer
        student_encoder.pos_conv_embed.load_state_dict(teacher_encoder.pos_conv_embed.state_dict())
        student_encoder.layer_norm.load_state_dict(teacher_encoder.layer_norm.state_dict())
    source_layers = source.encoder.transformer.layers
    for i, (mine, theirs) in enumerate(zip(target.encoder.transformer.layers, teacher_layers)):
        state = dict(source_layers[theirs].state_dict())
        if i == 0 and theirs != 0:
            # WavLM: only layer 0 holds the relative-position bias table, which every layer uses;
            # a student whose first layer comes from a deeper teacher layer takes the table from layer 0.
            state.update({k: v for k, v in source_layers[0].state_dict().items() if "rel_attn_embed" in k})
        state = {k: v for k, v in state.items() if i == 0 or "rel_attn_embed" not in k}
        mine.load_state_dict(state)


def default_target_layers(teacher_layers: int) -> tuple[int, ...]:
    """Teacher layers (1-based) the prediction heads target: the thirds of its depth.

    For 12 layers that is DistilHuBERT's (4, 8, 12); for a 4-layer reduced teacher (2, 3, 4).
    """
    return tuple(sorted({math.ceil(teacher_layers * k / 3) for k in (1, 2, 3)}))


class PredictionHeads(nn.Module):
    """One head per teacher layer, each Linear–GELU–Linear on the student's last layer (DistilHuBERT)."""

    def __init__(self, dim: int, n_heads: int, teacher_dim: int | None = None):
        super().__init__()
        teacher_dim = teacher_dim or dim
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, teacher_dim)) for _ in range(n_heads)
        )

    def forward(self, last_layer: torch.Tensor) -> list[torch.Tensor]:
        return [head(last_layer) for head in self.heads]


class _NoisyBottleneck(nn.Module):
    """Linear down, GELU, training-time Gaussian noise, Linear up; optionally added to its input.

    The noise (per utterance, std drawn from U(0.1, 0.5) times the mean |activation|) follows
    OS-KDFT's adapter and OS-KDFT2's DistTuner. The reference's DistTuner returns up(gelu(down(x)))
    with no residual (`residual=False`); the residual (the embedded default) starts the tuner near
    the identity of the shared student features.
    """

    def __init__(self, dim: int, bottleneck: int, noise: bool, residual: bool = True):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.noise = noise
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.gelu(self.down(x))
        if self.training and self.noise:
            scale = z.detach().abs().mean(dim=(1, 2), keepdim=True)
            std = torch.empty_like(scale).uniform_(0.1, 0.5) * scale
            z = z + torch.randn_like(z) * std
        return x + self.up(z) if self.residual else self.up(z)


@dataclass(frozen=True)
class TftConfig(Settings):
    """Sizes of the target-task feature tuner; 0 means the notes' proportion of the student's width."""

    embedding_dim: int = setting(192, low=1)  # speaker embedding size
    bottleneck: int = setting(0, low=0)  # per-layer tuner bottleneck; 0: width / 12 (64 for 768)
    attention_dim: int = setting(0, low=0)  # attention hidden channels; 0: width / 8 (96 for 768)
    noise: bool = flag(True)  # training-time Gaussian noise in the tuners
    residual: bool = flag(True)  # tuner output added to its input (OS-KDFT2's DistTuner: no)


class TargetTaskFeatureTuner(nn.Module):
    """Student layer outputs → speaker embedding [batch, embedding_dim] (OS-KDFT2's TFT, notes §1c).

    1. each layer's output passes its own noisy bottleneck tuner (with or without a residual);
    2. each tuned layer gives attention logits per channel and frame (1×1 conv, ReLU, BN, tanh, 1×1 conv);
    3. a softmax over layers of those logits weights the sum of the tuned layers (layer attention);
    4. a sigmoid of the logits summed over layers gates every channel and frame (time attention);
    5. mean and standard deviation over time, a linear layer to the embedding, batch norm.
    """

    def __init__(self, dim: int, n_layers: int, config: TftConfig = TftConfig()):
        super().__init__()
        bottleneck = config.bottleneck or max(4, dim // 12)
        attention = config.attention_dim or max(4, dim // 8)
        self.tuners = nn.ModuleList(
            _NoisyBottleneck(dim, bottleneck, config.noise, config.residual) for _ in range(n_layers)
        )
        self.attention = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, attention, 1), nn.ReLU(), nn.BatchNorm1d(attention), nn.Tanh(),
                          nn.Conv1d(attention, dim, 1))  # fmt: skip
            for _ in range(n_layers)
        )
        self.fc = nn.Linear(2 * dim, config.embedding_dim)
        self.bn = nn.BatchNorm1d(config.embedding_dim)

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        tuned = [tuner(h).transpose(1, 2) for tuner, h in zip(self.tuners, layers, strict=True)]  # [B, D, T] each
        logits = torch.stack([att(h) for att, h in zip(self.attention, tuned)], dim=1)  # [B, L, D, T]
        x = (torch.softmax(logits, dim=1) * torch.stack(tuned, dim=1)).sum(dim=1)
        x = x * torch.sigmoid(logits.sum(dim=1))
        stats = torch.cat([x.mean(dim=2), (x.var(dim=2, unbiased=False) + 1e-5).sqrt()], dim=1)
        return self.bn(self.fc(stats))


class SpeakerStudent(nn.Module):
    """What ships: the SSL student and its TFT, waveform [batch, samples] at 16 kHz → embedding."""

    def __init__(
        self, ssl: SslConfig, layers: int = 2, tft: TftConfig = TftConfig(), dropout: float = 0.0,
        layer_drop: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        self.student = SslStudent(ssl, layers, dropout, layer_drop)
        self.tft = TargetTaskFeatureTuner(ssl.arch()["embed_dim"], layers, tft)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.tft(self.student(waveform))
