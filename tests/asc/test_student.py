import torch

from trainables.asc.frontend import LogMel
from trainables.asc.student import Student, StudentArch, count_macs, make_divisible
from trainables.common import count_parameters


def test_baseline_size_matches_the_published_table():
    model = Student()
    assert count_parameters(model) == 61_148
    assert count_macs(model, (1, 1, 256, 65)) == 29_419_156


def test_front_end_turns_one_second_into_256_by_65():
    spec = LogMel()(torch.randn(2, 32000))
    assert spec.shape == (2, 1, 256, 65)
    assert torch.isfinite(spec).all()


def test_forward_gives_class_logits_and_width_changes_size():
    model = Student().eval()
    assert model(torch.randn(3, 1, 256, 65)).shape == (3, 10)
    wider = Student(StudentArch(base_channels=40))
    assert count_parameters(wider) > 61_148


def test_make_divisible_rounds_to_multiples_of_eight():
    assert make_divisible(32 * 1.8) == 56
    assert make_divisible(32 * 1.8**2) == 104
    assert make_divisible(32 * 2.1) == 64
    assert make_divisible(56 * 2.1) == 120
