import math

import pytest
import torch

from trainables.asc.losses import kd_loss


def _softmax(values, t):
    exps = [math.exp(v / t) for v in values]
    return [e / sum(exps) for e in exps]


def test_matches_a_hand_computation():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
    teacher = torch.tensor([[1.5, 1.0, -0.5], [-0.2, 2.0, 0.1]])
    labels = torch.tensor([0, 2])
    t, lam = 3.0, 0.25
    ce = 0.0
    for row, label in zip(student.tolist(), labels.tolist()):
        ce += -math.log(_softmax(row, 1.0)[label])
    ce /= 2
    kl_terms = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = _softmax(t_row, t), _softmax(s_row, t)
        kl_terms += [pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)]
    kl_mean = sum(kl_terms) / len(kl_terms)  # averaged over batch AND classes, as the seeds do
    expected = lam * ce + (1 - lam) * t**2 * kl_mean
    assert kd_loss(student, labels, teacher, t, lam).item() == pytest.approx(expected, rel=1e-5)


def test_lambda_one_is_plain_cross_entropy_and_needs_no_teacher():
    student = torch.randn(4, 10)
    labels = torch.tensor([1, 2, 3, 4])
    expected = torch.nn.functional.cross_entropy(student, labels)
    assert kd_loss(student, labels, None, 2.0, 1.0).item() == pytest.approx(expected.item())


def test_lambda_zero_ignores_labels_and_vanishes_when_student_equals_teacher():
    logits = torch.randn(5, 10)
    a = kd_loss(logits, torch.zeros(5, dtype=torch.long), logits, 2.0, 0.0)
    b = kd_loss(logits, torch.full((5,), 7), logits, 2.0, 0.0)
    assert a.item() == pytest.approx(0.0, abs=1e-6) and b.item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_required_below_lambda_one():
    with pytest.raises(ValueError):
        kd_loss(torch.randn(2, 10), torch.tensor([0, 1]), None, 2.0, 0.5)
