"""OS-KDFT2's losses: DistilHuBERT's distillation loss and the speaker losses (softmax or AAM softmax)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables.settings import Rule

COS_REDUCTIONS = ("mean", "sum")
# AAM's margin, radians: past a right angle the true speaker's logit cos(θ + margin) is never positive.
AAM_MARGIN = Rule(low=0.0, high=math.pi / 2, high_open=True)
LOSSES = ("softmax", "aam")  # the speaker loss: cross-entropy over speakers, or additive angular margin


def distill_loss(
    predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], cos_weight: float = 1.0,
    cos_reduction: str = "mean",
) -> torch.Tensor:  # fmt: skip
    """DistilHuBERT's loss: Σ_heads [L1 − cos_weight · log σ(cos)], averaged over the batch.

    Per head and utterance the L1 term is averaged over frames and features. The cosine term is
    - `cos_reduction="mean"`: averaged over frames, as s3prl's DistilHuBERT does; the loss then does
      not depend on the crop length;
    - `"sum"`: summed over frames, as OS-KDFT's and OS-KDFT2's released code does
      (`cos_loss.sum(dim=2)`). That is the "mean" loss with cos_weight multiplied by the frame count
      (149 at 3 s), so the cosine term outweighs the L1 term and the speaker loss by that factor;
      its floor is ≈ 0.313 · frames per head. Raising kd_weight does not reproduce it (that scales
      the L1 term too): use "sum" for the reference's balance.
    """
    if cos_reduction not in COS_REDUCTIONS:
        raise ValueError(f"unknown cos_reduction {cos_reduction!r}; expected mean or sum")
    total = predictions[0].new_zeros(predictions[0].shape[0])
    for prediction, target in zip(predictions, targets, strict=True):
        frames = min(prediction.shape[1], target.shape[1])
        prediction, target = prediction[:, :frames], target[:, :frames]
        l1 = (prediction - target).abs().mean(dim=(1, 2))
        log_sigmoid = F.logsigmoid(F.cosine_similarity(prediction, target, dim=-1))
        cosine = log_sigmoid.sum(dim=1) if cos_reduction == "sum" else log_sigmoid.mean(dim=1)
        total = total + l1 - cos_weight * cosine
    return total.mean()


class SpeakerLoss(nn.Module):
    """Speaker classification over the training speakers: softmax CE, or AAM-softmax.

    AAM (ArcFace): logits = scale · cos(θ_y + margin) for the true speaker and scale · cos θ_j
    for the others, θ the angle between embedding and class weight. Where θ_y + margin would pass
    π the target logit falls back to cos θ_y − margin · sin(margin), which keeps it monotonic.

    class_weights [n_classes]: the cross-entropy weights each utterance by its speaker's weight
    (PyTorch's weighted mean, divided by the batch's summed weights), as OS-KDFT2's CCE with
    weight = N / N_speaker does; None: unweighted.
    """

    def __init__(
        self, embedding_dim: int, n_classes: int, kind: str = "softmax", margin: float = 0.2, scale: float = 30.0,
        class_weights: torch.Tensor | None = None,
    ):  # fmt: skip
        super().__init__()
        if kind not in ("softmax", "aam"):
            raise ValueError(f"unknown speaker loss {kind!r}; expected softmax or aam")
        self.kind, self.margin, self.scale = kind, margin, scale
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(n_classes)) if kind == "softmax" else None
        # A buffer, so it follows the module to the data's device; not saved (it is derived from the data).
        self.register_buffer("class_weights", class_weights, persistent=False)

    def logits(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "softmax":
            return F.linear(embedding, self.weight, self.bias)
        cosine = F.linear(F.normalize(embedding), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        if labels is None:
            return self.scale * cosine
        sine = (1.0 - cosine**2).sqrt()
        with_margin = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        with_margin = torch.where(cosine > math.cos(math.pi - self.margin), with_margin,
                                  cosine - self.margin * math.sin(self.margin))  # fmt: skip
        one_hot = F.one_hot(labels, cosine.shape[1]).bool()
        return self.scale * torch.where(one_hot, with_margin, cosine)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy of the margin-free logits) for embeddings [batch, dim] and labels [batch]."""
        loss = F.cross_entropy(self.logits(embedding, labels), labels, weight=self.class_weights)
        with torch.no_grad():
            accuracy = (self.logits(embedding).argmax(dim=1) == labels).float().mean()
        return loss, accuracy
