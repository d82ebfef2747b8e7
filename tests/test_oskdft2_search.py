"""OS-KDFT2 through the same service: python search/run.py --space oskdft2.yaml on the embedded default."""

from __future__ import annotations

import pandas as pd
import torch

from search.run import main
from trainables.speaker.training import load_speaker_student

SMALL = ["epochs=2", "batch_size=8", "teacher_training.epochs=1", "data.train_speakers=12", "data.val_speakers=6",
         "data.test_speakers=6", "data.ood_speakers=8", "data.trials_per_speaker=6",
         "scheduler.grace_period=1"]  # fmt: skip


def test_oskdft2_search_ranks_by_eer_and_exports_the_student(ray_session, tmp_path, capsys):
    argv = ["--space", "oskdft2", "--storage", str(tmp_path), "--name", "sv", "--samples", "3"]
    for setting in SMALL:
        argv += ["--set", setting]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "SSL teacher: to train" in out and "All trials: 3 trials" in out
    board = pd.read_csv(tmp_path / "sv" / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 3 and {"eer", "min_dcf", "p0", "schedule", "kd_weight", "lr"} <= set(board.columns)
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
