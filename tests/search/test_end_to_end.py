"""A real search through Ray Tune and Optuna on tiny data (tests/small_run.py, shared with test_output.py):
leaderboard, export, teacher cache, TensorBoard; then a second run on its cache, and a NaN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from results.export import load_student
from search.run import main
from spaces.space_file import read_space_file
from tests.small_run import DEVICES, TINY_SETTINGS
from trainables.asc.data import load_prepared
from trainables.asc.evaluation import predict, split_metrics
from trainables.asc.logits_file import read_logits


def _argv(run: dict, name: str, *extra: str, space: str = "kd") -> list[str]:
    """The small run's command, for another run in its storage on its dataset."""
    argv = ["--space", space, "--storage", str(run["storage"]), "--name", name, "--subsets", "5,10",
            "--data", str(run["data"])]  # fmt: skip
    for setting in TINY_SETTINGS:
        argv += ["--set", setting]
    return argv + list(extra)  # after the settings above, so an --set here wins


@pytest.fixture(scope="module")
def first_run(kd_run) -> dict:
    return kd_run


def test_leaderboard_ranks_every_trial_per_subset(first_run):
    board = pd.read_csv(first_run["dir"] / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 4 and sorted(board["subset"].unique()) == [5, 10]
    for _, rows in board.groupby("subset"):
        assert rows["rank"].tolist() == [1, 2]
        # Complete trials first, then any ASHA stopped at epoch 1; each group by its accuracy.
        assert rows["status"].tolist() in (["complete", "complete"], ["complete", "stopped"])
        assert rows["acc"].is_monotonic_decreasing or rows["status"].iloc[1] == "stopped"
    expected = ["rank", "trial_id", "subset", "temperature", "kd_lambda", "lr", "acc", "acc_seen", "acc_unseen",
                "macro_acc", *[f"acc_{d}" for d in DEVICES], *[f"test_acc_{d}" for d in DEVICES]]  # fmt: skip
    assert set(expected) <= set(board.columns)
    # Each student's size, as its trial reported it: the DCASE24 baseline's, within kd.yaml's budget.
    assert (board["params"] == 61_148).all() and (board["macs"] == 29_419_156).all() and board["within_budget"].all()
    assert board["kd_lambda"].between(0.0, 0.5).all() and board["temperature"].between(1.0, 5.0).all()


def test_exported_student_rebuilds_with_the_same_accuracy(first_run):
    run_dir = first_run["dir"]
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    data = load_prepared(first_run["data"])
    for subset in (5, 10):
        path = run_dir / "best" / f"subset_{subset}" / "student.pt"
        payload = torch.load(path, weights_only=True)
        assert set(payload) >= {"state_dict", "config", "metrics"}
        assert payload["trial_id"] == board[(board["subset"] == subset)].iloc[0]["trial_id"]
        frontend, model, metrics = load_student(path)
        rows = data.splits["test"]
        logits = predict(lambda w: model(frontend(w)), data, rows, 300, torch.device("cpu"))
        again = split_metrics(logits, data, rows, data.train_devices(subset))
        for device in DEVICES:
            assert again[f"acc_{device}"] == pytest.approx(metrics[f"test_acc_{device}"], abs=1e-9)


def test_comparison_against_no_distillation(first_run):
    compared = pd.read_csv(first_run["dir"] / "comparison.csv", dtype={"trial_id": str})
    assert sorted(compared["student"].unique()) == ["kd", "no_kd"]
    assert sorted(compared["subset"].unique()) == [5, 10]
    references = list((first_run["dir"] / "no_kd").glob("*/params.json"))
    assert len(references) == 2
    for params in references:
        assert yaml.safe_load(params.read_text())["kd_lambda"] == 1.0


def test_tensorboard_has_per_device_curves(first_run):
    board = pd.read_csv(first_run["dir"] / "leaderboard.csv", dtype={"trial_id": str})
    event_files = list((first_run["dir"] / "search").glob("*/events.out.tfevents.*"))
    assert len(event_files) == 4
    complete = Path(board.loc[board["status"] == "complete", "trial_dir"].iloc[0])
    accumulator = EventAccumulator(str(complete)).Reload()
    tags = set(accumulator.Tags()["scalars"])
    for tag in ["loss/train", "acc/mean", "acc/unseen", *[f"acc/{d}" for d in DEVICES]]:
        assert tag in tags, tag
    assert len(accumulator.Scalars("acc/s4")) == 2  # one point per epoch
    # The HParams tab: every trial's hyperparameters and final metrics, written when it ends.
    for event_file in event_files:
        raw = event_file.read_bytes()
        assert b"_hparams_/session_start_info" in raw and b"kd_lambda" in raw and b"temperature" in raw


def test_report_is_written(first_run):
    report = first_run["dir"] / "report.html"
    assert report.is_file() and "<img" in report.read_text()
    assert (first_run["dir"] / "summary.json").is_file()


def test_each_teacher_s_logits_cover_its_subset_and_the_held_out_clips(first_run):
    """A subset's teacher computes logits for the clips its students train on and the splits its figures come from,
    not for the whole pool: a 5 % teacher would otherwise do 20 times the forward passes it needs."""
    data = load_prepared(first_run["data"])
    teachers = pd.read_csv(first_run["dir"] / "teachers.csv")
    assert sorted(teachers["subset"]) == [5, 10]
    for _, teacher in teachers.iterrows():
        payload = read_logits(Path(teacher["logits"]))
        held_out = np.concatenate([data.splits["val"], data.splits["test"]])
        wanted = {data.filenames[r] for r in np.concatenate([data.splits[f"split{int(teacher['subset'])}"], held_out])}
        assert set(payload["filenames"]) == wanted and len(wanted) < len(data.filenames)
        assert payload["metrics"]["test_acc"] == pytest.approx(teacher["test_acc"])


def test_second_run_reuses_the_teacher_cache(first_run, capsys):
    storage = first_run["storage"]
    teachers = sorted((storage / "cache" / "teachers").glob("*.pt"))
    assert len(teachers) == 2 and (first_run["dir"] / "teachers").is_dir()
    stamps = [p.stat().st_mtime_ns for p in teachers]
    capsys.readouterr()
    # One subset of the two the first run made teachers for (a later --subsets wins); one epoch is enough here.
    assert main(_argv(first_run, "second", "--subsets", "10", "--samples", "2", "--set", "compare_without_kd=false",
                      "--set", "confirm_top_k=1", "--set", "confirm_seeds=2", "--set", "epochs=1",
                      "--set", "base_channels=8")) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("cached") == 1 and "to make" not in out
    assert not (storage / "second" / "teachers").exists()
    assert [p.stat().st_mtime_ns for p in teachers] == stamps
    # Confirmation: the best configuration trained again with 2 new seeds, ranked by their mean.
    board = pd.read_csv(storage / "second" / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 2 and len(list((storage / "second" / "confirm").glob("*/params.json"))) == 2
    assert board.iloc[0]["confirmed_runs"] == 2 and not pd.isna(board.iloc[0]["confirmed_acc_std"])
    assert pd.isna(board.iloc[1]["confirmed_acc"])
    summary = json.loads((storage / "second" / "summary.json").read_text())
    assert list(summary["subsets"]) == ["10"] and summary["subsets"]["10"]["confirmed_runs"] == 2
    assert summary["rank_score"] == pytest.approx(summary["subsets"]["10"]["test_macro_acc"])
    assert "DCASE rank score" in out


def test_a_nan_trial_fails_and_the_search_goes_on(first_run, tmp_path):
    raw = read_space_file("kd")
    del raw["weight_decay"]
    # Each choice once (a grid); the second blows the weights up: the loss of the step after it is not finite.
    raw["search"] = {"subset": [5], "weight_decay": [0.0001, 1.0e30]}
    raw["sampler"] = "grid"
    space = tmp_path / "nan.yaml"
    space.write_text(yaml.safe_dump(raw))
    argv = _argv(first_run, "nan", "--set", "compare_without_kd=false", "--set", "base_channels=8", space=str(space))
    argv[argv.index("--subsets") + 1] = "5"
    assert main(argv) == 0
    board = pd.read_csv(first_run["storage"] / "nan" / "leaderboard.csv", dtype={"trial_id": str})
    failed = board[board["status"] == "failed"]
    assert len(failed) == 1 and (failed["weight_decay"] == 1.0e30).all()
    assert failed["error"].str.contains("loss became").all()
    kept = board[board["weight_decay"] == 0.0001]
    assert len(kept) and (kept["status"] == "complete").all()
    assert board.iloc[-1]["status"] == "failed", "failed trials rank last"
    # The study kept next to the run says the same as the leaderboard.
    study = optuna.load_study(study_name="nan/subset5",
                              storage=JournalStorage(JournalFileBackend(str(first_run["storage"] / "nan" / "optuna.journal"))))
    expected = {"complete": TrialState.COMPLETE, "stopped": TrialState.PRUNED, "failed": TrialState.FAIL}
    states = sorted(t.state.name for t in study.trials)
    assert states == sorted(expected[s].name for s in board["status"])
