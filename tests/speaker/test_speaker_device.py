"""Every tensor the speaker trainables make lives on the device of their data.

One training step of the SSL teacher and of the OS-KDFT2 student (with its feature tuner, time
masking, layer drop, class-weighted loss) runs on PyTorch's `meta` device: a tensor created on the
CPU and meeting the batch there raises the same "not on the expected device" error a GPU raises,
so this catches on a CPU-only machine what would crash the first GPU batch.
"""

import numpy as np
import pytest
import torch

from trainables.speaker.student_training import OskdftConfig, build_oskdft2, oskdft2_step
from trainables.speaker.teacher import SslConfig, build_teacher
from trainables.speaker.teacher_training import TeacherTrainConfig, build_teacher_training, teacher_step

META = torch.device("meta")
SSL = SslConfig(layers=3, embed_dim=32, heads=2, ffn_dim=64, conv_channels=16, conv_depth=3, pos_conv_kernel=8,
                pos_conv_groups=2)  # fmt: skip


def _on_meta(found: dict[str, torch.Tensor]) -> None:
    assert found and all(v.device == META and v.dim() == 0 for v in found.values()), found


def test_a_cpu_tensor_meeting_meta_data_fails_as_on_a_gpu():
    # What the tests below rely on: meta refuses to mix with a CPU tensor, as CUDA does.
    with pytest.raises(RuntimeError, match="device"):
        torch.randn(2, 3, device=META) * torch.randn(2, 3)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_one_oskdft2_step_on_the_meta_device(family):
    ssl = SslConfig(**{**SSL.as_dict(), "family": family})
    torch.manual_seed(0)
    config = OskdftConfig(teacher=ssl, loss="aam", class_weighted=True, dropout=0.1, layer_drop=0.5,
                          time_mask_prob=0.3, time_mask_span=2, tft_residual=False, cos_reduction="sum")  # fmt: skip
    parts = build_oskdft2(config, build_teacher(ssl).state_dict(), np.array([3, 1, 2, 5]), META)
    parts.train()
    x_kd, x_ft = torch.randn(3, 8000, device=META), torch.randn(3, 8000, device=META)
    labels = torch.tensor([0, 3, 1], device=META)
    _on_meta(oskdft2_step(parts, config, x_kd, x_ft, labels))
    assert parts.speaker_loss.class_weights.device == META
    assert all(p.grad is None or p.grad.device == META for p in parts.model.parameters())


def test_one_teacher_step_on_the_meta_device():
    torch.manual_seed(0)
    config = TeacherTrainConfig(batch_size=3, crop_seconds=0.5, mask_prob=0.3)
    parts = build_teacher_training(SSL, config, n_speakers=4, steps=10, device=META)
    parts.model.train()
    _on_meta(teacher_step(parts, config, torch.randn(3, 8000, device=META), torch.tensor([0, 3, 1], device=META)))
