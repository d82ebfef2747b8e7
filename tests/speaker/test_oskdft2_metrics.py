"""EER, minDCF and cosine scoring against hand-worked cases; the curriculum's values along training."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.speaker.curriculum import SCHEDULES, target_share
from trainables.speaker.metrics import cosine_scores, crop_scores, eer, error_rates, min_dcf, verification_metrics


def test_eer_where_the_rates_meet_at_an_operating_point():
    # Targets 0.9, 0.8, 0.3; non-targets 0.7, 0.2, 0.1. Accepting ≥ 0.7 misses one target (0.3) and
    # accepts one non-target (0.7): P_miss = P_fa = 1/3.
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert eer(scores, labels) == pytest.approx(1 / 3)


def test_eer_interpolates_between_operating_points():
    # Targets 0.9, 0.6; non-targets 0.8, 0.1. Operating points (P_fa, P_miss):
    # (0, 1) → ≥0.9: (0, 1/2) → ≥0.8: (1/2, 1/2) → ≥0.6: (1/2, 0) → ≥0.1: (1, 0).
    # The rates are equal at the point (1/2, 1/2) itself.
    assert eer(np.array([0.9, 0.6, 0.8, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.5)
    # All scores tied: one threshold jumps from (0, 1) to (1, 0); the segment crosses at 1/2.
    assert eer(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    # Targets 0.9, 0.5 (tied with a non-target), non-targets 0.5, 0.1: points (0, 1), (0, 1/2),
    # then the tie moves both: (1/2, 0). On the segment (0, 1/2)–(1/2, 0) the rates meet at 1/4.
    assert eer(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.25)


def test_eer_extremes_and_order_independence():
    labels = np.array([1, 1, 0, 0, 0])
    assert eer(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), labels) == 0.0
    assert eer(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), labels) == 1.0
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=50), rng.integers(0, 2, 50)
    order = rng.permutation(50)
    assert eer(scores[order], labels[order]) == pytest.approx(eer(scores, labels))
    with pytest.raises(ValueError, match="both target and non-target"):
        eer(np.array([1.0, 2.0]), np.array([1, 1]))


def test_error_rates_step_through_thresholds():
    p_miss, p_fa = error_rates(np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1]), np.array([1, 1, 1, 0, 0, 0]))
    assert np.allclose(p_miss, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    assert np.allclose(p_fa, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_min_dcf_hand_worked():
    # Same case as the first EER test. Normalised DCF = (0.01 · P_miss + 0.99 · P_fa) / 0.01.
    # Best threshold: accept ≥ 0.8, so P_miss = 1/3, P_fa = 0 → 1/3. Any false alarm costs ≥ 33.
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert min_dcf(scores, labels) == pytest.approx(1 / 3)
    # A perfect separation costs 0; a reversed one costs 1 (reject everything).
    assert min_dcf(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 0])) == 0.0
    assert min_dcf(np.array([1.0, 2.0, 3.0]), np.array([1, 0, 0])) == 1.0
    # p_target 0.5: normaliser 0.5; accept ≥ 0.8 → (0.5/3)/0.5 = 1/3; accept ≥ 0.3 → (0.5/3)/0.5 = 1/3 too.
    assert min_dcf(scores, labels, p_target=0.5) == pytest.approx(1 / 3)
    # With C_fa = 0.5 and p_target = 0.5, accepting everything down to 0.3 costs 0.25 · 1/3 / 0.25.
    assert min_dcf(scores, labels, p_target=0.5, c_fa=0.5) == pytest.approx(1 / 3)
    assert verification_metrics(scores, labels) == {"eer": pytest.approx(1 / 3), "min_dcf": pytest.approx(1 / 3),
                                                    "min_dcf_p05": pytest.approx(1 / 3)}  # fmt: skip


def test_min_dcf_at_both_operating_points():
    # Targets 0.9 and 0.5; 100 non-targets, one of them at 0.6. Accept ≥ 0.9: P_miss = 1/2 → cost 0.5 at any
    # p_target. Accept ≥ 0.5: P_miss = 0, P_fa = 0.01 → 0.99 · 0.01 / 0.01 = 0.99 at p_target 0.01, but
    # 0.95 · 0.01 / 0.05 = 0.19 at VoxSRC's 0.05.
    scores = np.r_[0.9, 0.5, 0.6, np.full(99, 0.1)]
    labels = np.r_[1, 1, np.zeros(100, dtype=int)]
    found = verification_metrics(scores, labels)
    assert found["min_dcf"] == pytest.approx(0.5) and found["min_dcf_p05"] == pytest.approx(0.19)


def test_cosine_scores():
    embeddings = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    scores = cosine_scores(embeddings, np.array([0, 0, 0, 2]), np.array([1, 2, 3, 3]))
    assert np.allclose(scores, [1.0, 0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)], atol=1e-6)


def test_crop_scores_are_the_mean_of_all_cross_pair_cosines():
    torch.manual_seed(0)
    crops = torch.randn(3, 5, 4)  # 3 utterances × 5 crops × 4 dims
    enroll, test = np.array([0, 1, 2]), np.array([1, 2, 2])
    scores = crop_scores(crops, enroll, test)
    for i, (a, b) in enumerate(zip(enroll, test)):
        pairs = [F.cosine_similarity(x, y, dim=0) for x in crops[a] for y in crops[b]]  # the 25 cosines
        assert scores[i] == pytest.approx(torch.stack(pairs).mean().item(), abs=1e-6)


def test_linear_schedule_is_the_papers():
    # OS-KDFT2: p = epoch / 100, i.e. linear from p0 = 1/100 at epoch 1 to 1 at epoch 100.
    for epoch in (1, 2, 50, 99, 100):
        assert target_share("linear", 0.01, epoch, 100) == pytest.approx(epoch / 100)
    values = [target_share("linear", 0.2, e, 5) for e in range(1, 6)]
    assert values == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_every_schedule_starts_at_p0_grows_and_ends_at_one():
    for schedule in SCHEDULES:
        values = [target_share(schedule, 0.1, e, 10) for e in range(1, 11)]
        assert values[0] == pytest.approx(0.1)
        assert all(b >= a for a, b in zip(values, values[1:])), schedule
        assert values[-1] == (0.1 if schedule == "constant" else 1.0)
    cosine = [target_share("cosine", 0.0, e, 5) for e in range(1, 6)]
    quarter, three_quarters = (1 - math.cos(math.pi / 4)) / 2, (1 - math.cos(3 * math.pi / 4)) / 2
    assert cosine == pytest.approx([0.0, quarter, 0.5, three_quarters, 1.0])
    exponential = [target_share("exponential", 0.01, e, 3) for e in range(1, 4)]
    assert exponential == pytest.approx([0.01, 0.1, 1.0])  # geometric: ×10 per epoch
    step = [target_share("step", 0.25, e, 5) for e in range(1, 6)]
    assert step == [0.25, 0.25, 1.0, 1.0, 1.0]  # the middle epoch (s = 0.5) is already on target data
    assert target_share("cosine", 0.3, 1, 1) == 1.0  # a single epoch is the last one


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown schedule"):
        target_share("sigmoid", 0.1, 1, 10)
    with pytest.raises(ValueError, match="p0"):
        target_share("linear", 1.5, 1, 10)
    with pytest.raises(ValueError, match="epoch must be in 1..10"):
        target_share("linear", 0.1, 0, 10)
    with pytest.raises(ValueError, match="p0 > 0"):
        target_share("exponential", 0.0, 2, 10)
