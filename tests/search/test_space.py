"""Bad input ends in one short message and exit status 2, before Ray starts."""

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from search.run import main
from search.systems import build_space, system_of
from spaces.errors import SpaceError
from spaces.space_file import apply_override, read_space_file

ROOT = Path(__file__).resolve().parents[2]


def _space_file(tmp_path: Path, **changes) -> Path:
    raw = read_space_file("kd")
    for key, value in changes.items():
        target = raw
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


_DELETE = object()


def _fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_the_shipped_space_is_valid():
    space = build_space(read_space_file("kd.yaml"))
    assert space.subsets == (5, 10, 25, 50, 100)
    assert {d.name for d in space.dimensions} == {"temperature", "kd_lambda", "lr"}
    lr = next(d for d in space.dimensions if d.name == "lr")
    assert lr.log and lr.low < lr.high
    # The demo trains every subset for the same step budget, and shows each subset's best with a seed spread.
    assert space.settings.train_steps >= space.settings.epochs
    assert space.confirm_top_k == 1 and space.confirm_seeds == 2


def test_the_demos_asha_lets_every_trial_run_at_least_half_its_epochs():
    """Ray's own ASHA as the search builds it, fed a trial far behind another, stops it only past half its epochs
    (issue 26: judged at 2 of 4, the second trial of a subset was stopped while still near chance)."""
    from search.tuning import trial_scheduler

    space = build_space(read_space_file("kd.yaml"))
    epochs = space.settings.epochs
    assert space.scheduler.type == "asha" and space.scheduler.grace_period > epochs / 2
    scheduler = trial_scheduler(space)
    scheduler.set_search_properties(space.metric, space.mode)
    leader, behind = SimpleNamespace(trial_id="leader"), SimpleNamespace(trial_id="behind")
    for trial in (leader, behind):
        scheduler.on_trial_add(None, trial)
    stopped_at = None
    for epoch in range(1, epochs + 1):
        for trial, value in ((leader, 0.6), (behind, 0.1)):
            action = scheduler.on_trial_result(None, trial, {"training_iteration": epoch, space.metric: value,
                                                             "time_total_s": float(epoch)})  # fmt: skip
            if trial is behind and action == "STOP" and stopped_at is None:
                stopped_at = epoch
    assert stopped_at is not None, "ASHA stops a trial this far behind"
    assert epochs / 2 < stopped_at < epochs, (stopped_at, epochs)


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"epochz": 3}, ["'epochz'", "epochs"]),
        ({"teacher.depht": 3}, ["teacher.depht", "depth"]),
        ({"epochs": "many"}, ["epochs", "expected int"]),
        ({"search.lr": {"low": 0.01, "high": 0.001}}, ["search.lr", "inverted"]),
        ({"search.lr": {"low": 0.01, "high": 0.01}}, ["search.lr", "empty"]),
        ({"search.temperature": {"low": 1.0}}, ["search.temperature", "high"]),
        ({"search.kd_lambda": {"low": 0.0, "high": 1.5}}, ["kd_lambda", "[0.0, 1.0]"]),
        ({"kd_lambda": -0.1}, ["kd_lambda", "[0.0, 1.0]"]),
        ({"search.subset": [5, 7]}, ["search.subset"]),
        ({"search.seed": [1, 2]}, ["search.seed", "not a searchable"]),
        ({"metric": "accuracy"}, ["metric"]),
        ({"samples": 0}, ["samples"]),
        ({"scheduler.type": "pbt"}, ["scheduler.type"]),
        ({"teacher.arch": "passt_xl"}, ["teacher.arch"]),
        ({"train_steps": 2, "epochs": 4}, ["train_steps: 2", "at least epochs (4)"]),
        ({"train_steps": -5}, ["train_steps: must not be negative, got -5"]),
    ],
)
def test_bad_space_files_are_refused(tmp_path, capsys, changes, needles):
    path = _space_file(tmp_path, **changes)
    _fails(capsys, ["--space", str(path), "--storage", str(tmp_path / "runs")], *needles)
    assert not (tmp_path / "runs").exists(), "nothing is written for a refused space"


def test_missing_and_unparsable_files(tmp_path, capsys):
    _fails(capsys, ["--space", str(tmp_path / "nope.yaml")], "not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("search: {lr: [1, 2\nepochs: 3\n")
    _fails(capsys, ["--space", str(broken)], "not valid YAML", "line")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    _fails(capsys, ["--space", str(listed)], "mapping")


def test_bad_flags(tmp_path, capsys):
    _fails(capsys, ["--space", "kd", "--set", "epocs=2"], "epocs", "epochs")
    _fails(capsys, ["--space", "kd", "--set", "teacher.epoch=1"], "teacher.epoch")
    _fails(capsys, ["--space", "kd", "--set", "noequals"], "KEY=VALUE")
    _fails(capsys, ["--space", "kd", "--samples", "0"], "--samples")
    _fails(capsys, ["--space", "kd", "--subsets", "5,x"], "--subsets")
    _fails(capsys, ["--space", "kd", "--gpus-per-trial", "-1"], "gpus_per_trial")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, ["--space", "kd", "--data", str(empty)], "holds no dataset")
    _fails(capsys, ["--space", "kd", "--data", str(tmp_path / "absent")], "no such directory")
    _fails(capsys, ["--space", "kd", "--bogus"], "unrecognized")


def test_overrides_reach_the_settings():
    raw = read_space_file("kd")
    apply_override(raw, "epochs=2", system_of(raw))
    apply_override(raw, "teacher.epochs=1", system_of(raw))
    apply_override(raw, "weight_decay=1e-3", system_of(raw))  # YAML 1.1: 1e-3 is text; a float setting takes it
    space = build_space(raw)
    assert space.settings.epochs == 2 and space.teacher.epochs == 1 and space.settings.weight_decay == 0.001
    with pytest.raises(SpaceError):
        apply_override(raw, "data.sed=1", system_of(raw))


@pytest.mark.parametrize(("space", "setting"), [("kd", "temperature=3"), ("kd", "subset=5"), ("oskdft2", "lr=5e-5"),
                                                ("teacher_tiny", "backbone_lr_ratio=0.5")])  # fmt: skip
def test_a_searched_setting_that_is_also_fixed_is_refused(tmp_path, capsys, space, setting):
    name = setting.partition("=")[0]
    how = "--subsets 5" if name == "subset" else f"--set search.{setting}"
    _fails(capsys, ["--space", space, "--storage", str(tmp_path), "--set", setting], f"{name} is searched", how)
    assert not any(tmp_path.iterdir()), "refused before anything is written"
    raw = read_space_file(space)  # the same key fixed in the space file itself
    raw[name] = yaml.safe_load(setting.partition("=")[2])
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(raw))
    _fails(capsys, ["--space", str(path), "--storage", str(tmp_path / "runs")], f"{name} is searched", how)


def test_set_search_fixes_or_reranges_a_searched_setting(capsys):
    raw = read_space_file("oskdft2")
    apply_override(raw, "search.lr=5e-5", system_of(raw))  # the way to fix a searched setting: it leaves the search
    apply_override(raw, "search.kd_weight={low: 0.5, high: 2.0}", system_of(raw))
    space = build_space(raw)
    assert space.settings.lr == 5e-5 and "lr" not in {d.name for d in space.dimensions}
    kd = next(d for d in space.dimensions if d.name == "kd_weight")
    assert (kd.low, kd.high, kd.log) == (0.5, 2.0, False)
    with pytest.raises(SpaceError, match="lrr"):
        apply_override(raw, "search.lrr=1", system_of(raw))
    for name in ("kd", "teacher", "teacher_tiny", "oskdft2"):  # no shipped space holds both (oskdft2_vox1: its test)
        build_space(read_space_file(name))


def test_a_resume_of_nothing_and_an_existing_run_are_refused(tmp_path, capsys):
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path), "--resume"], "no run to resume")
    run_dir = tmp_path / "kd"
    run_dir.mkdir()
    (run_dir / "space.yaml").write_text("earlier run\n")
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path)], "already holds a run")
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path), "--resume"], "not a run's record")
    assert (run_dir / "space.yaml").read_text() == "earlier run\n", "the user's run is left alone"


def test_the_command_line_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "search/run.py", "--space", "kd", "--set", "kd_lambda=2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "kd_lambda" in result.stderr


def test_speaker_spaces_can_rank_by_either_min_dcf():
    for metric in ("eer", "min_dcf", "min_dcf_p05"):
        raw = read_space_file("oskdft2")
        raw.update(metric=metric, mode="min")
        assert build_space(raw).metric == metric
    raw = read_space_file("oskdft2")
    raw["metric"] = "min_dcf_p10"
    with pytest.raises(SpaceError, match="not a metric"):
        build_space(raw)


def _replication(**changes):
    raw = read_space_file("dcase24_baseline")
    raw.update(changes)
    return raw


def test_a_replication_fixes_every_setting_and_trains_each_seed_without_selecting():
    space = build_space(_replication(seeds=3, seed=7))
    assert space.kind == "replication" and space.samples == 3 and space.sampler == "grid"
    assert [d.name for d in space.dimensions] == ["seed"] and space.dimensions[0].choices == (7, 8, 9)
    assert (space.scheduler.type, space.confirm_top_k, space.compare_without_kd) == ("fifo", 0, False)
    # Its record is itself a replication's space file: the same space again.
    from spaces.space import plain, to_mapping

    again = build_space(plain(to_mapping(space)))
    assert again == space and again.published == space.published


@pytest.mark.parametrize("changes, needle", [
    ({"search": {"subset": [5], "lr": [0.001, 0.005]}}, "search.lr: a replication searches nothing"),
    ({"scheduler": {"type": "asha"}}, "a replication runs every seed to the end"),
    ({"confirm_top_k": 1}, "confirm_top_k: a replication trains its settings with each seed"),
    ({"seeds": 0}, "seeds: must be at least 1"),
    ({"kind": "replica"}, "kind: must be one of search, replication"),
    ({"kind": "search", "search": {"subset": [5], "temperature": [2.0]}}, "published: only a replication"),
    ({"published": {"source": "x", "metric": "macro_acc", "figures": {5: 142.0}}}, "published.figures.5: a percentage"),
    ({"published": {"source": "x", "metric": "macro_acc", "figures": {7: 40.0}}},
     "published.figures: 7 is not a subset"),
    ({"published": {"source": "", "metric": "macro_acc", "figures": {5: 40.0}}}, "published.source: say where"),
    ({"published": {"source": "x", "metric": "eer", "figures": {5: 40.0}}}, "published.metric: 'eer' is not a metric"),
    ({"published": [42.4]}, "published: expected {source"),
])  # fmt: skip
def test_a_replication_that_would_select_or_a_malformed_published_table_is_refused(changes, needle):
    with pytest.raises(SpaceError, match=needle.replace("(", r"\(").replace("{", r"\{").replace(".", r"\.")):
        build_space(_replication(**changes))


def test_a_search_with_nothing_to_search_points_to_a_replication():
    raw = read_space_file("kd")
    raw["search"] = {"subset": [5]}
    with pytest.raises(SpaceError, match="make the space kind: replication"):
        build_space(raw)


def _arms(**arms) -> dict:
    raw = read_space_file("kd")
    raw["search"] = {"subset": [5], "arm": arms}
    raw["sampler"] = "grid"
    return raw


def test_arms_set_several_settings_at_once_and_are_recorded():
    from spaces.space import plain, to_mapping

    space = build_space(_arms(low={"lr": 0.001, "kd_lambda": 0.1}, high={"lr": 0.01, "kd_lambda": 0.5}))
    assert [(d.name, d.choices) for d in space.dimensions] == [("arm", ("low", "high"))] and space.samples == 2
    assert space.arms == {"low": {"lr": 0.001, "kd_lambda": 0.1}, "high": {"lr": 0.01, "kd_lambda": 0.5}}
    assert build_space(plain(to_mapping(space))) == space, "the record holds the arms"


@pytest.mark.parametrize("arms, fixed, needle", [
    ({"a": {"lr": 0.001}}, {"lr": 0.002}, "search.arm.a.lr: lr is set by the arms and also fixed"),
    ({"a": {"lrr": 0.001}}, {}, "search.arm.a.lrr: not a setting an arm can set (did you mean 'lr'?)"),
    ({"a": {"kd_lambda": 2.0}}, {}, "search.arm.a.kd_lambda: must lie in [0.0, 1.0], got 2.0"),
    ({"a": {}}, {}, "search.arm.a: expected the arm's settings"),
    ({"a": {"subset": 5}}, {}, "search.arm.a.subset: not a setting an arm can set"),
])  # fmt: skip
def test_a_malformed_arm_is_refused(arms, fixed, needle):
    raw = {**_arms(**arms), **fixed}
    with pytest.raises(SpaceError, match=re.escape(needle)):
        build_space(raw)
