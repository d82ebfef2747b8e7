import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from results.leaderboard import build_leaderboard, print_leaderboard, rank, summary
from results.trial_records import damage_lines


def _trial(experiment: Path, trial_id: str, subset: int, epochs_done: int, acc: float | None, error: str | None = None,
           epochs: int = 3, lr: float | None = None) -> None:  # fmt: skip
    directory = experiment / f"subset{subset}_{trial_id}"
    lr = 0.01 + zlib.crc32(trial_id.encode()) % 1000 * 1e-5 if lr is None else lr  # each trial its own configuration
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps({"subset": subset, "epochs": epochs, "lr": lr, "temperature": 2.0}))
    lines = []
    for epoch in range(1, epochs_done + 1):
        metrics = {"trial_id": trial_id, "training_iteration": epoch, "acc": (acc or 0) * epoch / epochs_done,
                   "acc_a": 0.9, "acc_s4": 0.4, "acc_unseen": 0.4, "train_loss": 1.0}  # fmt: skip
        lines.append(json.dumps(metrics))
    (directory / "result.json").write_text("\n".join(lines) + "\n")
    if error:
        (directory / "error.txt").write_text(f"Traceback ...\n{error}\n")


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    search = run_dir / "search"
    (run_dir).mkdir()
    (run_dir / "space.yaml").write_text(yaml.safe_dump({"metric": "acc", "mode": "max",
                                                        "search": {"lr": [0.1, 0.2], "temperature": [2.0, 3.0]}}))  # fmt: skip
    _trial(search, "good", 5, 3, 0.70)
    _trial(search, "better", 5, 3, 0.75)
    _trial(search, "early", 5, 1, 0.90)  # stopped by ASHA after one epoch: ranked below complete trials
    _trial(search, "nan", 5, 1, None, error="NonFiniteLoss: training loss became nan in epoch 1, step 0")
    _trial(search, "big", 25, 3, 0.60)
    return run_dir


def test_ranks_per_subset_complete_before_stopped_before_failed(tmp_path):
    board = build_leaderboard(_run_dir(tmp_path), "acc", "max")
    five = board[board["subset"] == 5]
    assert five["trial_id"].tolist() == ["better", "good", "early", "nan"]
    assert five["rank"].tolist() == [1, 2, 3, 4]
    assert five["status"].tolist() == ["complete", "complete", "stopped", "failed"]
    assert "NonFiniteLoss" in five.iloc[3]["error"]
    twenty_five = board[board["subset"] == 25]
    assert twenty_five["rank"].tolist() == [1]
    for column in ["rank", "trial_id", "subset", "lr", "temperature", "acc", "acc_a", "acc_s4", "acc_unseen"]:
        assert column in board.columns
    assert board.columns.tolist()[:5] == ["rank", "trial_id", "subset", "status", "epochs"]


def test_trial_files_a_full_storage_cut_short_are_read_around_and_named(tmp_path):
    """A full storage leaves an empty error.txt, a report cut mid-line with the resumed run's next report glued
    to it, and a cut params.json; the run is still ranked, and each damaged file is named."""
    run_dir = _run_dir(tmp_path)
    search = run_dir / "search"
    _trial(search, "resumed", 5, 3, 0.80)
    result = search / "subset5_resumed" / "result.json"
    first, second, third = result.read_text().splitlines()
    result.write_text(f"{first}\n{second[:40]}{second}\n{third}\n{third[:25]}")  # 2 cut, the first glued
    (search / "subset5_resumed" / "error.txt").write_text("")
    _trial(search, "lost", 5, 3, 0.99)
    (search / "subset5_lost" / "params.json").write_text('{"subset": 5, "epo')
    board = build_leaderboard(run_dir, "acc", "max")
    resumed = board[board["trial_id"] == "resumed"].iloc[0]
    assert (resumed["rank"], resumed["status"], resumed["epochs"]) == (1, "complete", 3)
    assert resumed["acc"] == pytest.approx(0.80)
    assert "lost" not in board["trial_id"].tolist()
    warned = damage_lines(run_dir)
    assert len(warned) == 3, warned
    assert any(f"{result}: 2 report line(s) cut short" in line for line in warned)
    assert any(str(search / "subset5_resumed" / "error.txt") in line and "empty" in line for line in warned)
    assert any(str(search / "subset5_lost" / "params.json") in line for line in warned)
    (tmp_path / "whole").mkdir()
    assert not damage_lines(_run_dir(tmp_path / "whole"))


def test_mode_min_puts_the_lowest_first():
    frame = pd.DataFrame({"trial_id": ["x", "y", "z"], "subset": [5, 5, 5], "status": ["complete"] * 3,
                          "eer": [0.2, 0.1, float("nan")]})  # fmt: skip
    assert rank(frame, "eer", "min")["trial_id"].tolist() == ["y", "x", "z"]
    assert rank(frame, "eer", "max")["trial_id"].tolist() == ["x", "y", "z"]


def _confirm(run_dir: Path, of: str, seed: int, subset: int, acc: float, test_macro: float) -> None:
    """A confirmation run of trial `of`: its configuration (read from its params.json) with another seed."""
    (source,) = (run_dir / "search").glob(f"*_{of}/params.json")
    directory = run_dir / "confirm" / f"subset{subset}_seed{seed}_{of}{seed}"
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps({**json.loads(source.read_text()), "seed": seed}))
    lines = [json.dumps({"trial_id": f"c{of}{seed}", "training_iteration": e, "acc": acc, "test_macro_acc": test_macro,
                         "test_acc": test_macro}) for e in (1, 2, 3)]  # fmt: skip
    (directory / "result.json").write_text("\n".join(lines) + "\n")


def test_confirmed_configurations_rank_by_their_seed_mean_and_give_the_rank_score(tmp_path):
    run_dir = _run_dir(tmp_path)
    for seed, (acc, macro) in enumerate([(0.60, 0.50), (0.64, 0.54)], 1):
        _confirm(run_dir, "better", seed, 5, acc, macro)  # 'better' was lucky in the search
    for seed, (acc, macro) in enumerate([(0.70, 0.60), (0.72, 0.62)], 1):
        _confirm(run_dir, "good", seed, 5, acc, macro)
    board = build_leaderboard(run_dir, "acc", "max")
    five = board[board["subset"] == 5]
    assert five["trial_id"].tolist()[:2] == ["good", "better"], "confirmed means decide, not the lucky search run"
    assert five.iloc[0]["confirmed_acc"] == pytest.approx(0.71)
    assert five.iloc[0]["confirmed_acc_std"] == pytest.approx(np.std([0.70, 0.72], ddof=1))
    assert five.iloc[0]["confirmed_runs"] == 2
    result = summary(board)
    assert result["subsets"][5]["test_macro_acc"] == pytest.approx(0.61)
    assert result["subsets"][5]["confirmed_runs"] == 2
    assert result["subsets"][25]["confirmed_runs"] == 0  # 25 % was not confirmed: its single run counts
    assert result["rank_score"] == pytest.approx((0.61 + result["subsets"][25]["test_macro_acc"]) / 2, nan_ok=True)


def test_the_printed_leaderboard_shows_its_ranking_metric_once(capsys):
    board = pd.DataFrame({"rank": [1, 2], "trial_id": ["a", "b"], "subset": [0, 0], "status": ["complete"] * 2,
                          "epochs": [2, 2], "p0": [0.1, 0.2], "eer": [0.05, 0.07], "test_eer": [0.06, 0.08]})
    print_leaderboard(board, "eer", ["p0"])
    header = capsys.readouterr().out.splitlines()[2].split()
    assert header == ["rank", "trial_id", "status", "epochs", "p0", "eer", "test_eer"]
