"""The complexity budget: a student over it is refused before training and marked in the leaderboard."""

import json

import pytest
import yaml

from results.leaderboard import build_leaderboard
from search.systems import build_space, system_of
from spaces.errors import SpaceError
from spaces.space_file import apply_override, read_space_file
from trainables.asc.student import Budget, OverBudget, check_budget
from trainables.asc.student_training import StudentConfig

DCASE = {"param_bytes": 128_000, "bits": 16, "macs": 30_000_000}


def test_the_baseline_fits_dcase24_and_a_wider_one_does_not():
    check_budget(StudentConfig().arch(10), 32000, Budget(**DCASE))  # 61,148 params = 122,296 B; 29.4 MMACs
    with pytest.raises(OverBudget, match="bytes"):
        check_budget(StudentConfig(base_channels=40).arch(10), 32000, Budget(**DCASE))
    with pytest.raises(OverBudget, match="MACs"):
        check_budget(StudentConfig(n_blocks="3,3,1").arch(10), 32000, Budget(macs=30_000_000))
    check_budget(StudentConfig(base_channels=40).arch(10), 32000, Budget(bits=8, param_bytes=128_000))  # int8 fits


def test_width_and_depth_are_searchable_and_budget_validated():
    raw = read_space_file("kd")
    raw["search"]["base_channels"] = [24, 32, 40]
    raw["search"]["n_blocks"] = ["3,2,1", "2,2,1"]
    apply_override(raw, "budget.param_bytes=128000", system_of(raw))
    space = build_space(raw)
    assert space.budget.param_bytes == 128_000
    assert {d.name for d in space.dimensions} >= {"base_channels", "n_blocks"}
    with pytest.raises(SpaceError, match="n_blocks"):
        build_space({**raw, "n_blocks": "3,2"})
    with pytest.raises(SpaceError, match="budget"):
        build_space({**raw, "budget": {"bits": 12}})


def test_leaderboard_shows_each_student_s_size_and_the_configurations_over_budget(tmp_path):
    """A student trial reports its size with every epoch (the figures DCASE24 limits, as check_budget counts them);
    one over the budget fails before training, its error naming the limit."""
    small = check_budget(StudentConfig().arch(10), 32000, Budget(**DCASE))
    sizes = {"params": small.params, "param_bytes": small.param_bytes(16), "macs": small.macs, "within_budget": True}
    run_dir = tmp_path / "run"
    (run_dir / "search").mkdir(parents=True)
    (run_dir / "space.yaml").write_text(yaml.safe_dump({"metric": "acc", "mode": "max", "search": {"base_channels": [32, 40]}, "budget": DCASE}))
    for trial_id, width, error in (("small", 32, None), ("wide", 40, "OverBudget: over the complexity budget")):
        directory = run_dir / "search" / f"subset5_{trial_id}"
        directory.mkdir()
        (directory / "params.json").write_text(json.dumps({"subset": 5, "base_channels": width}))
        results = [] if error else [{"trial_id": trial_id, "training_iteration": 1, "epochs": 1, "acc": 0.5, **sizes}]
        (directory / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
        if error:
            (directory / "error.txt").write_text(error + "\n")
    board = build_leaderboard(run_dir, "acc", "max").set_index("trial_id")
    assert board.loc["small", "within_budget"] and board.loc["small", "params"] == 61_148
    assert board.loc["small", "param_bytes"] == 122_296 and board.loc["small", "macs"] == 29_419_156
    assert board.loc["wide", "status"] == "failed" and "complexity budget" in board.loc["wide", "error"]
