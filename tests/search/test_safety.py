"""Nothing the service reads can run code: checkpoints, caches and logits files load weights-only,
and a space file is data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from results.export import load_student
from search.run import main
from trainables.asc.logits_file import LogitsMismatch, read_logits, read_teacher_logits


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> Path:
    torch.save({"filenames": ["x"], "logits": _Payload(marker)}, path)
    return path


def test_a_planted_pickle_is_refused_not_run(tmp_path, tiny_data):
    marker = tmp_path / "owned"
    planted = _plant(tmp_path / "logits.pt", marker)
    with pytest.raises(LogitsMismatch, match="refused"):
        read_logits(planted)
    with pytest.raises(LogitsMismatch, match="refused"):
        read_teacher_logits(planted, tiny_data)
    with pytest.raises(Exception):
        load_student(_plant(tmp_path / "student.pt", marker))
    assert not marker.exists(), "the planted code ran"


def test_the_command_line_refuses_a_planted_logits_file(tmp_path, capsys, service_data):
    marker = tmp_path / "owned"
    planted = _plant(tmp_path / "logits.pt", marker)
    argv = ["--space", "kd", "--storage", str(tmp_path / "runs"), "--subsets", "5", "--set", f"teacher.logits={planted}",
            "--data", str(service_data)]  # fmt: skip
    assert main(argv) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_a_space_file_is_data_not_code(tmp_path, capsys):
    marker = tmp_path / "owned"
    space = tmp_path / "evil.yaml"
    space.write_text(f'system: asc_kd\nseed: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert main(["--space", str(space), "--storage", str(tmp_path / "runs")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not marker.exists()


def test_every_torch_load_in_the_project_is_weights_only():
    root = Path(__file__).resolve().parents[2]
    call = "torch." + "load("  # spelled apart, so that this guard's own line is not a call it finds
    for path in [*root.glob("search/**/*.py"), *root.glob("trainables/**/*.py"), *root.glob("results/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if call in line and "def " not in line:
                assert "weights_only=True" in line, f"{path.name}:{number}: {line.strip()}"
