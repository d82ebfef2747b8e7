"""Train the embedded default's SSL teacher from scratch: a stand-in for SSL pretraining that fits a CPU."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from trainables.common import FINITE_CHECK_EVERY, check_finite, count_parameters, resolve_device, warmup_cosine
from trainables.prepared import DatasetError
from trainables.settings import MAX_LR, Rule, SettingError, Settings, flag, path_setting, seed_setting, setting
from trainables.speaker.data import DOMAINS, SpeakerData, train_batches
from trainables.speaker.evaluation import score_trials
from trainables.speaker.losses import AAM_MARGIN, SpeakerLoss
from trainables.speaker.teacher import FRAME_STRIDE, SslConfig, build_ssl, hidden_states, num_frames


@dataclass(frozen=True)
class TeacherTrainConfig(Settings):
    """Settings of `train_ssl_teacher`. Learning rate per Adam step, warm-up then cosine decay."""

    epochs: int = setting(30, low=1)
    batch_size: int = setting(16, low=2)  # train_batches keeps only batches of 2 or more (the embedding's batch norm)
    crop_seconds: float = setting(2.0, low=0.0, low_open=True)
    lr: float = setting(2e-3, low=0.0, low_open=True, high=MAX_LR)
    weight_decay: float = setting(1e-4, low=0.0)
    warmup_fraction: float = setting(0.1, low=0.0, high=1.0, high_open=True)  # share of all steps
    # which corpora it learns from: ood (as a LibriSpeech-pretrained model), target
    domains: tuple[str, ...] = setting(("ood",), rule=Rule(kind="items", item=Rule(choices=DOMAINS), length=(1, 2)))
    masked_weight: float = setting(1.0, low=0.0)  # weight of masked log-mel prediction (0: off)
    speaker_weight: float = setting(1.0, low=0.0)  # weight of AAM speaker classification over the corpora's speakers
    # (0: off)
    mask_prob: float = setting(0.08, low=0.0, high=1.0)  # chance that a frame starts a masked span
    mask_span: int = setting(5, low=1)  # frames per masked span (20 ms each)
    n_mels: int = setting(40, low=1)  # log-mel bands predicted at masked frames
    aam_margin: float = setting(0.2, rule=AAM_MARGIN)
    aam_scale: float = setting(30.0, low=0.0, low_open=True)
    embedding_dim: int = setting(192, low=1)
    eval_max_seconds: float = setting(20.0, low=0.0)  # utterances longer than this are centre-cropped (0: never)
    seed: int = seed_setting()
    # a pretrained teacher (torchaudio state dict file): used as is, nothing trained
    weights: str | None = path_setting("file", missing="no teacher weights at")
    # On real data a teacher without weights is trained from scratch on the corpora here, which teaches little: a run
    # refuses it unless this says it is meant.
    allow_untrained: bool = flag(False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.masked_weight and not self.speaker_weight and self.weights is None:
            raise SettingError("speaker_weight", "masked_weight and speaker_weight are both 0: the teacher would learn "
                                                 "nothing; give one of them a weight")  # fmt: skip


class _TeacherHeads(nn.Module):
    """Training-only parts of the teacher: mask embedding, log-mel predictor, speaker embedding head."""

    def __init__(self, dim: int, layers: int, config: TeacherTrainConfig):
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.randn(dim) * 0.1)
        self.reconstruct = nn.Linear(dim, config.n_mels)
        self.layer_logits = nn.Parameter(torch.zeros(layers))  # softmax-normalised layer weights
        self.fc = nn.Linear(2 * dim, config.embedding_dim)
        self.bn = nn.BatchNorm1d(config.embedding_dim)

    def embed(self, layers: list[torch.Tensor]) -> torch.Tensor:
        x = (torch.softmax(self.layer_logits, 0)[:, None, None, None] * torch.stack(layers)).sum(0)  # [B, T, D]
        stats = torch.cat([x.mean(1), (x.var(1, unbiased=False) + 1e-5).sqrt()], dim=1)
        return self.bn(self.fc(stats))


def _span_mask(batch: int, frames: int, prob: float, span: int, device: torch.device) -> torch.Tensor:
    """[batch, frames] bool on `device`: every frame starts a masked span of `span` frames with probability `prob`."""
    starts = (torch.rand(batch, frames, device=device) < prob).float()
    covered = F.max_pool1d(F.pad(starts[:, None], (span - 1, 0)), span, stride=1)[:, 0]
    return covered > 0


@dataclass
class TeacherParts:
    """Everything a teacher training step touches, on one device."""

    ssl: SslConfig
    model: nn.Module
    heads: _TeacherHeads
    speaker_loss: SpeakerLoss
    mel: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def build_teacher_training(
    ssl: SslConfig, config: TeacherTrainConfig, n_speakers: int, steps: int, device: torch.device
) -> TeacherParts:
    """A randomly initialised teacher, its training-only heads, Adam and its schedule over `steps` steps."""
    model = build_ssl(ssl).to(device)
    heads = _TeacherHeads(ssl.arch()["embed_dim"], ssl.arch()["layers"], config).to(device)
    speaker_loss = SpeakerLoss(config.embedding_dim, n_speakers, "aam", config.aam_margin, config.aam_scale).to(device)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=FRAME_STRIDE, n_mels=config.n_mels,
                                               center=False).to(device)  # fmt: skip
    parameters = [*model.parameters(), *heads.parameters(), *speaker_loss.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine(optimizer, int(config.warmup_fraction * steps), steps)
    return TeacherParts(ssl, model, heads, speaker_loss, mel, optimizer, scheduler)


def teacher_step(
    parts: TeacherParts, config: TeacherTrainConfig, wave: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """One teacher training step on crops [batch, samples] and speaker labels [batch] already on the
    device; returns its losses as detached 0-d tensors on the device."""
    mask = _span_mask(len(wave), num_frames(parts.ssl, wave.shape[1]), config.mask_prob, config.mask_span,
                      wave.device)  # fmt: skip
    layers = hidden_states(parts.model, wave, mask, parts.heads.mask_embedding)
    log_mel = (parts.mel(wave) + 1e-6).log().transpose(1, 2)  # [B, frames, n_mels]
    log_mel = (log_mel - log_mel.mean(1, keepdim=True)) / (log_mel.std(1, keepdim=True) + 1e-5)
    frames = min(log_mel.shape[1], layers[-1].shape[1])
    m = mask[:, :frames].float()
    # L1 over masked frames only, without asking the device whether there are any (0 when none).
    error = (parts.heads.reconstruct(layers[-1][:, :frames]) - log_mel[:, :frames]).abs().mean(dim=2)
    masked = (error * m).sum() / m.sum().clamp(min=1.0)
    spk, _ = parts.speaker_loss(parts.heads.embed(layers), labels)
    loss = config.masked_weight * masked + config.speaker_weight * spk
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parts.optimizer.step()
    parts.scheduler.step()
    return {"masked_loss": masked.detach(), "speaker_loss": spk.detach(), "train_loss": loss.detach()}


def train_ssl_teacher(
    ssl: SslConfig,
    config: TeacherTrainConfig,
    data: SpeakerData,
    on_epoch: Callable[[dict[str, float]], None] = lambda metrics: None,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Train a teacher from scratch; return its torchaudio state dict (on the CPU).

    A stand-in for SSL pretraining that fits a CPU: on the chosen corpora (by default only the
    out-of-domain one, as HuBERT is pretrained on LibriSpeech and never sees VoxCeleb),
    - masked prediction: spans of frames (~35 % of them) have their projected features replaced by a
      learned mask vector, and a linear layer on the last layer predicts those frames' normalised
      log-mel spectrum (L1), so the layers must model the speech around them (Mockingjay-style,
      simpler than HuBERT's k-means targets);
    - speaker classification: AAM-softmax on a mean+std pooling of a softmax-weighted sum of all
      layers (a supervised shortcut to the speaker knowledge a large SSL model picks up; the
      corpus's labels only, never the target domain's unless `domains` includes it).
    on_epoch(metrics) gets the epoch's losses and the teacher's own EER/minDCF on the validation
    trials (the test trials when there are none), from its pooled speaker embedding; after the
    last epoch also test_eer and test_min_dcf.
    """
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    rows = np.flatnonzero(np.isin(data.domains, config.domains) & (data.splits == "train"))
    if len(rows) < 2:
        raise DatasetError(f"{data.directory}: no training utterances in domains {config.domains}")
    speakers = sorted(set(data.speakers[rows].tolist()))
    index = {s: i for i, s in enumerate(speakers)}
    labels = torch.as_tensor([index.get(s, -1) for s in data.speakers])
    steps = sum(1 for _ in range(0, len(rows), config.batch_size)) * config.epochs
    parts = build_teacher_training(ssl, config, len(speakers), steps, device)
    model, heads = parts.model, parts.heads
    crop = int(config.crop_seconds * data.sample_rate)
    eval_split = "val" if "val" in data.trials else "test"

    def embed(waveform: torch.Tensor) -> torch.Tensor:
        return heads.embed(hidden_states(model, waveform))

    metrics: dict[str, float] = {}
    for epoch in range(config.epochs):
        started = time.perf_counter()
        for module in (model, heads, parts.speaker_loss):
            module.train()
        sums = {k: torch.zeros((), device=device) for k in ("masked_loss", "speaker_loss", "train_loss")}
        seen, step = 0, -1
        for step, batch in enumerate(train_batches(rows, config.batch_size)):
            found = teacher_step(parts, config, data.crops(batch, crop).to(device), labels[batch].to(device))
            for key, value in found.items():
                sums[key] += value * len(batch)
            seen += len(batch)
            if (step + 1) % FINITE_CHECK_EVERY == 0:
                check_finite(sums["train_loss"], epoch + 1, step)
        check_finite(sums["train_loss"], epoch + 1, step)
        model.eval()
        heads.eval()
        metrics = score_trials(embed, data, data.trials[eval_split], device, config.eval_max_seconds)
        metrics.update({k: v.item() / max(seen, 1) for k, v in sums.items()})
        metrics.update(epoch=epoch + 1, seconds=time.perf_counter() - started, params=count_parameters(model))
        if epoch + 1 == config.epochs:
            test = metrics if eval_split == "test" else score_trials(embed, data, data.trials["test"], device,
                                                                     config.eval_max_seconds)  # fmt: skip
            metrics.update(test_eer=test["eer"], test_min_dcf=test["min_dcf"], test_min_dcf_p05=test["min_dcf_p05"])
        on_epoch(metrics)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
