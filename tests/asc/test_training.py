"""The training loops are plain PyTorch: called here directly, without Ray."""

import dataclasses

import numpy as np
import pytest
import torch

from trainables.asc.loader import clip_batches, epoch_batches
from trainables.asc.logits_file import LogitsMismatch, aligned_logits, save_logits
from trainables.asc.student_training import StudentConfig, StudentStep, train_student
from trainables.asc.teacher import TeacherConfig, is_head
from trainables.asc.teacher_training import teacher_logits, train_teacher
from trainables.common import NonFiniteLoss

FAST = dict(subset=5, batch_size=50, epochs=2)


def _train(config, data, logits, resume=None):
    reports = []
    train_student(config, data, logits, lambda m, c: reports.append((m, c())), resume=resume, device=torch.device("cpu"))
    return reports


def test_student_reports_device_metrics_and_resumes_exactly(tiny_data):
    torch.set_num_threads(1)
    logits = np.random.default_rng(0).normal(size=(len(tiny_data.filenames), 10)).astype(np.float32)
    config = StudentConfig(**FAST, kd_lambda=0.5)
    straight = _train(config, tiny_data, logits)
    assert [m["epoch"] for m, _ in straight] == [1, 2]
    first, last = straight[0][0], straight[-1][0]
    for key in ["acc", "acc_a", "acc_s4", "acc_s6", "acc_seen", "acc_unseen", "macro_acc", "train_loss"]:
        assert key in first
    assert "test_acc" not in first and "test_acc_s5" in last, "test figures only after the last epoch"
    # The last epoch's file also keeps its test confusion matrix, for the report: counts of every test clip.
    student = straight[-1][1]["student"]
    assert "test_confusion" not in straight[0][1]["student"]
    counts = student["test_confusion"].numpy()
    assert student["classes"] == tiny_data.classes and counts.shape == (10, 10)
    assert counts.sum() == len(tiny_data.splits["test"])
    assert (counts.sum(axis=1) == np.bincount(tiny_data.labels[tiny_data.splits["test"]], minlength=10)).all()
    assert np.mean(np.diag(counts) / counts.sum(axis=1)) == pytest.approx(last["test_macro_acc"])
    resumed = _train(config, tiny_data, logits, resume=straight[0][1]["train_state"])
    assert [m["epoch"] for m, _ in resumed] == [2]
    a, b = straight[-1][1]["student"]["state_dict"], resumed[-1][1]["student"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resuming after epoch 1 gives the same weights"


def test_student_without_teacher_and_nan_loss(tiny_data):
    torch.set_num_threads(1)
    _train(StudentConfig(**{**FAST, "epochs": 1}, kd_lambda=1.0), tiny_data, None)
    with pytest.raises(NonFiniteLoss):
        # lr at its rule's top and an absurd weight decay: AdamW multiplies every weight by 1 − 1e31 per step, so the
        # loss of the step after the first (epoch 2: the 5 % subset is one batch) is not finite
        _train(StudentConfig(**FAST, kd_lambda=1.0, lr=10.0, weight_decay=1e30), tiny_data, None)


def test_a_step_budget_goes_round_a_small_subset_and_cuts_a_large_one(tiny_data):
    torch.set_num_threads(1)
    small = tiny_data.splits["split5"]
    per_pass = -(-len(small) // 8)
    batches = list(epoch_batches(tiny_data, small, 8, 2 * per_pass + 1, torch.device("cpu")))
    assert len(batches) == 2 * per_pass + 1
    for start in (0, per_pass):  # each whole pass sees every clip once
        seen = np.concatenate([b.rows for b in batches[start : start + per_pass]])
        assert sorted(seen) == sorted(small)
    assert len(list(epoch_batches(tiny_data, tiny_data.splits["split100"], 8, 2, torch.device("cpu")))) == 2
    # A run's steps are the budget whatever the subset: 5 steps a round at 5 %, as at 100 %.
    budget = StudentConfig(epochs=2, train_steps=10, batch_size=8)
    assert budget.steps_per_epoch(len(small)) == budget.steps_per_epoch(len(tiny_data.splits["split100"])) == 5
    reports = _train(StudentConfig(subset=5, epochs=2, train_steps=6, batch_size=8, kd_lambda=1.0), tiny_data, None)
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    state = reports[-1][1]["train_state"]["optimizer"]["state"]
    assert int(next(iter(state.values()))["step"]) == 6, "AdamW took exactly the budget's steps"


def test_a_cnn_teacher_fine_tunes_from_its_pretrained_backbone_with_a_new_head(tiny_data):
    """The demo's teacher: a wide CNN whose pretraining (here a first run) carries over to fine-tuning, all but the
    classifier, which starts afresh for the new task."""
    torch.set_num_threads(1)
    config = TeacherConfig(arch="cnn", width=16, epochs=1, batch_size=50, eval_batch_size=300, lr=0.01)
    pretrained, _ = train_teacher(config, tiny_data, 100, device=torch.device("cpu"))
    state = {k: v.clone() for k, v in pretrained.state_dict().items()}
    # a backbone learning rate of ~0: what fine-tuning starts from is all that is left of it
    slow = dataclasses.replace(config, backbone_lr_ratio=1e-12, seed=1)
    tuned, metrics = train_teacher(slow, tiny_data, 5, device=torch.device("cpu"), init_state=state)
    assert 0.0 <= metrics["acc"] <= 1.0
    for name, value in tuned.named_parameters():
        if is_head(name):
            assert not torch.allclose(value, state[name]), f"{name} should start afresh"
        else:
            assert torch.allclose(value, state[name], atol=1e-6), f"{name} should come from the pretraining"
    assert sum(is_head(name) for name, _ in tuned.named_parameters()) == 3  # the 1×1 convolution and its BatchNorm
    assert np.isfinite(teacher_logits(tuned, tiny_data, torch.device("cpu"), 300)).all()


def test_tiny_teacher_trains_and_its_logits_round_trip(tiny_data, tmp_path):
    torch.set_num_threads(1)
    config = TeacherConfig(epochs=1, embed_dim=32, depth=1, num_heads=2, batch_size=50, eval_batch_size=300)
    model, metrics = train_teacher(config, tiny_data, 5, device=torch.device("cpu"))
    assert 0.0 <= metrics["acc"] <= 1.0 and "acc_s4" in metrics
    logits = teacher_logits(model, tiny_data, torch.device("cpu"), 300)
    assert logits.shape == (len(tiny_data.filenames), 10) and np.isfinite(logits).all()
    path = tmp_path / "logits.pt"
    save_logits(path, tiny_data.filenames[::-1], logits[::-1], metrics)  # another order: keyed by filename
    rows = tiny_data.splits["split5"]
    assert np.allclose(aligned_logits(path, tiny_data, rows)[rows], logits[rows])
    save_logits(path, tiny_data.filenames[:10], logits[:10], metrics)
    with pytest.raises(LogitsMismatch, match="no logits for"):
        aligned_logits(path, tiny_data, rows)


@pytest.mark.parametrize("mixes, network_sees_the_batch", [("inputs_and_targets", False), ("targets", True)])
def test_ntus_targets_only_mixup_leaves_the_networks_input_unmixed(tiny_data, mixes, network_sees_the_batch):
    config = StudentConfig(subset=100, batch_size=16, kd_lambda=1.0, mixup_alpha=1.0, mixup_mixes=mixes, freqm=0,
                           mixstyle_p=0.0, roll_sec=0.0)  # fmt: skip
    step = StudentStep.build(config, tiny_data, None, torch.device("cpu"))
    seen = []
    step.model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    batch = next(clip_batches(tiny_data, tiny_data.splits["split100"], config.batch_size, False, torch.device("cpu")))
    torch.manual_seed(0)
    loss = step.loss(batch)
    assert torch.isfinite(loss)
    assert torch.equal(seen[0], step.frontend(batch.waveform)) is network_sees_the_batch
