"""Speaker-verification figures: EER, minDCF, and cosine scoring of utterance embeddings.

Scores are higher for "same speaker"; labels are 1 (target trial) or 0 (non-target trial).

- `eer`: the equal error rate, a fraction in [0, 1]. The miss and false-alarm rates are taken at
  every distinct score threshold, joined by straight lines (the ROC curve as sklearn's roc_curve
  gives it), and the EER is where the two rates cross on those lines, as in the usual
  `brentq(interp1d(...))` recipe.
- `min_dcf`: NIST's normalised minimum detection cost,
  min over thresholds of (C_miss · P_miss · p_target + C_fa · P_fa · (1 − p_target)) /
  min(C_miss · p_target, C_fa · (1 − p_target)), with C_miss = C_fa = 1 and p_target = 0.01 (NIST
  SRE 2016–2018's operating point, the one most VoxCeleb papers report, e.g. ECAPA-TDNN's).
  `min_dcf_p05` is the same with p_target = 0.05, the VoxSRC challenges' (and the voxceleb_trainer's
  default). 1.0 is the cost of rejecting every trial; a useful system is below it.

Scoring (trials: enrolment utterance, test utterance):
- `cosine_scores`: cosine of the two utterances' embeddings (full utterances);
- `crop_scores`: the mean of the K × K cosines between the K crop embeddings of each side
  (OS-KDFT2's test-time augmentation score, K = 5 crops of 3 s).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def error_rates(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_miss, P_fa) when accepting scores ≥ each distinct threshold, from "reject all" to "accept all"."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("scoring needs both target and non-target trials")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # Tied scores are one threshold: keep the last position of each run of equal scores.
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    accepted_targets = np.cumsum(labels)[last_of_tie]
    accepted_nontargets = np.cumsum(~labels)[last_of_tie]
    p_miss = np.r_[1.0, 1.0 - accepted_targets / labels.sum()]
    p_fa = np.r_[0.0, accepted_nontargets / (~labels).sum()]
    return p_miss, p_fa


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    p_miss, p_fa = error_rates(scores, labels)
    # p_miss falls and p_fa rises along the curve: find the first point where p_fa ≥ p_miss.
    i = int(np.argmax(p_fa >= p_miss))
    if i == 0:
        return float(p_fa[0])
    gap_before, gap_after = p_miss[i - 1] - p_fa[i - 1], p_miss[i] - p_fa[i]
    t = gap_before / (gap_before - gap_after)
    return float(p_fa[i - 1] + t * (p_fa[i] - p_fa[i - 1]))


def min_dcf(
    scores: np.ndarray, labels: np.ndarray, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    p_miss, p_fa = error_rates(scores, labels)
    cost = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def cosine_scores(embeddings: torch.Tensor, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Cosine similarity of embeddings[enroll[i]] and embeddings[test[i]] for every trial i."""
    normed = F.normalize(embeddings.float(), dim=1)
    enroll_t, test_t = torch.as_tensor(enroll, dtype=torch.long), torch.as_tensor(test, dtype=torch.long)
    return (normed[enroll_t] * normed[test_t]).sum(dim=1).cpu().numpy()


def crop_scores(crops: torch.Tensor, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Mean of the K × K cosines between crops[enroll[i]] and crops[test[i]] ([utterances, K, dim]) per trial.

    The mean of all cross-pair cosines equals the dot product of the two mean unit vectors.
    """
    centroids = F.normalize(crops.float(), dim=2).mean(dim=1)
    enroll_t, test_t = torch.as_tensor(enroll, dtype=torch.long), torch.as_tensor(test, dtype=torch.long)
    return (centroids[enroll_t] * centroids[test_t]).sum(dim=1).cpu().numpy()


def verification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"eer": eer(scores, labels), "min_dcf": min_dcf(scores, labels),
            "min_dcf_p05": min_dcf(scores, labels, p_target=0.05)}  # fmt: skip
