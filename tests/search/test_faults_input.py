"""Hostile space files and settings, unusable storage, a stale run lock and a hostile student file: one short
message and exit 2, before Ray starts, nothing touched (issue 18, cases 2, 6, 10, 11, 14, 15)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from results import predict
from results.export import load_student
from search.run import main
from search.run_lock import RunLocked, run_lock
from tests.search.test_resume import ROOT
from trainables.tensor_files import UnreadableFile, load_tensors


def _fails(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err) < 400, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("setting", ["mixstyle_p=.nan", "weight_decay=.nan", "teacher.lr=.nan", "kd_lambda=.nan",
                                     "lr=inf", "temperature=-.inf", "resources.cpus_per_trial=nan"])
def test_a_non_finite_setting_is_refused(tmp_path, capsys, setting):
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--set", setting],
           setting.split("=")[0], "finite")  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_a_non_finite_range_or_flag_is_refused(tmp_path, capsys):
    space = tmp_path / "nan.yaml"
    space.write_text("search:\n  subset: [5]\n  lr: {low: .nan, high: 0.01}\n")
    _fails(capsys, ["--space", str(space), "--storage", str(tmp_path / "runs")], "search.lr.low", "finite")
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--gpus-per-trial", "nan"], "gpus_per_trial")


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path, capsys):
    lines = ["epochs:", "  - &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 12)]  # 10 · 8^11 strings expanded
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    _fails(capsys, ["--space", str(bomb), "--storage", str(tmp_path / "runs")], str(bomb), "aliases")
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--set", "epochs=[&a [1, 2], *a]"],
           "--set epochs", "aliases")  # fmt: skip


@pytest.mark.parametrize(("text", "needle"), [(b"epochs: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper"),
                                              ("epochs: 3\nname: caf\xe9\n".encode("latin-1"), "not UTF-8"),
                                              (b"epochs: " + b"9" * 5000 + b"\n", "cannot be read"),
                                              (b"# " + b"x" * (2 << 20) + b"\n", "at most")])
def test_a_deep_binary_or_huge_space_file_is_refused(tmp_path, capsys, text, needle):
    space = tmp_path / "bad.yaml"
    space.write_bytes(text)
    _fails(capsys, ["--space", str(space), "--storage", str(tmp_path / "runs")], str(space), needle)


def test_a_huge_bad_value_is_shown_as_a_short_prefix(tmp_path, capsys):
    space = tmp_path / "long.yaml"
    space.write_text("metric: " + "z" * 100000 + "\n")
    err = _fails(capsys, ["--space", str(space), "--storage", str(tmp_path / "runs")], "metric", "...")
    assert "z" * 50 not in err
    space.write_text("epochs: [" + ", ".join(["'" + "y" * 1000 + "'"] * 500) + "]\n")
    err = _fails(capsys, ["--space", str(space), "--storage", str(tmp_path / "runs")], "epochs", "...")
    assert "y" * 50 not in err


def test_a_storage_that_is_a_file_is_refused(tmp_path, capsys):
    storage = tmp_path / "runs"
    storage.write_text("a file")
    _fails(capsys, ["--space", "kd", "--storage", str(storage)], str(storage), "is a file")
    _fails(capsys, ["--space", "kd", "--storage", str(storage / "below")], str(storage), "is a file")
    assert storage.read_text() == "a file"


_NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(_NAMESPACE + ["true"], capture_output=True).returncode == 0


needs_mounts = pytest.mark.skipif(not _namespaces_work(), reason="needs unshare to mount file systems")


def _in_namespace(script: str, *args: str, timeout: float = 120, env: dict | None = None):
    """A shell script (its $1: this Python) in a mount namespace of its own, where it may mount file systems."""
    return subprocess.run(_NAMESPACE + ["bash", "-euc", script, "sh", sys.executable, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@needs_mounts
def test_a_read_only_or_full_storage_is_refused_before_anything_is_written(tmp_path):
    storage = tmp_path / "runs"
    (storage / "earlier").mkdir(parents=True)
    (storage / "earlier" / "kept.txt").write_text("an earlier run")
    done = _in_namespace('mount --bind "$2" "$2"; mount -o remount,ro,bind "$2"\n'
                         '"$1" search/run.py --space kd --storage "$2" || echo "exit $?"', str(storage))  # fmt: skip
    assert "exit 2" in done.stdout and done.stderr.startswith("error: "), done.stdout + done.stderr
    assert "read-only" in done.stderr and str(storage) in done.stderr and "Traceback" not in done.stderr
    full = _in_namespace('mount -t tmpfs -o size=16m tmpfs "$2"\n'
                         '"$1" search/run.py --space kd --storage "$2" || echo "exit $?"', str(storage))  # fmt: skip
    assert "exit 2" in full.stdout and "MiB free" in full.stderr and "Traceback" not in full.stderr, full.stderr
    assert sorted(p.name for p in storage.iterdir()) == ["earlier"] and (storage / "earlier" / "kept.txt").is_file()


def test_a_stale_lock_is_taken_over_and_a_live_one_refuses(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "kd"
    run_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / ".lock").write_text(f"{dead.stdout.strip()} a-host\n")  # left by a driver killed with -9
    with run_lock(run_dir):
        assert "Taking over" in capsys.readouterr().out
        assert (run_dir / ".lock").read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunLocked, match=str(os.getpid())):
            with run_lock(run_dir):
                pass
        _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--name", "kd"], "in use by another run")
    assert not (run_dir / ".lock").exists()


def test_random_bytes_are_always_refused_the_same_way(tmp_path):
    """torch's weights-only unpickler raises whatever the bytes lead it to (IndexError, KeyError, …)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "x.pt"
    for size in [*rng.integers(1, 5000, size=150), 0]:
        path.write_bytes(rng.bytes(int(size)))
        with pytest.raises(UnreadableFile) as refused:
            load_tensors(path)
        assert str(path) in str(refused.value) and "weights_only" not in str(refused.value)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["pickle", "random bytes"])
def test_a_hostile_student_file_is_refused_with_a_message(tmp_path, capsys, kind):
    student = tmp_path / "student.pt"
    if kind == "pickle":
        torch.save({"state_dict": _Payload(tmp_path / "owned")}, student)
    else:
        student.write_bytes(np.random.default_rng(7).bytes(2048))
    # A pickle is refused; bytes that are no torch.save file at all are named as such. Either way nothing ran.
    with pytest.raises(UnreadableFile, match="refused|not a readable torch.save file"):
        load_student(student)
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "x.wav").write_bytes(b"")
    assert predict.main([str(student), str(audio), str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(student) in err and "weights_only=False" not in err, err
    assert not (tmp_path / "owned").exists() and not (tmp_path / "out.csv").exists()


# Issue 26: tracebacks, hangs and silently wrong runs, each now one short message and exit 2 (or a refusal).


def test_address_auto_with_no_cluster_is_refused(tmp_path):
    """In a PID namespace of its own (and its own temp dir), no Ray of another test or user can be found."""
    if not _namespaces_work():
        pytest.skip("needs unshare for a PID namespace")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"TMPDIR": str(tmp_path), "RAY_TMPDIR": str(tmp_path)}
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", sys.executable,
                           "search/run.py", "--space", "kd", "--storage", str(tmp_path / "runs"), "--address", "auto"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: --address auto: no running Ray cluster") and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists(), "refused before the dataset was made"


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nowhere", "host:99999"])
def test_an_address_without_a_cluster_is_refused_at_once(tmp_path, capsys, address):
    err = _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--address", address], "--address")
    assert ("no Ray cluster at 127.0.0.1:1" in err) if "127" in address else ("expected auto or HOST:PORT" in err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("setting", "needle"), [("data.seed=-1", "data.seed"),
                                                 ("data.seed=99999999999999999999", "data.seed"),
                                                 ("teacher.seed=-1", "teacher.seed"), ("seed=-1", "seed"),
                                                 ("seed=4294967290", "seed")])  # its samplers' seeds: seed + subset
def test_a_seed_outside_numpy_s_range_is_refused(tmp_path, capsys, setting, needle):
    err = _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--set", setting], needle)
    assert "must lie in [0, 42949" in err
    assert not (tmp_path / "runs").exists()


def test_a_seed_rule_holds_on_the_settings_types():
    from trainables.asc.student_training import StudentConfig
    from trainables.asc.synthetic import PretrainingConfig, SyntheticConfig
    from trainables.asc.teacher import TeacherConfig
    from trainables.settings import SettingError

    for make in (SyntheticConfig, PretrainingConfig, StudentConfig, TeacherConfig):
        make(seed=2**32 - 1)
        for bad in (-1, 2**32):
            with pytest.raises(SettingError, match="seed"):
                make(seed=bad)
    with pytest.raises(SettingError, match="ensemble"):  # its members' seeds are seed … seed + ensemble − 1
        TeacherConfig(seed=2**32 - 1, ensemble=2)


def test_cpus_per_trial_below_a_hundredth_is_refused(tmp_path, capsys):
    for flag in (["--cpus-per-trial", "1e-9"], ["--set", "resources.teacher_cpus_per_trial=0.001"]):
        _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), *flag], "cpus_per_trial", "at least 0.01")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("name", "rule"), [("lr", "(0.0, 10.0]"), ("temperature", "[0.1, 100.0]")])
def test_an_absurd_search_range_is_refused(tmp_path, capsys, name, rule):
    err = _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"),
                          "--set", f"search.{name}={{low: 1e-300, high: 1e300, log: true}}"], f"search.{name}", rule)
    assert "1e+300" in err and "0" * 50 not in err
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--set", f"search.{name}=[1.0, 1e6]"], rule)


@pytest.mark.parametrize("setting", ["data.train_segments_per_class=0", "data.held_out_clips_per_segment=0",
                                     "data.val_segments_per_class=0", "data.test_segments_per_class=0"])
def test_a_setting_that_empties_a_split_is_refused(tmp_path, capsys, setting):
    _fails(capsys, ["--space", "kd", "--storage", str(tmp_path / "runs"), "--set", setting], setting.split("=")[0])
    assert not (tmp_path / "runs").exists(), "refused before the dataset was made"


def test_a_ranking_metric_the_validation_split_cannot_give_is_refused(tmp_path, capsys, service_data):
    argv = ["--space", "kd", "--storage", str(tmp_path / "runs"), "--data", str(service_data), "--subsets", "5"]
    _fails(capsys, [*argv, "--set", "metric=acc_s7"], "metric: acc_s7 is not defined for subset 5%", "validation")
    assert not (tmp_path / "runs" / "kd").exists()


def test_a_nan_ranking_metric_fails_its_trial():
    from search.trials import NonFiniteMetric, ranked

    reported = []
    report = ranked(lambda metrics, checkpoint: reported.append(metrics), "acc")
    report({"acc": 0.4, "epoch": 1}, None)
    with pytest.raises(NonFiniteMetric, match="acc is nan at epoch 2"):
        report({"acc": float("nan"), "epoch": 2}, None)
    with pytest.raises(NonFiniteMetric):
        report({"epoch": 3}, None)  # not reported at all: no figure to rank by either
    assert reported == [{"acc": 0.4, "epoch": 1}]


def _chance_logits(tmp_path: Path, data_dir: Path) -> Path:
    from trainables.asc.data import load_prepared
    from trainables.asc.logits_file import write_seed_logits

    rows = len(load_prepared(data_dir).filenames)
    path = tmp_path / "chance.pt"
    write_seed_logits(path, np.random.default_rng(0).normal(size=(rows, 10)).astype(np.float32))
    return path


def test_a_teacher_near_chance_is_refused_unless_allowed(tmp_path, capsys, service_data):
    from search.preflight import prepare
    from search.run import make_request, parse_args

    argv = ["--space", "kd", "--storage", str(tmp_path / "runs"), "--data", str(service_data), "--subsets", "5",
            "--set", f"teacher.logits={_chance_logits(tmp_path, service_data)}"]  # fmt: skip
    err = _fails(capsys, argv, "subset 5% teacher's validation accuracy", "chance (0.100 for 10 classes)",
                 "teacher.allow_weak")
    assert not (tmp_path / "runs" / "kd").exists()
    prepare(make_request(parse_args([*argv, "--set", "teacher.allow_weak=true"])))  # allowed: the checks pass
    assert "Traceback" not in err


def test_a_trained_teacher_near_chance_stops_the_run_before_students_train(ray_session, tmp_path, capsys,
                                                                           service_data):  # fmt: skip
    """The check after the teachers are made (there a trained one's accuracy is known); the run's record goes, so
    the corrected command starts under the same name."""
    from results.run_record import RECORD
    from search.pipeline import run
    from search.preflight import check_run_dir
    from search.run import make_request, parse_args
    from search.teacher_checks import WeakTeacher

    argv = ["--space", "kd", "--storage", str(tmp_path / "runs"), "--data", str(service_data), "--subsets", "5",
            "--set", f"teacher.logits={_chance_logits(tmp_path, service_data)}"]  # fmt: skip
    request = make_request(parse_args(argv))  # the checks before Ray left out: as if a teacher had been trained
    with pytest.raises(WeakTeacher, match="teacher.allow_weak"):
        run(request)
    assert not (request.run_dir / RECORD).exists() and not (request.run_dir / "search").exists(), "no student trained"
    check_run_dir(make_request(parse_args([*argv, "--set", "teacher.allow_weak=true"])))


@pytest.mark.parametrize("name", ["../x", "cache", "", "a/b"])
def test_the_python_api_refuses_a_run_name_as_the_command_line_does(tmp_path, name):
    from search.api import run_search
    from spaces.errors import SpaceError

    with pytest.raises(SpaceError, match="plain directory name"):
        run_search({"samples": 1}, storage=tmp_path / "runs", name=name)
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()


def test_the_python_api_starts_from_kd_yaml():
    """The README's example: a few keys over kd.yaml, not over the bare settings types (an untrained passt_tiny)."""
    from search.api import over_default_space
    from search.systems import build_space
    from spaces.space_file import read_space_file

    example = {"samples": 2, "epochs": 1, "search": {"subset": [25], "kd_lambda": {"low": 0.0, "high": 0.5}}}
    space, demo = build_space(over_default_space(example)), build_space(read_space_file("kd"))
    assert space.teacher == demo.teacher and space.teacher.arch == "cnn" and space.teacher.pretrain == "synthetic"
    assert space.data == demo.data and space.resources == demo.resources and space.scheduler == demo.scheduler
    assert space.settings.train_steps == demo.settings.train_steps and space.settings.epochs == 1
    assert [d.name for d in space.dimensions] == ["kd_lambda"] and space.subsets == (25,)
    fixed = build_space(over_default_space({"lr": 0.01, "teacher": {"epochs": 1}}))  # fixed: leaves the search
    assert [d.name for d in fixed.dimensions] == ["temperature", "kd_lambda"] and fixed.settings.lr == 0.01
    assert fixed.teacher.epochs == 1 and fixed.teacher.arch == "cnn", "a section merges key by key"


@pytest.mark.parametrize("tool", ["complexity", "formats"])
@pytest.mark.parametrize("kind", ["pickle", "tensors"])
def test_a_file_that_is_no_student_is_refused_by_complexity_and_formats(tmp_path, capsys, tool, kind):
    from results import complexity, formats

    student = tmp_path / "student.pt"
    if kind == "pickle":
        torch.save({"state_dict": _Payload(tmp_path / "owned")}, student)
    else:
        torch.save({"weights": torch.zeros(3)}, student)  # a torch.save file of tensors, but no student
    args = [str(student)] + ([str(tmp_path / "out")] if tool == "formats" else [])
    assert (complexity.main if tool == "complexity" else formats.main)(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {student}: not a student file (") and err.count("\n") == 1, err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert not (tmp_path / "owned").exists() and not (tmp_path / "out").exists()


def test_a_run_directory_that_is_or_holds_a_link_out_is_refused(tmp_path, capsys):
    """Issue 26, case 2: the run would write through the link, outside its directory."""
    from results import export, report
    from results.run_record import write_record
    from search.systems import build_space
    from spaces.space import to_mapping
    from spaces.space_file import read_space_file

    storage, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    storage.mkdir()
    elsewhere.mkdir()
    (storage / "kd").symlink_to(elsewhere)
    _fails(capsys, ["--space", "kd", "--storage", str(storage), "--name", "kd"], str(storage / "kd"), "symbolic link")
    assert not list(elsewhere.iterdir()), "nothing is written where the link points, the run's lock included"

    run_dir = storage / "linked"
    write_record(run_dir, to_mapping(build_space(read_space_file("kd"))), storage / "cache" / "datasets" / "synthetic-x",
                 storage)  # fmt: skip
    (elsewhere / "page.html").write_text("the user's own page")
    (run_dir / "best").symlink_to(elsewhere)
    (run_dir / "report.html").symlink_to(elsewhere / "page.html")
    _fails(capsys, ["--resume", "--name", "linked", "--storage", str(storage)], str(run_dir / "best"), "symbolic link")
    for tool in (export, report):
        assert tool.main([str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "symbolic link" in err, err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["page.html"]
    assert (elsewhere / "page.html").read_text() == "the user's own page"
