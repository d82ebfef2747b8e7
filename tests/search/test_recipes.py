"""The published recipes' details: comparable evaluation halves, warm-up, the teacher's schedule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
import yaml

from results.leaderboard import device_columns
from results.student_logits import main as student_logits_main
from search.run import main
from tests.tau22_fixture import SPLITS
from trainables.asc.data import load_prepared
from trainables.asc.logits_file import average_logits, read_logits, read_teacher_logits, write_seed_logits
from trainables.asc.student_training import StudentConfig
from trainables.asc.tau22 import halve_by_location, prepare_at_rate, prepare_tau22
from trainables.common import exp_warmup_linear_down_factor, per_epoch


def test_the_validation_and_test_halves_of_a_real_test_csv_are_balanced_per_scene():
    """halve_by_location on real DCASE24 test filenames: the shipped cut of test.csv (4 locations a scene,
    one segment per device at each; tests/data/tau22), 60 to 90 clips a location."""
    test = pd.read_csv(SPLITS / "test.csv.gz", sep="\t")
    parts = test["filename"].str.removeprefix("audio/").str.split("-")
    meta = test.assign(identifier=parts.str[1] + "-" + parts.str[2])  # TAU22's identifier: city-location
    val, rest = halve_by_location(meta, test["filename"].tolist())
    assert len(test) == 3490 and sorted(val + rest) == sorted(test["filename"])
    assert (val, rest) == halve_by_location(meta, test["filename"].tolist()), "deterministic"
    location = dict(zip(meta["filename"], meta["identifier"]))
    assert not {location[f] for f in val} & {location[f] for f in rest}, "whole locations"
    label = dict(zip(test["filename"], test["scene_label"]))
    assert len(set(label.values())) == 10
    for scene in sorted(set(label.values())):
        a, b = sum(label[f] == scene for f in val), sum(label[f] == scene for f in rest)
        assert a and b, f"{scene}: both halves hold it"
        assert abs(a - b) <= 0.15 * (a + b), f"{scene}: {a} against {b} clips"
    assert abs(len(val) - len(rest)) <= 0.05 * len(test)


def test_warm_up_in_steps_overrides_the_fraction_and_is_capped_by_the_run():
    assert StudentConfig(warmup_steps=2000).warmup(4200) == 2000  # the baseline's 5 % split: 47.6 % of the steps
    assert StudentConfig(warmup_steps=2000).warmup(1000) == 1000
    assert StudentConfig(warmup_fraction=0.05).warmup(4200) == 210


def test_the_teachers_schedule_is_cp_jkus_exponential_warm_up_and_linear_ramp_down():
    factors = [exp_warmup_linear_down_factor(e, 3, 3, 10, 0.01) for e in range(25)]
    assert factors[0] == pytest.approx(torch.exp(torch.tensor(-5 * (1 - 0.5 / 3) ** 2)).item())
    assert factors[0] < factors[1] < factors[2] < factors[3] == 1.0, "warm-up over 3 epochs"
    assert all(factors[e] > factors[e + 1] for e in range(3, 13)), "linear decay from epoch 3 …"
    assert factors[13] == pytest.approx(0.01) and set(factors[13:]) == {factors[13]}, "… to 1 % by epoch 13"
    assert factors[8] == pytest.approx(0.01 + 0.99 * 5 / 10)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-5)
    schedule = per_epoch(optimizer, 4, lambda e: exp_warmup_linear_down_factor(e, 3, 3, 10, 0.01))
    seen = []
    for _ in range(4 * 14):
        seen.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert seen[0:4] == [seen[0]] * 4 and seen[52:56] == pytest.approx([1e-7] * 4), "per epoch, stepped per batch"


def _sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


# Each recipe at the size of a test: one epoch, small batches; PaSST-S replaced by a reduced PaSST that the
# space explicitly allows to start untrained (the AudioSet weights are tested in test_passt_weights.py).
# The students a quarter as wide as the baseline's (base_channels 8): these tests are about the recipes, not the
# architecture (test_student.py and the shared small run hold it to the published table).
SMALL_STUDENT = ("epochs=1", "batch_size=50", "eval_batch_size=300", "base_channels=8")
REDUCED_PASST = ("arch=passt_tiny", "weights=null", "allow_untrained=true", "embed_dim=32", "depth=1", "num_heads=2",
                 "epochs=1", "batch_size=50", "eval_batch_size=300")  # fmt: skip
ON_CPU = ("--gpus-per-trial", "0", "--set", "resources.teacher_gpus_per_trial=0")


@pytest.fixture(scope="module")
def real(tau22_written, tmp_path_factory):
    base = tmp_path_factory.mktemp("recipes")
    irs = base / "micirp"
    irs.mkdir()
    for name, taps in {"short": [1.0, 0.5], "long": [0.9] + [0.0] * 200 + [0.3]}.items():
        soundfile.write(irs / f"{name}.wav", np.asarray(taps, dtype=np.float32), 44100)
    return {"root": str(tau22_written), "storage": base / "runs", "irs": str(irs), "base": base}


def _run(real: dict, space: str, name: str, *extra: str) -> int:
    return main(["--space", space, "--data", real["root"], "--storage", str(real["storage"]), "--name", name,
                 "--subsets", "5", *extra])  # fmt: skip


def test_an_untrained_teacher_on_real_data_is_refused_unless_allowed(real, capsys):
    assert _run(real, "kd", "tiny_teacher", "--samples", "1") == 2
    err = capsys.readouterr().err
    assert "teacher.arch: on real data the teacher would be a cnn from random weights" in err
    assert "teacher.allow_untrained: true" in err and "Traceback" not in err
    assert _run(real, "passt_teacher", "no_weights", *ON_CPU, *_sets("weights=null", f"dir_path={real['irs']}")) == 2
    assert "without weights" in capsys.readouterr().err
    assert not (real["storage"] / "tiny_teacher").exists() and not (real["storage"] / "no_weights").exists()


def test_the_dcase24_baseline_replication_sets_its_figure_beside_the_published_one(ray_session, real, capsys):
    capsys.readouterr()
    assert _run(real, "dcase24_baseline", "baseline", *_sets(*SMALL_STUDENT, "seeds=2")) == 0
    out = capsys.readouterr().out
    run = real["storage"] / "baseline"
    # Two seeds, nothing selected, each on all of test.csv; the table is their mean ± std beside the published 42.40.
    board = pd.read_csv(run / "leaderboard.csv", dtype={"trial_id": str})
    assert sorted(board["seed"]) == [0, 1] and (board["status"] == "complete").all()
    figures = 100 * board["full_test_macro_acc"]
    table = pd.read_csv(run / "replication.csv")
    (row,) = table.itertuples()
    assert (row.subset, row.runs, row.planned, row.figure, row.published) == (5, 2, 2, "full_test_macro_acc", 42.40)
    assert row.mean == pytest.approx(figures.mean()) and row.std == pytest.approx(figures.std(ddof=1))
    assert row.difference == pytest.approx(figures.mean() - 42.40)
    assert "Replication: full_test_macro_acc on all of test.csv" in out and "CPJKU/dcase2024_task1_baseline" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("5%"))
    assert "42.40" in line and f"{row.mean:.2f} ± {row.std:.2f}" in line and "2 of 2" in line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "replication" and summary["rank_score"] == pytest.approx(row.mean / 100)
    assert "Against the published table" in (run / "report.html").read_text()
    assert yaml.safe_load((run / "space.yaml").read_text())["kind"] == "replication", "the record says which kind"
    student = torch.load(run / "best" / "subset_5" / "student.pt", weights_only=True)
    assert student["config"]["train"]["warmup_steps"] == 2000 and student["config"]["train"]["kd_lambda"] == 1.0
    metrics = student["metrics"]
    for key in ("macro_acc", "test_macro_acc", "full_test_macro_acc", "full_test_acc_s6", "acc_real", "acc_sim_seen"):
        assert key in metrics, key
    data = load_prepared(next((real["storage"] / "cache" / "datasets").glob("tau22-*")))
    assert sorted(data.splits["full_test"].tolist()) == sorted(np.concatenate([data.splits["val"], data.splits["test"]]).tolist())
    assert not (run / "teachers").exists(), "λ = 1: no teacher"
    assert {"full_test_macro_acc", "full_test_acc_s6", "acc_real", "acc_sim_seen"} <= set(board.columns)
    assert "acc_real" not in [f"acc_{d}" for d in device_columns(dict.fromkeys(board.columns))], "a group, not a device"


def test_ntu_kd_distils_from_the_mean_of_a_list_of_logits_files_one_a_students(ray_session, real, capsys):
    student = real["storage"] / "baseline" / "best" / "subset_5" / "student.pt"
    if not student.is_file():
        pytest.skip("needs the baseline recipe's student")
    cnn = real["base"] / "cnn_5.pt"
    assert student_logits_main([str(student), "--data", real["root"], "--out", str(cnn), "--storage",
                                str(real["storage"])]) == 0  # fmt: skip
    assert "meta.csv order" in capsys.readouterr().out
    data = load_prepared(next((real["storage"] / "cache" / "datasets").glob("tau22-*")))
    cnn_logits = read_teacher_logits(cnn, data)
    assert cnn_logits.shape == (len(data.filenames), 10) and np.isfinite(cnn_logits).all()
    other = real["base"] / "other_5.pt"
    write_seed_logits(other, np.flip(cnn_logits, axis=1).copy())
    expected = (cnn_logits + np.flip(cnn_logits, axis=1)) / 2
    assert np.allclose(average_logits([cnn, other], data), expected, atol=1e-6)

    files = f"['{real['base']}/cnn_{{subset}}.pt', '{real['base']}/other_{{subset}}.pt']"  # YAML: quoted, for the braces
    assert _run(real, "ntu_kd", "ntu", *_sets(*SMALL_STUDENT, "seeds=1", f"teacher.logits={files}",
                f"dir_path={real['irs']}", "mixup_alpha=1.0", "teacher.allow_weak=true")) == 0  # fmt: skip
    (cached,) = (real["storage"] / "cache" / "teachers").glob("file-*.pt")
    assert np.allclose(read_logits(cached)["logits"].numpy(), expected, atol=1e-5), "the students learnt from the mean"
    board = pd.read_csv(real["storage"] / "ntu" / "leaderboard.csv", dtype={"trial_id": str})
    assert board.iloc[0]["status"] == "complete"
    train = torch.load(real["storage"] / "ntu" / "best" / "subset_5" / "student.pt", weights_only=True)["config"]["train"]
    assert (train["roll_sec"], train["dir_prob"], train["mixup_alpha"]) == (0.0, 0.6, 1.0)


def test_the_teacher_recipes_run_and_sit_reads_tau22_at_44_1_khz(ray_session, real, cochl_written, capsys):
    irs = f"dir_path={real['irs']}"
    assert _run(real, "passt_teacher", "passt", *ON_CPU, *_sets(*REDUCED_PASST, irs, "search.lr=[0.001]")) == 0
    best = real["storage"] / "passt" / "best" / "subset_5"
    assert (best / "logits.pt").is_file() and (best / "logits_meta_order.pt").is_file()
    board = pd.read_csv(real["storage"] / "passt" / "leaderboard.csv", dtype={"trial_id": str})
    full = [c for c in board if c.startswith("full_test_")]
    assert "test_macro_acc" in board and not full, "chosen on the validation half: no figure on all of test.csv"
    # That teacher was chosen on the validation half: a replication, whose figures take in all of test.csv, refuses it.
    chosen = f"teacher.logits=['{real['storage']}/passt/best/subset_{{subset}}/logits_meta_order.pt']"
    capsys.readouterr()
    assert _run(real, "ntu_kd", "leak", *_sets(*SMALL_STUDENT, chosen, irs, "teacher.allow_weak=true")) == 2
    err = capsys.readouterr().err
    assert "is the best teacher of the run" in err and "chosen on the validation half" in err and "ntu_pipeline" in err
    assert not (real["storage"] / "leak").exists()

    assert _run(real, "sit_teacher", "sit", *ON_CPU, *_sets(*REDUCED_PASST, irs, f"cochlscene={cochl_written}",
                "sit_epochs=1", "search.arm=[sit]")) == 0  # fmt: skip
    rates = {json.loads((d / "dataset.json").read_text())["sample_rate"]
             for d in (real["storage"] / "cache" / "datasets").glob("*-*") if (d / "dataset.json").is_file()}  # fmt: skip
    assert 44100 in rates, "TAU22 and CochlScene read at the teacher's rate"
    assert (real["storage"] / "sit" / "best" / "subset_5" / "logits.pt").is_file()
    assert len(list((real["storage"] / "sit" / "teacher_sit_sit").glob("*/params.json"))) == 1, "the CochlScene stage"
    board = pd.read_csv(real["storage"] / "sit" / "leaderboard.csv", dtype={"trial_id": str})
    assert board["arm"].tolist() == ["sit"] and board.iloc[0]["status"] == "complete"
    params = json.loads(next((real["storage"] / "sit" / "search").glob("*/params.json")).read_text())
    assert params["arm"] == "sit", "the trial gets its arm's name; the arm's settings are applied in the trial"


def _recipe(name: str, tmp_path: Path, **paths: str):
    """A recipe space built as a run would, its local files pointed at stand-ins."""
    from search.systems import build_space, system_of
    from spaces.space_file import apply_override, read_space_file

    raw = read_space_file(name)
    for key, value in paths.items():
        apply_override(raw, f"{key}={value}", system_of(raw))
    return build_space(raw)


def test_the_recipe_files_hold_the_reference_settings(tmp_path):
    weights, cochl = tmp_path / "passt.pt", tmp_path / "CochlScene"
    weights.write_bytes(b"")
    cochl.mkdir()
    soundfile.write(tmp_path / "ir.wav", np.ones(4, dtype=np.float32), 32000)
    baseline = _recipe("dcase24_baseline", tmp_path)
    s = baseline.settings
    assert (s.epochs, s.batch_size, s.weight_decay, s.warmup_steps, s.roll_sec, s.freqm) == (150, 256, 1e-4, 2000, 0.1, 48)
    assert (s.mixstyle_p, s.mixstyle_alpha, s.kd_lambda, baseline.metric) == (0.4, 0.3, 1.0, "macro_acc")
    assert s.lr == 0.005 and baseline.budget.param_bytes == 128000
    assert baseline.kind == "replication" and [d.choices for d in baseline.dimensions] == [(0, 1, 2, 3, 4)], "5 seeds"
    assert baseline.published.figures == {5: 42.40, 10: 45.29, 25: 50.29, 50: 53.19, 100: 56.99}
    ntu = _recipe("ntu_kd", tmp_path, dir_path=str(tmp_path))
    s = ntu.settings
    assert (s.temperature, s.kd_lambda, s.lr, s.roll_sec, s.dir_prob, s.warmup_fraction) == (2.0, 0.02, 0.005, 0.0, 0.6,
                                                                                             0.024)  # fmt: skip
    assert ntu.kind == "replication" and ntu.seeds == 5 and ntu.metric == "macro_acc"
    assert ntu.published.figures == {5: 47.98, 10: 53.03, 25: 56.81, 50: 59.83, 100: 61.74}
    searched = _recipe("ntu_kd_search", tmp_path, dir_path=str(tmp_path))
    assert searched.kind == "search" and {d.name for d in searched.dimensions} == {"temperature", "kd_lambda", "lr"}
    cnn = _recipe("ntu_cnn_teacher", tmp_path, dir_path=str(tmp_path)).settings
    assert (cnn.kd_lambda, cnn.dir_prob, cnn.roll_sec, cnn.mixup_alpha) == (1.0, 0.6, 0.0, 1.0)
    assert cnn.mixup_mixes == "targets", "NTU's mixup: the targets only"
    passt = _recipe("passt_teacher", tmp_path, weights=str(weights), dir_path=str(tmp_path)).settings
    assert (passt.arch, passt.epochs, passt.batch_size, passt.weight_decay) == ("passt_s_swa_p16_128_ap476", 25, 80, 1e-3)
    assert (passt.s_patchout_t, passt.s_patchout_f, passt.freqm, passt.timem, passt.dir_prob) == (0, 6, 48, 20, 0.6)
    assert (passt.schedule, passt.warmup_epochs, passt.rampdown_start, passt.rampdown_epochs, passt.lr_floor) == (
        "exp_warmup_linear_down", 3, 3, 10, 0.01)
    assert (passt.mixstyle_p, passt.mixstyle_alpha, passt.precision) == (0.4, 0.4, "fp32"), "fp32, as the references"
    sit = _recipe("sit_teacher", tmp_path, weights=str(weights), cochlscene=str(cochl), dir_path=str(tmp_path))
    s = sit.settings
    assert (s.sit_epochs, s.sit_batch_size, s.sample_rate, s.roll_sec, s.precision) == (25, 32, 44100, 0.0, "fp32")


def test_the_sit_recipes_arms_are_ntus_two_scripts_rates(tmp_path):
    """Seq-FT: one lr for every parameter (CochlScene 1e-4, TAU22 1e-5); SIT: NTU's slow learner (CochlScene backbone
    1e-5, TAU22 backbone 5e-5, the heads at 1e-3 in both), as the optimiser's groups get them."""
    import dataclasses

    weights, cochl = tmp_path / "passt.pt", tmp_path / "CochlScene"
    weights.write_bytes(b"")
    cochl.mkdir()
    soundfile.write(tmp_path / "ir.wav", np.ones(4, dtype=np.float32), 32000)
    sit = _recipe("sit_teacher", tmp_path, weights=str(weights), cochlscene=str(cochl), dir_path=str(tmp_path))
    assert [d.choices for d in sit.dimensions] == [("seq_ft", "sit")] and sit.samples == 2, "both arms, once each"
    arms = {arm: dataclasses.replace(sit.settings, **values) for arm, values in sit.arms.items()}
    rates = {arm: {stage: config.stage(stage).rates() for stage in ("sit", "finetune")} for arm, config in arms.items()}
    assert rates == {"seq_ft": {"sit": (1e-4, 1e-4), "finetune": (1e-5, 1e-5)},
                     "sit": {"sit": (1e-5, 1e-3), "finetune": (5e-5, 1e-3)}}  # fmt: skip
    one = _recipe("sit_teacher", tmp_path, weights=str(weights), cochlscene=str(cochl), dir_path=str(tmp_path),
                  **{"search.arm": "[sit]"})  # fmt: skip
    assert list(one.arms) == ["sit"] and one.samples == 1


def test_sits_stages_take_their_own_settings_and_the_head_layernorm_is_head():
    from trainables.asc.teacher import TeacherConfig, is_head

    config = TeacherConfig(lr=1e-5, batch_size=80, epochs=25, sit_epochs=25, sit_lr=1e-4, sit_batch_size=32)
    sit = config.stage("sit")
    assert (sit.epochs, sit.lr, sit.batch_size) == (25, 1e-4, 32)
    assert config.stage("finetune") == config
    assert TeacherConfig(lr=1e-5).stage("sit").lr == 1e-5, "no stage lr: the run's"
    assert is_head("net.head.0.weight") and is_head("net.head.1.bias") and is_head("net.head_dist.weight")
    assert not is_head("net.blocks.0.norm1.weight") and not is_head("net.norm.weight")


def test_no_figure_shown_is_computed_on_the_clips_it_was_selected_on(real):
    """A search selects on the validation half of test.csv and reports the other half only; a replication selects
    nothing and reports all of it; the halves share no clip (nor recording location: test_tau22.py)."""
    from search.request import RunRequest
    from search.teachers import run_context
    from search.trial_context import TrialContext
    from trainables.asc.tau22 import prepare_tau22

    data = load_prepared(prepare_tau22(Path(real["root"]), real["storage"] / "cache" / "datasets", progress=False))
    val, test, full = (set(data.splits[name].tolist()) for name in ("val", "test", "full_test"))
    assert val and test and not val & test and full == val | test
    reported = {}
    for name in ("kd", "ntu_kd_search", "dcase24_baseline", "teacher_tiny", "ntu_cnn_teacher"):
        space = _recipe(name, real["base"], **({"dir_path": real["irs"]} if name.startswith("ntu") else {}))
        request = RunRequest(space=space, storage=real["storage"], name=name, data=data.directory, address=None,
                             resume=False)  # fmt: skip
        reported[name] = (space.kind, run_context(request, TrialContext).held_out)
    assert reported == {"kd": ("search", ("test",)), "ntu_kd_search": ("search", ("test",)),
                        "dcase24_baseline": ("replication", ("test", "full_test")),
                        "teacher_tiny": ("search", ("test",)),
                        "ntu_cnn_teacher": ("replication", ("test", "full_test"))}  # fmt: skip


def _teacher_files(storage: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (storage / "cache" / "teachers").glob("*.pt")}


def test_ntu_pipeline_trains_caches_and_averages_its_teachers_then_prints_the_table(ray_session, real, capsys):
    """spaces/ntu_pipeline.yaml at the size of a test: 2 PaSST teachers (an ensemble of their own) and 1 CNN teacher
    on one split, 1 epoch; the students distil from the mean of the 3 members' logits; a second run with the same
    teachers trains none."""
    tiny = _sets(*SMALL_STUDENT, "seeds=1", "weights=null", f"dir_path={real['irs']}", "cnn_teachers=1",
                 "teacher.ensemble=2", "teacher.arch=passt_tiny", "teacher.allow_untrained=true",
                 "teacher.allow_weak=true", "teacher.embed_dim=32", "teacher.depth=1", "teacher.num_heads=2",
                 "teacher.epochs=1", "teacher.batch_size=50", "teacher.eval_batch_size=300", "cnn_teacher.epochs=1",
                 "cnn_teacher.batch_size=50", "cnn_teacher.eval_batch_size=300", "cnn_teacher.base_channels=8")  # fmt: skip
    argv = ["--space", "ntu_pipeline", "--data", real["root"], "--storage", str(real["storage"]), "--subsets", "5",
            *ON_CPU, *tiny]  # fmt: skip
    capsys.readouterr()
    assert main([*argv, "--name", "pipeline"]) == 0
    out = capsys.readouterr().out
    run = real["storage"] / "pipeline"
    for experiment, seeds in (("teachers", [0, 1]), ("cnn_teachers", [0])):  # one Ray trial a seed
        configs = [json.loads(p.read_text()) for p in (run / experiment).glob("*/params.json")]
        assert sorted((c["subset"], c["seed"]) for c in configs) == [(5, seed) for seed in seeds], experiment
    cnn = json.loads(next((run / "cnn_teachers").glob("*/params.json")).read_text())["teacher"]
    assert (cnn["kd_lambda"], cnn["mixup_mixes"], cnn["dir_path"]) == (1.0, "targets", real["irs"]), "the run's DIR"
    teachers = pd.read_csv(run / "teachers.csv")
    assert sorted(teachers["subset"]) == [5]
    datasets = real["storage"] / "cache" / "datasets"
    students = load_prepared(prepare_tau22(Path(real["root"]), datasets, progress=False))
    assert (datasets / f"splits-{students.fingerprint}").is_dir(), "the PaSST teachers read TAU22 again at 44.1 kHz"
    assert load_prepared(prepare_at_rate(students, Path(real["root"]), datasets, 44100)).sample_rate == 44100
    for path in map(Path, teachers["logits"]):
        combined = read_logits(path)
        assert path.name.startswith("kd-ensemble-")
        members = [p for p in (real["storage"] / "cache" / "teachers").glob("*.pt")
                   if (p.name.startswith("cnn-") or len(p.stem) == 20) and read_logits(p)["filenames"] == combined["filenames"]]  # fmt: skip
        assert sorted(len(p.stem) == 20 for p in members) == [False, True, True], "1 CNN and 2 PaSST members"
        mean = np.mean([read_logits(p)["logits"].numpy() for p in members], axis=0)
        assert np.allclose(combined["logits"].numpy(), mean, atol=1e-5), "the students learn from the members' mean"
    table = pd.read_csv(run / "replication.csv")
    assert table["subset"].tolist() == [5] and table["published"].tolist() == [47.98]
    board = pd.read_csv(run / "leaderboard.csv", dtype={"trial_id": str})
    assert table["mean"].tolist() == pytest.approx((100 * board.sort_values("subset")["full_test_macro_acc"]).tolist())
    assert "Replication: full_test_macro_acc on all of test.csv" in out and "Sean_NTU_task1_2" in out
    assert [line.split()[:2] for line in out.splitlines() if line.strip().startswith(("5%", "10%"))] == [
        ["5%", "47.98"]]
    train = torch.load(run / "best" / "subset_5" / "student.pt", weights_only=True)["config"]["train"]
    assert (train["temperature"], train["kd_lambda"], train["lr"], train["dir_path"]) == (2.0, 0.02, 0.005, real["irs"])

    before = _teacher_files(real["storage"])
    assert main([*argv, "--name", "pipeline_again"]) == 0
    out = capsys.readouterr().out
    again = real["storage"] / "pipeline_again"
    assert not (again / "teachers").exists() and not (again / "cnn_teachers").exists(), "no teacher trained again"
    assert "to train" not in out and "to make" not in out and out.count(": cached (") == 1 + 1
    assert _teacher_files(real["storage"]) == before, "the cached teachers are read, not rewritten"
    assert pd.read_csv(again / "teachers.csv")["logits"].tolist() == teachers["logits"].tolist()
    assert pd.read_csv(again / "replication.csv")["runs"].tolist() == [1]
