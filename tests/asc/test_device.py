"""Every ASC trainable's training step runs with all its tensors on the device of the data.

The steps run on PyTorch's `meta` device under OneDevice (tests/device_check.py): a tensor an
augmentation, a mask or a permutation makes on the CPU fails here as it would on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from tests.device_check import MixedDevices, OneDevice
from trainables.asc.loader import clip_batches
from trainables.asc.student_training import StudentConfig, StudentStep
from trainables.asc.teacher import TeacherConfig, build_teacher
from trainables.asc.teacher_training import teacher_loss

META = torch.device("meta")


def test_the_check_catches_a_cpu_tensor_meeting_the_device():
    spec = torch.zeros(4, 1, 8, 5, device=META)
    with OneDevice(), pytest.raises(MixedDevices):
        spec.masked_fill(torch.zeros(4, 1, 8, 1, dtype=torch.bool), 0.0)  # the frequency-mask bug
    with OneDevice(), pytest.raises(MixedDevices):
        torch.gather(torch.zeros(4, 10, device=META), 1, torch.zeros(4, 10, dtype=torch.long))  # meta alone passes it
    with OneDevice():
        spec * torch.tensor(2.0)  # a CPU scalar is fine, as on CUDA


@pytest.fixture(scope="module")
def impulse_responses(tmp_path_factory):
    folder = tmp_path_factory.mktemp("irs")
    for name, taps in {"short": [1.0, 0.5], "long": [1.0] + [0.0] * 300 + [0.3]}.items():
        soundfile.write(folder / f"{name}.wav", np.asarray(taps, dtype=np.float32), 32000)
    return folder


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_student_step_keeps_every_tensor_on_the_device(tiny_data, impulse_responses, precision):
    # Every augmentation on (DIR with p = 1, Freq-MixStyle with p = 1), and distillation.
    config = StudentConfig(subset=100, batch_size=16, kd_lambda=0.5, mixstyle_p=1.0, freqm=48, roll_sec=0.1,
                           dir_path=str(impulse_responses), dir_prob=1.0, precision=precision)  # fmt: skip
    teacher = np.zeros((len(tiny_data.filenames), len(tiny_data.classes)), dtype=np.float32)
    torch.manual_seed(0)
    device = META if precision == "fp32" else torch.device("cpu")  # autocast knows no meta device
    with OneDevice():
        step = StudentStep.build(config, tiny_data, teacher, device)
        optimizer = torch.optim.AdamW(step.model.parameters(), lr=1e-3)
        batch = next(clip_batches(tiny_data, tiny_data.splits["split100"], config.batch_size, True, device))
        assert (tiny_data.devices[batch.rows] == "a").any(), "DIR must have a device-a clip to convolve"
        loss = step.loss(batch)
        loss.backward()
        optimizer.step()
        logits = step.logits(batch.waveform)
    assert loss.device == device and loss.dim() == 0
    assert logits.shape == (config.batch_size, len(tiny_data.classes)) and logits.device == device
    assert all(p.grad is not None and p.grad.device == device for p in step.model.parameters())


@pytest.mark.parametrize("arch", ["passt_tiny", "cnn"])
def test_a_teacher_step_keeps_every_tensor_on_the_device(tiny_data, arch):
    config = TeacherConfig(arch=arch, embed_dim=32, depth=1, num_heads=2, width=16, freqm=8, timem=8, mixstyle_p=1.0,
                           s_patchout_f=2, s_patchout_t=2, precision="fp32")  # fmt: skip
    torch.manual_seed(0)
    with OneDevice():
        model = build_teacher(config, len(tiny_data.classes)).to(META)
        labels = torch.as_tensor(tiny_data.labels).to(META)
        batch = next(clip_batches(tiny_data, tiny_data.splits["split100"], 8, True, META))
        loss = teacher_loss(model, batch, labels, config, "fp32")
        loss.backward()
        model.eval()
        logits = model.logits(batch.waveform, "fp32")
    assert loss.device == META and logits.shape == (8, len(tiny_data.classes))

