"""OS-KDFT2 through the same service: python search/run.py --space oskdft2.yaml on the embedded default."""

from __future__ import annotations

import pandas as pd
import torch

from search.run import main
from trainables.speaker.student_training import load_speaker_student
from trainables.speaker.teacher import SslConfig, build_teacher

SMALL = ["epochs=2", "batch_size=8", "teacher_training.epochs=1", "data.train_speakers=12", "data.val_speakers=6",
         "data.test_speakers=6", "data.ood_speakers=8", "data.trials_per_speaker=6",
         "scheduler.grace_period=1"]  # fmt: skip


def test_oskdft2_search_ranks_by_eer_and_exports_the_student(ray_session, tmp_path, capsys):
    argv = ["--space", "oskdft2", "--storage", str(tmp_path), "--name", "sv", "--samples", "2"]
    for setting in SMALL:
        argv += ["--set", setting]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "SSL teacher: to train" in out and "All trials: 2 trials" in out
    board = pd.read_csv(tmp_path / "sv" / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 2 and {"eer", "min_dcf", "p0", "schedule", "kd_weight", "lr"} <= set(board.columns)
    complete = board[board["status"] == "complete"]
    assert complete["eer"].is_monotonic_increasing, "lower EER ranks first"
    assert board.iloc[0]["status"] == "complete" and 0.0 <= board.iloc[0]["eer"] <= 1.0
    assert {"test_eer", "test_min_dcf", "student_params", "teacher_params"} <= set(board.columns)
    exported = tmp_path / "sv" / "best" / "student.pt"
    payload = torch.load(exported, weights_only=True)
    assert payload["trial_id"] == board.iloc[0]["trial_id"]
    model, metrics = load_speaker_student(exported)
    assert model(torch.randn(2, 16000)).shape == (2, 192)
    assert metrics["test_eer"] == board.iloc[0]["test_eer"]
    assert payload["config"]["student_params"] < payload["config"]["teacher_params"]


def test_the_paper_recipe_runs_end_to_end_with_a_reduced_teacher(ray_session, tmp_path, capsys):
    """spaces/oskdft2_vox1_search.yaml, the search around the reference's recipe, on the embedded speakers: only the
    teacher's size (and the data, epochs and batch) changed; its weights come from a local file, as HuBERT base's
    would."""
    argv = ["--space", "oskdft2_vox1_search", "--storage", str(tmp_path / "runs"), "--name", "paper"]
    assert main(argv) == 2, "without the teacher's weights file the recipe does not start"
    assert "no teacher weights at /models/hubert_base.pt" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "paper").exists()

    weights = tmp_path / "reduced_hubert.pt"
    torch.manual_seed(0)
    torch.save(build_teacher(SslConfig(size="reduced")).state_dict(), weights)
    argv += ["--samples", "1", "--cpus-per-trial", "1", "--gpus-per-trial", "0"]
    for setting in ["epochs=1", "batch_size=8", "teacher.size=reduced", f"teacher_training.weights={weights}",
                    *SMALL[3:]]:  # fmt: skip
        argv += ["--set", setting]
    assert main(argv) == 0
    assert f"SSL teacher: {weights}" in capsys.readouterr().out
    board = pd.read_csv(tmp_path / "runs" / "paper" / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 1 and board.iloc[0]["status"] == "complete"
    assert {"p0", "schedule", "kd_weight"} <= set(board.columns) and "lr" not in board.columns, "lr is fixed"
    assert {"eer", "min_dcf", "min_dcf_p05", "test_eer", "test_min_dcf", "test_min_dcf_p05"} <= set(board.columns)
    assert board[["eer", "min_dcf_p05", "test_eer"]].notna().all().all()
    payload = torch.load(tmp_path / "runs" / "paper" / "best" / "student.pt", weights_only=True)
    train = payload["config"]["train"]
    recipe = {"lr": 5e-5, "weight_decay": 1e-4, "crop_seconds": 3.0, "cos_reduction": "sum", "class_weighted": True,
              "tft_residual": False, "copy_positional": False, "dropout": 0.1, "layer_drop": 0.1,
              "time_mask_prob": 0.05, "eval_score": "fused", "eval_max_seconds": 0.0, "loss": "softmax"}  # fmt: skip
    assert {k: train[k] for k in recipe} == recipe
    assert payload["config"]["tft"]["residual"] is False
    model, _ = load_speaker_student(tmp_path / "runs" / "paper" / "best" / "student.pt")
    assert model(torch.randn(2, 48000)).shape == (2, 192)
