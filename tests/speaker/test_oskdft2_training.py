"""OS-KDFT2 training is plain PyTorch: the teacher and the one-step student trained here directly."""

import numpy as np
import pytest
import torch

from trainables.common import NonFiniteLoss, count_parameters
from trainables.speaker.data import load_prepared
from trainables.speaker.evaluation import embed_crops, embed_utterances, spaced_crops
from trainables.speaker.student_training import OskdftConfig, build_oskdft2, load_speaker_student, train_oskdft2
from trainables.speaker.synthetic import SyntheticSpeakerConfig, generate
from trainables.speaker.teacher import SslConfig, build_teacher
from trainables.speaker.teacher_training import TeacherTrainConfig, train_ssl_teacher

SSL = SslConfig(layers=3, embed_dim=32, heads=2, ffn_dim=64, conv_channels=16, conv_depth=3, pos_conv_kernel=8,
                pos_conv_groups=2)  # fmt: skip
DATA = SyntheticSpeakerConfig(seed=2, train_speakers=4, train_utterances=4, val_speakers=0, test_speakers=3,
                              test_utterances=3, ood_speakers=3, ood_utterances=3, min_seconds=1.0, max_seconds=1.5,
                              trials_per_speaker=2)  # fmt: skip
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("oskdft2") / "data"
    generate(DATA, directory)
    return load_prepared(directory)


@pytest.fixture(scope="module")
def teacher_state(data):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_teacher(SSL).state_dict()


def _config(**overrides):
    return OskdftConfig(**{"teacher": SSL, "epochs": 2, "batch_size": 8, "crop_seconds": 0.5, "lr": 2e-3, **overrides})


def _train(config, data, teacher, resume=None):
    reports = []
    train_oskdft2(config, data, teacher, lambda m, c: reports.append((m, c())), resume=resume, device=CPU)
    return reports


def test_one_step_losses_fall_on_tiny_data(data, teacher_state):
    torch.set_num_threads(1)
    # 16 training utterances in batches of 4: 32 steps, each training both branches.
    config = _config(epochs=8, batch_size=4, crop_seconds=1.0, lr=1e-3, p0=0.5, schedule="constant", tft_noise=False)
    reports = _train(config, data, teacher_state)
    kd = [m["kd_loss"] for m, _ in reports]
    ft = [m["ft_loss"] for m, _ in reports]
    total = [m["train_loss"] for m, _ in reports]
    assert all(b < a for a, b in zip(kd, kd[1:])), f"distillation loss falls every epoch: {kd}"
    assert np.mean(ft[-3:]) < 0.85 * np.mean(ft[:3]), f"speaker loss falls (noisily, 4 speakers): {ft}"
    assert total[-1] < 0.85 * total[0], total
    assert all(m["target_share"] == 0.5 for m, _ in reports)


def test_reports_metrics_checkpoints_and_resumes_exactly(data, teacher_state, tmp_path):
    torch.set_num_threads(1)
    config = _config(p0=0.0, loss="aam")
    straight = _train(config, data, teacher_state)
    assert [m["epoch"] for m, _ in straight] == [1, 2]
    assert [m["target_share"] for m, _ in straight] == [0.0, 1.0]  # linear curriculum, 1 at the last epoch
    first, last = straight[0][0], straight[-1][0]
    for key in ["eer", "min_dcf", "kd_loss", "ft_loss", "train_loss", "target_share", "epoch", "student_params",
                "teacher_params"]:  # fmt: skip
        assert key in first and np.isfinite(first[key]), key
    assert 0.0 <= first["eer"] <= 1.0 and 0.0 <= first["min_dcf"] <= 1.0
    assert first["kd_target_fraction"] == 0.0 and last["kd_target_fraction"] == 1.0
    assert "test_eer" not in first and last["test_eer"] == last["eer"], "no val trials: figures are the test trials'"
    assert first["teacher_params"] == count_parameters(build_teacher(SSL))

    resumed = _train(config, data, teacher_state, resume=straight[0][1]["train_state"])
    assert [m["epoch"] for m, _ in resumed] == [2]
    a, b = straight[-1][1]["student"]["state_dict"], resumed[-1][1]["student"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resuming after epoch 1 gives the same weights"
    assert resumed[-1][0]["eer"] == last["eer"]

    # Export round trip: a weights-only file that rebuilds the student and its TFT.
    exported = straight[-1][1]["student"]
    counts = exported["config"]
    assert counts["student_params"] == last["student_params"] and counts["teacher_params"] == last["teacher_params"]
    assert counts["teacher_params"] > counts["student_ssl_params"], "2 of the teacher's 3 layers"
    path = tmp_path / "student.pt"
    torch.save(exported, path)
    model, metrics = load_speaker_student(path)
    assert metrics == exported["metrics"]
    assert all(torch.equal(v, exported["state_dict"][k]) for k, v in model.state_dict().items())
    wave = data.utterance(int(data.trials["test"].enroll[0])).unsqueeze(0)
    with torch.no_grad():
        embedding = model(wave)
    assert embedding.shape == (1, 192) and torch.isfinite(embedding).all()
    assert straight[0][1]["student"]["state_dict"] is not exported["state_dict"]
    w0 = straight[0][1]["student"]["state_dict"]["tft.fc.weight"]
    assert not torch.equal(w0, exported["state_dict"]["tft.fc.weight"]), "each checkpoint keeps its own epoch"


def test_teacher_trains_and_feeds_the_student(data):
    torch.set_num_threads(1)
    reports = []
    state = train_ssl_teacher(SSL, TeacherTrainConfig(epochs=2, batch_size=6, crop_seconds=0.5), data,
                              on_epoch=reports.append, device=CPU)  # fmt: skip
    assert [m["epoch"] for m in reports] == [1, 2]
    assert all(np.isfinite(m[k]) for m in reports for k in ("eer", "min_dcf", "masked_loss", "speaker_loss"))
    teacher = build_teacher(SSL, state)  # strict load: a plain torchaudio state dict
    assert not any(p.requires_grad for p in teacher.parameters())
    reports = _train(_config(epochs=1, freeze_extractor=True, schedule="step"), data, teacher)
    assert reports[0][0]["epoch"] == 1


def test_nan_loss_fails_the_trial_and_bad_settings_are_refused(data, teacher_state):
    torch.set_num_threads(1)
    with pytest.raises(NonFiniteLoss):
        _train(_config(epochs=1, kd_weight=1e39), data, teacher_state)  # overflows float32
    with pytest.raises(ValueError, match="schedule: must be one of linear"):
        _config(schedule="sigmoid")
    with pytest.raises(ValueError, match="target_layers"):
        _config(target_layers=(4,))
    config = OskdftConfig.from_dict({"p0": 0.3, "teacher": {"family": "wavlm", "layers": 6}, "target_layers": [2, 6]})
    assert config.teacher.family == "wavlm" and config.targets() == (2, 6) and config.p0 == 0.3
    with pytest.raises(ValueError, match="trial_id: OskdftConfig has no such setting"):  # never dropped silently
        OskdftConfig.from_dict({"p0": 0.3, "trial_id": "x"})


def test_evaluation_crops_and_full_utterances(data):
    rows = data.trials["test"].rows()[:4]
    lengths = data.lengths[rows]
    full = embed_utterances(lambda w: torch.tensor([[float(w.shape[-1]), 1.0]]), data, rows, CPU, max_seconds=0)
    assert full[:, 0].tolist() == lengths.tolist(), "eval_max_seconds 0: whole utterances, no crop"
    capped = embed_utterances(lambda w: torch.tensor([[float(w.shape[-1]), 1.0]]), data, rows, CPU, max_seconds=1.0)
    assert capped[:, 0].tolist() == np.minimum(lengths, 16000).tolist()
    # Five 0.5-s crops evenly spaced from the start to the end, as numpy's linspace (OS-KDFT2's TTA).
    crops = embed_crops(lambda w: w[:, :2], data, rows, CPU, crops=5, samples=8000)
    assert crops.shape == (4, 5, 2)
    assert torch.equal(embed_crops(lambda w: w[:, :2], data, rows, CPU, crops=5, samples=8000, batch_size=5), crops)
    for i, row in enumerate(rows):
        wave = data.utterance(int(row))
        starts = np.linspace(0, len(wave) - 8000, 5).astype(int)
        assert torch.equal(crops[i], torch.stack([wave[s : s + 2] for s in starts]))
    short = spaced_crops(torch.arange(3.0), crops=2, samples=7)  # shorter than a crop: repeated end to end
    assert short.tolist() == [[0, 1, 2, 0, 1, 2, 0]] * 2


def test_paper_settings_train_in_every_precision(data, teacher_state):
    torch.set_num_threads(1)
    paper = dict(eval_score="fused", eval_max_seconds=0.0, eval_crop_seconds=0.5, class_weighted=True,
                 cos_reduction="sum", tft_residual=False, copy_positional=False, dropout=0.1, layer_drop=0.1,
                 time_mask_prob=0.05, time_mask_span=4)  # fmt: skip
    for precision in ("fp32", "bf16", "fp16"):
        (metrics, checkpoint), = _train(_config(epochs=1, precision=precision, **paper), data, teacher_state)
        for key in ("eer", "min_dcf", "min_dcf_p05", "test_eer", "test_min_dcf_p05", "kd_loss", "ft_loss"):
            assert np.isfinite(metrics[key]), (precision, key)
        assert "masking" in checkpoint["train_state"]
    # The summed cosine term makes the distillation loss about frames × larger than the averaged one.
    (mean_metrics, _), = _train(_config(epochs=1, **{**paper, "cos_reduction": "mean"}), data, teacher_state)
    assert metrics["kd_loss"] > 5 * mean_metrics["kd_loss"]


def test_class_weights_are_n_over_n_speaker(teacher_state):
    counts = np.array([6, 1, 3])
    parts = build_oskdft2(_config(class_weighted=True), teacher_state, counts, CPU)
    assert torch.allclose(parts.speaker_loss.class_weights, torch.tensor([10 / 6, 10 / 1, 10 / 3]))
    assert build_oskdft2(_config(), teacher_state, counts, CPU).speaker_loss.class_weights is None


@pytest.mark.parametrize("bad", [{"eval_score": "best"}, {"precision": "fp8"}, {"cos_reduction": "max"},
                                 {"layer_drop": 1.0}, {"time_mask_prob": -0.1}, {"eval_max_seconds": -1.0},
                                 {"eval_crops": 0}])  # fmt: skip
def test_bad_paper_settings_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        _config(**bad)
