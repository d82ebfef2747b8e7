"""The OS-KDFT2 networks: teacher and student built with torchaudio, the student's initialisation,
the distillation loss, the TFT and the speaker losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.common import count_parameters
from trainables.speaker.losses import SpeakerLoss, distill_loss
from trainables.speaker.student import (
    PredictionHeads,
    SpeakerStudent,
    SslStudent,
    StudentMasking,
    TargetTaskFeatureTuner,
    TftConfig,
    default_target_layers,
    init_student_from_teacher,
)  # fmt: skip
from trainables.speaker.teacher import (
    SslConfig,
    build_ssl,
    build_teacher,
    conv_stack,
    hidden_states,
    load_ssl_state_dict,
    num_frames,
)  # fmt: skip

TINY = dict(layers=4, embed_dim=32, heads=2, ffn_dim=64, conv_channels=16, conv_depth=3, pos_conv_kernel=8,
            pos_conv_groups=2)  # fmt: skip


def _teacher(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_teacher(SslConfig(family=family, **TINY))


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_student_starts_as_the_teachers_first_two_layers(family):
    torch.set_num_threads(1)
    config = SslConfig(family=family, **TINY)
    teacher = _teacher(family)
    torch.manual_seed(1)  # the student's own random init differs from the teacher's
    student = SslStudent(config, layers=2)
    init_student_from_teacher(student, teacher, (0, 1))
    mine, theirs = student.ssl.state_dict(), teacher.state_dict()
    prefixes = ("feature_extractor.", "encoder.feature_projection.", "encoder.transformer.pos_conv_embed.",
                "encoder.transformer.layer_norm.", "encoder.transformer.layers.0.", "encoder.transformer.layers.1.")
    for key, value in mine.items():
        assert any(key.startswith(p) for p in prefixes), f"unexpected student parameter {key}"
        assert torch.equal(value, theirs[key]), key  # student layer i is teacher layer i, parameter by parameter
    assert len(student.ssl.encoder.transformer.layers) == 2
    # And so its hidden states are the teacher's layers 1 and 2 (HF numbering).
    wave = torch.randn(2, 16000)
    student.eval()
    with torch.no_grad():
        ours, reference = student(wave), teacher.extract_features(wave)[0]
    assert len(ours) == 2 and ours[0].shape == (2, num_frames(config, 16000), 32)
    for a, b in zip(ours, reference[:2]):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_student_can_copy_other_layers_and_skip_positional(family):
    config = SslConfig(family=family, **TINY)
    teacher = _teacher(family)
    student = SslStudent(config, layers=2)
    init_student_from_teacher(student, teacher, (2, 3), copy_positional=False)
    theirs = teacher.encoder.transformer.layers
    for i, j in ((0, 2), (1, 3)):
        for name, value in student.ssl.encoder.transformer.layers[i].state_dict().items():
            # WavLM's relative-position table lives in layer 0 only: the student's first layer takes it from there.
            source = theirs[0] if "rel_attn_embed" in name else theirs[j]
            assert torch.equal(value, source.state_dict()[name]), name
    ln_student = student.ssl.encoder.transformer.layer_norm.weight
    assert torch.equal(ln_student, torch.ones_like(ln_student)), "random-init layer norm kept"
    with pytest.raises(ValueError, match="3 teacher layers for a 2-layer student"):
        init_student_from_teacher(student, teacher, (0, 1, 2))


def test_hidden_states_match_torchaudio_and_masking_changes_only_masked_input():
    teacher = _teacher("hubert")
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        ours = hidden_states(teacher, wave)
        reference, _ = teacher.extract_features(wave)
        assert all(torch.allclose(a, b) for a, b in zip(ours, reference))
        mask = torch.zeros(2, ours[0].shape[1], dtype=torch.bool)
        same = hidden_states(teacher, wave, mask, torch.zeros(32))
        assert torch.allclose(same[-1], ours[-1])
        mask[0, 3:6] = True
        masked = hidden_states(teacher, wave, mask, torch.zeros(32))
        assert not torch.allclose(masked[-1][0], ours[-1][0]) and torch.allclose(masked[-1][1], ours[-1][1])


def test_front_end_strides_and_base_sizes():
    for depth in range(2, 8):
        stack = conv_stack(8, depth)
        assert len(stack) == depth and math.prod(s for _, _, s in stack) == 320
    assert conv_stack(512, 7) == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert num_frames(SslConfig(size="base"), 48000) == 149  # 3 s → 149 frames, as HuBERT gives
    base = SslConfig(family="hubert", size="base")
    assert count_parameters(build_ssl(base)) == 94_370_944  # torchaudio's hubert_base
    assert count_parameters(SslStudent(base, 2)) == 23_492_224  # the DistilHuBERT-shaped 2-layer student
    assert default_target_layers(12) == (4, 8, 12) and default_target_layers(4) == (2, 3, 4)
    with pytest.raises(ValueError, match="family: must be one of"):
        SslConfig(family="whisper")
    with pytest.raises(ValueError, match="multiple of heads"):
        SslConfig(embed_dim=30, heads=4)


def test_distill_loss_is_frame_averaged_l1_minus_log_sigmoid_cosine():
    torch.manual_seed(0)
    target = torch.randn(3, 7, 5)
    # A perfect prediction: L1 = 0, cos = 1, so each head costs −log σ(1), whatever the frame count.
    perfect = distill_loss([target, target], [target, target])
    assert perfect.item() == pytest.approx(-2 * math.log(1 / (1 + math.exp(-1))), rel=1e-5)
    longer = torch.randn(3, 70, 5)
    assert distill_loss([longer], [longer]).item() == pytest.approx(perfect.item() / 2, rel=1e-5)
    prediction = torch.randn(3, 7, 5)
    expected = ((prediction - target).abs().mean(dim=(1, 2))
                - F.logsigmoid(F.cosine_similarity(prediction, target, dim=-1)).mean(dim=1)).mean()  # fmt: skip
    assert distill_loss([prediction], [target]).item() == pytest.approx(expected.item(), rel=1e-6)
    assert distill_loss([prediction], [target], cos_weight=0.0).item() == pytest.approx(
        (prediction - target).abs().mean().item(), rel=1e-6)  # fmt: skip
    heads = PredictionHeads(5, 3)
    assert [p.shape for p in heads(prediction)] == [torch.Size([3, 7, 5])] * 3


def test_summed_cosine_term_is_the_references_and_scales_with_frames():
    torch.manual_seed(0)
    prediction, target = torch.randn(3, 149, 5), torch.randn(3, 149, 5)  # 149 frames: a 3-s crop
    summed = distill_loss([prediction], [target], cos_reduction="sum")
    # OS-KDFT2's cos_loss.sum(dim=2): the frame-averaged loss with cos_weight = frames, not a larger kd_weight.
    assert summed.item() == pytest.approx(distill_loss([prediction], [target], cos_weight=149.0).item(), rel=1e-5)
    expected = ((prediction - target).abs().mean(dim=(1, 2))
                - F.logsigmoid(F.cosine_similarity(prediction, target, dim=-1)).sum(dim=1)).mean()  # fmt: skip
    assert summed.item() == pytest.approx(expected.item(), rel=1e-6)
    floor = distill_loss([target], [target], cos_reduction="sum")  # a perfect prediction: −149 · log σ(1)
    assert floor.item() == pytest.approx(149 * 0.31326, rel=1e-4)
    with pytest.raises(ValueError, match="cos_reduction"):
        distill_loss([target], [target], cos_reduction="max")


@pytest.mark.parametrize("residual", [True, False])
def test_tft_tuner_residual_is_a_setting(residual):
    torch.manual_seed(0)
    tft = TargetTaskFeatureTuner(24, 2, TftConfig(embedding_dim=8, residual=residual)).eval()
    x = torch.randn(2, 5, 24)
    tuner = tft.tuners[0]
    with torch.no_grad():
        bare = tuner.up(F.gelu(tuner.down(x)))  # OS-KDFT2's DistTuner: up(gelu(down(x)))
        assert torch.allclose(tuner(x), x + bare if residual else bare)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_layer_drop_and_time_masking_act_only_in_training(family):
    torch.manual_seed(0)
    config = SslConfig(family=family, **TINY)
    student = SslStudent(config, layers=2, layer_drop=1.0)  # every droppable layer dropped while training
    wave = torch.randn(2, 16000)
    masking = StudentMasking(32, prob=0.05, span=10, min_spans=2)
    with torch.no_grad():
        student.eval()
        clean = student(wave, masking)
        assert all(torch.equal(a, b) for a, b in zip(clean, hidden_states(student.ssl, wave))), "eval: no drop, no mask"
        student.train()
        dropped = student(wave)
    assert not torch.allclose(dropped[-1], clean[-1])
    if family == "hubert":  # both layers skipped: each output is the transformer's input
        assert torch.equal(dropped[0], dropped[1])
    else:  # WavLM's layer 0 makes the position bias the others reuse: never skipped
        assert torch.allclose(dropped[0], dropped[1])
    # HuBERT base's masking of a 3-s crop (149 frames): max(2, ⌊0.745 + u⌋) = 2 spans of 10 at distinct starts.
    mask = masking.mask(64, 149, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask.shape == (64, 149)
    assert ((mask.sum(dim=1) >= 11) & (mask.sum(dim=1) <= 20)).all() and not torch.equal(mask[0], mask[1])
    many = StudentMasking(32, prob=0.5, span=4, min_spans=0).mask(8, 100, torch.device("cpu"))
    assert many.float().mean() > 0.3, "12–13 spans of 4 frames"


def test_class_weighted_cross_entropy():
    torch.manual_seed(0)
    embedding, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 0, 2])
    weights = torch.tensor([10 / 6, 10 / 1, 10 / 3])  # N / N_speaker for 6, 1 and 3 training utterances
    for kind in ("softmax", "aam"):
        plain = SpeakerLoss(8, 3, kind)
        weighted = SpeakerLoss(8, 3, kind, class_weights=weights)
        weighted.load_state_dict(plain.state_dict())  # the weights are derived data, not saved state
        per_utterance = F.cross_entropy(plain.logits(embedding, labels), labels, reduction="none")
        expected = (weights[labels] * per_utterance).sum() / weights[labels].sum()
        assert weighted(embedding, labels)[0].item() == pytest.approx(expected.item(), rel=1e-5)
        assert plain(embedding, labels)[0].item() == pytest.approx(per_utterance.mean().item(), rel=1e-5)


def test_tft_embeds_and_attends_across_layers():
    torch.manual_seed(0)
    tft = TargetTaskFeatureTuner(96, 2, TftConfig(embedding_dim=16))
    layers = [torch.randn(4, 10, 96), torch.randn(4, 10, 96)]
    assert tft(layers).shape == (4, 16)
    assert tft.tuners[0].down.out_features == 8 and tft.attention[0][0].out_channels == 12  # width/12, width/8
    tft.eval()
    with torch.no_grad():
        a = tft(layers)
        assert torch.equal(a, tft(layers)), "no noise in eval mode"
        changed = tft([layers[0], layers[1] + 1.0])
    assert not torch.allclose(a, changed), "both layers feed the embedding"
    tft.train()
    with torch.no_grad():
        assert not torch.equal(tft(layers), tft(layers)), "training-time noise in the tuners"


def test_speaker_losses():
    torch.manual_seed(0)
    embedding, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    softmax = SpeakerLoss(8, 3, "softmax")
    loss, accuracy = softmax(embedding, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(embedding @ softmax.weight.T + softmax.bias, labels).item())
    aam = SpeakerLoss(8, 3, "aam", margin=0.2, scale=30.0)
    cosine = F.normalize(embedding) @ F.normalize(aam.weight).T
    logits = aam.logits(embedding, labels)
    theta = torch.acos(cosine[torch.arange(6), labels])
    assert torch.allclose(logits[torch.arange(6), labels], 30 * torch.cos(theta + 0.2), atol=1e-4)
    other = torch.ones_like(logits, dtype=torch.bool)
    other[torch.arange(6), labels] = False
    assert torch.allclose(logits[other], 30 * cosine[other], atol=1e-5)
    assert aam(embedding, labels)[0] > F.cross_entropy(30 * cosine, labels), "the margin makes it harder"
    with pytest.raises(ValueError, match="unknown speaker loss"):
        SpeakerLoss(8, 3, "triplet")


def test_speaker_student_and_weight_files(tmp_path):
    config = SslConfig(**TINY)
    teacher = _teacher("hubert")
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": teacher.state_dict()}, path)
    loaded = load_ssl_state_dict(path)
    assert all(torch.equal(loaded[k], v) for k, v in teacher.state_dict().items())
    rebuilt = build_teacher(config, loaded)
    assert not any(p.requires_grad for p in rebuilt.parameters()) and not rebuilt.training
    with pytest.raises(ValueError, match="do not fit"):
        build_teacher(SslConfig(**{**TINY, "embed_dim": 48}), loaded)
    (tmp_path / "hf").mkdir()
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs the `transformers` package"):
            load_ssl_state_dict(tmp_path / "hf")
    model = SpeakerStudent(config, 2, TftConfig(embedding_dim=12)).eval()
    assert model(torch.randn(3, 8000)).shape == (3, 12)
