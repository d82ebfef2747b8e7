"""Speaker-verification scoring of an embedding model: whole utterances or crops, EER and minDCF over trials."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from trainables.speaker.data import SpeakerData, Trials
from trainables.speaker.metrics import cosine_scores, crop_scores, verification_metrics

EVAL_SCORES = ("full", "crops", "fused")


@torch.no_grad()
def embed_utterances(
    embed: Callable[[torch.Tensor], torch.Tensor], data: SpeakerData, rows: np.ndarray, device: torch.device,
    max_seconds: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Embeddings [len(rows), dim] (on the CPU) of whole utterances, one at a time (their lengths differ)."""
    limit = int(max_seconds * data.sample_rate)
    out = []
    for row in rows:
        wave = data.utterance(int(row))
        if limit and len(wave) > limit:
            start = (len(wave) - limit) // 2
            wave = wave[start : start + limit]
        out.append(embed(wave.unsqueeze(0).to(device)).float().cpu())
    return torch.cat(out)


def spaced_crops(wave: torch.Tensor, crops: int, samples: int) -> torch.Tensor:
    """[crops, samples]: windows starting at evenly spaced positions from the start to the end of `wave`
    (numpy's linspace, as OS-KDFT2's test-time augmentation); a shorter utterance is first repeated
    end to end to `samples`."""
    if len(wave) < samples:
        wave = wave.repeat(samples // len(wave) + 1)[:samples]
    starts = np.linspace(0, len(wave) - samples, crops).astype(np.int64)
    return torch.stack([wave[s : s + samples] for s in starts])


@torch.no_grad()
def embed_crops(
    embed: Callable[[torch.Tensor], torch.Tensor], data: SpeakerData, rows: np.ndarray, device: torch.device,
    crops: int, samples: int, batch_size: int = 100,
) -> torch.Tensor:  # fmt: skip
    """Embeddings [len(rows), crops, dim] (on the CPU) of `spaced_crops` of each utterance; the crops of
    several utterances go through the model together (about `batch_size` crops a batch: in eval mode
    every crop's embedding is independent of the others in its batch)."""
    per_batch = max(1, batch_size // crops)
    out = []
    for start in range(0, len(rows), per_batch):
        waves = [spaced_crops(data.utterance(int(row)), crops, samples) for row in rows[start : start + per_batch]]
        out.append(embed(torch.cat(waves).to(device)).float().cpu().view(len(waves), crops, -1))
    return torch.cat(out)


def score_trials(
    embed: Callable[[torch.Tensor], torch.Tensor], data: SpeakerData, trials: Trials, device: torch.device,
    max_seconds: float = 0.0, score: str = "full", crops: int = 5, crop_seconds: float = 3.0,
) -> dict[str, float]:  # fmt: skip
    """EER and minDCF over a trial list, scored by `score`:
    full: cosine of full-utterance embeddings (centre-cropped to `max_seconds` unless 0);
    crops: the mean of the crops × crops cosines of `crops` evenly spaced crops of `crop_seconds`;
    fused: the mean of the two, OS-KDFT2's final evaluation."""
    rows = trials.rows()
    enroll, test = np.searchsorted(rows, trials.enroll), np.searchsorted(rows, trials.test)
    parts = []
    if score in ("full", "fused"):
        parts.append(cosine_scores(embed_utterances(embed, data, rows, device, max_seconds), enroll, test))
    if score in ("crops", "fused"):
        found = embed_crops(embed, data, rows, device, crops, int(crop_seconds * data.sample_rate))
        parts.append(crop_scores(found, enroll, test))
    return verification_metrics(np.mean(parts, axis=0), trials.labels)
