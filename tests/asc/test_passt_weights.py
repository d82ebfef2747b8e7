"""The standard PaSST-S teacher takes AudioSet weights from a local file (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch
from hear21passt.models import passt as passt_module

from trainables.asc.teacher import STANDARD_ARCH, PasstTeacher, TeacherConfig, load_audioset_weights


@pytest.fixture(scope="module")
def audioset_file(tmp_path_factory):
    """A checkpoint shaped like passt-s-f128-p16-s10-ap.476-swa.pt: 527-class heads, 10-s positional embedding."""
    torch.manual_seed(0)
    net = passt_module.get_model(arch=STANDARD_ARCH, pretrained=False, n_classes=527)
    path = tmp_path_factory.mktemp("weights") / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_backbone_loads_and_heads_start_fresh(audioset_file):
    path, reference = audioset_file
    teacher = PasstTeacher(TeacherConfig(arch=STANDARD_ARCH, weights=str(path)), n_classes=10)
    state = teacher.net.state_dict()
    assert torch.equal(state["blocks.11.mlp.fc2.weight"], reference["blocks.11.mlp.fc2.weight"])
    assert torch.equal(state["head.0.weight"], reference["head.0.weight"]), "the head's LayerNorm is kept"
    assert state["head.1.weight"].shape == (10, 768)
    assert torch.equal(state["time_new_pos_embed"], reference["time_new_pos_embed"]), "all 10 s of it, 99 patches"
    logits = teacher.eval()(torch.randn(2, 32000))
    assert logits.shape == (2, 10)


def test_training_takes_a_random_window_of_the_time_embedding(audioset_file):
    path, _ = audioset_file
    teacher = PasstTeacher(TeacherConfig(arch=STANDARD_ARCH, weights=str(path)), n_classes=10)
    embedding = teacher.net.time_new_pos_embed.detach()
    patches = torch.zeros(1, embedding.shape[1], 12, 9)  # a 1-s clip: 12 frequency × 9 time patches
    windows = set()
    teacher.train()
    torch.manual_seed(0)
    for _ in range(20):
        # What hear21passt then adds: the first 9 patches. Their sum must be some window of 9.
        used = teacher._time_window(None, (), patches) + embedding[..., :9]
        offsets = [o for o in range(99 - 9 + 1) if torch.allclose(used[:, :, :1], embedding[..., o : o + 9])]
        assert len(offsets) == 1
        windows.add(offsets[0])
    assert len(windows) > 5, "the window moves"
    teacher.eval()
    assert torch.equal(teacher._time_window(None, (), patches), patches), "evaluation keeps the first patches"


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"some.layer.weight": torch.zeros(3)}, path)
    net = passt_module.get_model(arch=STANDARD_ARCH, pretrained=False, n_classes=10, input_tdim=101)
    with pytest.raises(ValueError, match="does not fit"):
        load_audioset_weights(net, path)
