"""What a run leaves a researcher, read back from one real small search run through the Python entry point:
its console, the Optuna journal against the leaderboard, the TensorBoard files, the exports, and its record
(a valid space, a resume without flags, a refused resume naming what differs, a refused start blocking nothing)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
import tomllib
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from results.formats import max_difference
from search.preflight import check_run_dir
from search.run import main, make_request, parse_args
from search.systems import build_space
from spaces.space import to_mapping
from spaces.space_file import read_space_file
from tests.small_run import DEVICES, NAME, TINY_SETTINGS
from trainables.asc.synthetic import CLASSES

ROOT = Path(__file__).resolve().parents[2]
STATES = {"complete": TrialState.COMPLETE, "stopped": TrialState.PRUNED, "failed": TrialState.FAIL}
SEARCHED = ("temperature", "kd_lambda", "lr")


@pytest.fixture(scope="module")
def run(kd_run) -> dict:
    """tests/small_run.py's search: subsets 5 and 10, 2 trials each of 2 epochs, ASHA from epoch 1 (so a trial may be
    stopped), the no-KD references."""
    return kd_run


def test_the_console_is_the_project_s_own(run):
    console, run_dir = run["console"], run["dir"]
    lines = console.splitlines()
    assert len(lines) <= 60, console
    for banner in ("== Dataset ==", "== Teachers ==", "== Search: 2 trials per subset ==", "== References:",
                   "== Results =="):  # fmt: skip
        assert banner in console, banner
    for subset in (5, 10):
        assert re.search(rf"search subset {subset}%: 2/2 done · best acc \d\.\d{{3}} unseen \d\.\d{{3}} \[\w+\]", console)
        assert re.search(rf"search subset {subset}%: 1/2 done .*· ETA \d+m\d\ds", console), console
        assert f"teacher subset {subset}%: epoch 1/1" in console
    # Before the first trial (the teachers'), the work planned and how long the students take (issue 26).
    (planned,) = [i for i, line in enumerate(lines) if line.startswith("Planned: ")]
    assert planned < lines.index("== Teachers =="), console
    expected = (r"Planned: 6 student trials \(4 search, 2 no-KD\) × 2 epochs × \d+ clips, validated on 90 clips "
                r"an epoch; about \d+m\d\ds at 2 trials at once \(a step of 50 clips timed: \d\.\d\d s on the cpu; "
                r"students only, before ASHA's early stops\)")  # fmt: skip
    assert re.fullmatch(expected, lines[planned]), lines[planned]
    assert [line for line in lines if "tensorboard --logdir" in line] == [f"Watch it with: tensorboard --logdir {run_dir}"]
    for ray_output in ("driver_artifacts", "started with configuration", "Trial status", "Current best trial",
                       "data_dir", "subset100", "A new study created"):  # fmt: skip
        assert ray_output not in console, ray_output
    assert "Subset 5%: 2 trials" in console and "Subset 10%: 2 trials" in console and "What distillation did" in console


def test_the_api_returns_the_leaderboard(run):
    written = pd.read_csv(run["dir"] / "leaderboard.csv", dtype={"trial_id": str})
    assert run["board"]["trial_id"].tolist() == written["trial_id"].tolist()
    assert run["board"]["rank"].tolist() == [1, 2, 1, 2] and run["board"]["subset"].tolist() == [5, 5, 10, 10]


def _epochs(trial_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(trial_dir) / "result.json").read_text().splitlines() if line.strip()]


def test_every_optuna_trial_agrees_with_its_leaderboard_row(run):
    storage = JournalStorage(JournalFileBackend(str(run["dir"] / "optuna.journal")))
    for subset, board in run["board"].groupby("subset"):
        study = optuna.load_study(study_name=f"{NAME}/subset{subset}", storage=storage)
        assert study.metric_names == ["acc"]
        board = board.set_index("trial_id")
        searched = [t for t in study.trials if t.user_attrs["stage"] == "search"]
        assert sorted(t.user_attrs["trial_id"] for t in searched) == sorted(board.index)
        for trial in searched:
            row = board.loc[trial.user_attrs["trial_id"]]
            assert trial.state == STATES[row["status"]]
            reported = {r["training_iteration"]: r["acc"] for r in _epochs(row["trial_dir"])}
            assert trial.intermediate_values == pytest.approx(reported), "every epoch, the last included"
            assert trial.value == pytest.approx(row["acc"]) and max(reported) == row["epochs"]
            assert trial.params == pytest.approx({p: row[p] for p in SEARCHED})


def _hparams(accumulator: EventAccumulator) -> tuple[dict, int]:
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"]).session_end_info
    values = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    return values, end.status


def test_tensorboard_is_grouped_per_device_and_true_to_each_trial(run):
    board = run["board"].set_index("trial_id")
    for trial_id, row in board.iterrows():
        accumulator = EventAccumulator(row["trial_dir"]).Reload()
        tags = set(accumulator.Tags()["scalars"])
        assert {"acc/mean", "acc/seen", "acc/unseen", "acc/macro", "loss/train", *(f"acc/{d}" for d in DEVICES)} <= tags
        assert all("/" in tag and not tag.startswith("ray/") for tag in tags), tags
        assert not {"done", "should_checkpoint", "iterations_since_restore"} & {t.split("/")[-1] for t in tags}
        assert [e.step for e in accumulator.Scalars("acc/s4")] == list(range(1, row["epochs"] + 1))
        layout = layout_pb2.Layout.FromString(accumulator.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
        charts = {c.title: c.multiline.tag for cat in layout.category for c in cat.chart}
        (device_regex,) = charts["validation accuracy, one line per device"]
        assert sorted(t for t in tags if re.match(device_regex, t)) == sorted(f"acc/{d}" for d in DEVICES)
        values, status = _hparams(accumulator)
        assert values["status"] == row["status"]
        assert status == {"complete": 1, "stopped": 0, "failed": 2}[row["status"]]  # success, unknown, failure
        assert values["lr"] == pytest.approx(row["lr"]) and values["subset"] == row["subset"]
    references = [_hparams(EventAccumulator(str(p.parent)).Reload())[0] for p in (run["dir"] / "no_kd").glob("*/params.json")]
    assert sorted(values["subset"] for values in references) == [5, 10]
    for values in references:  # each subset's best configuration, without the teacher
        best = run["board"][run["board"]["subset"] == values["subset"]].iloc[0]
        assert values["kd_lambda"] == 1.0 and values["lr"] == pytest.approx(best["lr"])
        assert values["temperature"] == pytest.approx(best["temperature"])


def test_every_run_exports_onnx_and_torchscript_with_class_names(run):
    import onnxruntime

    folder = run["dir"] / "best" / "subset_5"
    assert sorted(p.name for p in folder.iterdir()) == ["student.onnx", "student.pt", "student.ts"]
    meta = onnxruntime.InferenceSession(str(folder / "student.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == CLASSES and meta["sample_rate"] == "32000"
    assert meta["trial_id"] == run["board"].iloc[0]["trial_id"]
    extra = {"metadata.json": ""}
    torch.jit.load(str(folder / "student.ts"), _extra_files=extra)
    assert json.loads(json.loads(extra["metadata.json"])["classes"]) == CLASSES
    for exported in ("student.onnx", "student.ts"):
        assert max_difference(folder / "student.pt", folder / exported) < 1e-4


def _argv(run, *extra) -> list[str]:
    argv = ["--space", "kd", "--storage", str(run["storage"]), "--subsets", "5,10", "--samples", "2"]
    for setting in TINY_SETTINGS + ["scheduler.grace_period=1"]:
        argv += ["--set", setting]
    return argv + list(extra)  # after the settings above, so an --set here wins


def test_the_record_is_a_valid_space(run):
    record = run["dir"] / "space.yaml"
    request = make_request(parse_args(["--space", str(record), "--name", "copy", "--storage", str(run["storage"])]))
    recorded = yaml.safe_load(record.read_text())
    settings = {k: v for k, v in recorded.items() if k != "dataset"}
    assert yaml.safe_load(yaml.safe_dump(to_mapping(request.space))) == settings
    assert build_space(settings) == request.space
    assert request.data == run["storage"] / recorded["dataset"]  # the record names the dataset it ran on


def test_a_refused_resume_names_what_differs(run, service_data, capsys):
    assert main(_argv(run, "--name", NAME, "--resume", "--set", "epochs=3", "--data", str(service_data))) == 2
    err = capsys.readouterr().err
    assert "epochs: 2 → 3" in err and "Traceback" not in err


def test_a_start_refused_after_ray_started_blocks_nothing(run, service_data, capsys):
    argv = _argv(run, "--name", "refused", "--data", str(service_data))
    assert main([*argv, "--gpus-per-trial", "2"]) == 2
    assert "GPUs" in capsys.readouterr().err
    assert not (run["storage"] / "refused" / "space.yaml").exists()
    check_run_dir(make_request(parse_args(argv)))  # the corrected start is not refused ("already holds a run")


def test_a_moved_storage_resumes_by_name_alone_and_retrains_a_missing_teacher(run, tmp_path, capsys):
    """The run's storage moved elsewhere (a copy, while the original is away: other tests read it), a teacher
    deleted, and `--resume --name` alone given."""
    moved, away = tmp_path / "elsewhere", tmp_path / "away"
    shutil.copytree(run["storage"], moved, symlinks=True)
    teachers = pd.read_csv(moved / NAME / "teachers.csv")
    teacher = moved / Path(teachers.loc[teachers["subset"] == 5, "logits"].iloc[0]).relative_to(run["storage"])
    teacher.unlink()
    capsys.readouterr()
    shutil.move(run["storage"], away)  # nothing may be read where the run was
    try:
        assert main(["--resume", "--name", NAME, "--storage", str(moved)]) == 0
    finally:
        shutil.move(away, run["storage"])
    out = capsys.readouterr().out
    assert "Teacher for subset 5%: to make" in out and "Teacher for subset 10%: cached" in out and teacher.is_file()
    board = pd.read_csv(moved / NAME / "leaderboard.csv", dtype={"trial_id": str})
    assert sorted(board["trial_id"]) == sorted(run["board"]["trial_id"]), "the finished trials are kept, none added"
    assert board["trial_dir"].str.startswith(str(moved)).all()
    assert (moved / NAME / "best" / "subset_5" / "student.onnx").is_file()


def test_console_script_is_the_command_line():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["kd-search"].split(":")
    entry = getattr(importlib.import_module(module), function)
    assert entry is main
    assert entry(["--space", "no-such-space"]) == 2


def test_teacher_cache_keys_hold_no_absolute_path(service_data, tmp_path):
    """A storage moved or copied elsewhere finds its teachers: the same settings give the same file names."""
    from search.request import RunRequest
    from search.teachers import TeacherPlan

    names = []
    for ensemble in (1, 2):
        raw = read_space_file("kd")  # teachers pretrained on the synthetic stand-in: a stage before fine-tuning
        raw["teacher"]["ensemble"] = ensemble
        space = build_space(raw)
        found = []
        for storage in (tmp_path / "here", tmp_path / "moved" / "there"):
            request = RunRequest(space=space, storage=storage, name="x", data=service_data, address=None, resume=False)
            plan = TeacherPlan(request, service_data)
            found.append([plan.subset_path(s).name for s in (5, 25)] + [path.name for _, _, path in plan.stages])
        assert found[0] == found[1]
        names.append(found[0])
    assert names[0] != names[1] and names[1][0].startswith("ensemble-")


def test_verbose_brings_ray_s_own_output_back(service_data, tmp_path):
    from search.progress import SearchProgress
    from search.request import RunRequest
    from search.tuning import _run_config

    space = build_space(read_space_file("kd"))
    progress = SearchProgress("search", "acc", "max", 4, {5: 2})
    for verbose, level in ((False, 0), (True, 1)):
        request = RunRequest(space=space, storage=tmp_path, name="x", data=service_data, address=None, resume=False,
                             verbose=verbose)  # fmt: skip
        config = _run_config(request, "search", space, keep_checkpoints=True, progress=progress)
        assert config.verbose == level and progress in config.callbacks  # the project's lines either way
