"""The seed systems' knowledge-distillation loss.

    loss = λ · CE(student, labels) + (1 − λ) · T² · KL(softmax(teacher/T) ‖ softmax(student/T))

λ (`kd_lambda`, in [0, 1]) weights the *label* loss, as in CP-JKU DCASE23 and the NTU DCASE24
systems; λ = 1 is plain supervised training.

KL reduction: the element-wise KL terms are averaged over batch *and* classes (torch's
`reduction="mean"`), exactly as the seeds do. That is 1/n_classes of the usual "batchmean" KL,
so the seed defaults T = 2, λ = 0.02 keep their meaning here (effective weights 0.02 on CE and
0.392 on batchmean-KL/10 · T²). A reimplementation with batchmean KL would need λ ≈ 0.17 to match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 2.0
DEFAULT_KD_LAMBDA = 0.02
# T² multiplies the KL term and logits / T enter the softmax: at T = 1e300 the first overflows, at T = 1e-300 the
# second. Published KD uses T in 1–20; [0.1, 100] leaves room around that and keeps both finite in fp16 too.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 100.0


def kd_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    temperature: float = DEFAULT_TEMPERATURE,
    kd_lambda: float = DEFAULT_KD_LAMBDA,
) -> torch.Tensor:
    """Scalar loss for a batch; `teacher_logits` may be None only when kd_lambda == 1."""
    label_loss = F.cross_entropy(student_logits, labels)
    if kd_lambda >= 1.0:
        return label_loss
    if teacher_logits is None:
        raise ValueError("kd_lambda < 1 needs teacher logits")
    student_log_p = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(student_log_p, teacher_log_p, reduction="mean", log_target=True)
    return kd_lambda * label_loss + (1.0 - kd_lambda) * temperature**2 * kl
