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
from tests.test_resume import ROOT
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


def test_a_run_directory_that_is_or_holds_a_link_out_is_refused(tmp_path, capsys):
    """Issue 26, case 2: the run would write through the link, outside its directory."""
    from results import export, report
    from results.run_record import write_record
    from search.space import build_space, space_file
    from search.space_file import read_space_file

    storage, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    storage.mkdir()
    elsewhere.mkdir()
    (storage / "kd").symlink_to(elsewhere)
    _fails(capsys, ["--space", "kd", "--storage", str(storage), "--name", "kd"], str(storage / "kd"), "symbolic link")
    assert not list(elsewhere.iterdir()), "nothing is written where the link points, the run's lock included"

    run_dir = storage / "linked"
    write_record(run_dir, space_file(build_space(read_space_file("kd"))), storage / "cache" / "datasets" / "synthetic-x",
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
