import torch

from results import complexity as cx
from trainables.asc.frontend import FrontendConfig
from trainables.asc.student import DCASE24_BUDGET, Budget, Complexity, Student, StudentArch, complexity


def _export(path, arch: StudentArch = StudentArch()):
    model = Student(arch)
    torch.save({"state_dict": model.state_dict(),
                "config": {"arch": arch.as_dict(), "frontend": FrontendConfig().as_dict(), "train": {}},
                "metrics": {}}, path)  # fmt: skip
    return path


def test_default_baseline_matches_the_published_figures():
    figures = complexity(StudentArch(), (256, 65))
    assert figures.params == 61_148
    assert figures.param_bytes(16) == 122_296
    assert figures.param_bytes(8) == 61_148
    assert figures.macs == 29_419_156
    assert DCASE24_BUDGET.violations(figures) == []


def test_frames_follow_the_front_end():
    assert cx.frames_of(FrontendConfig()) == 65  # 32,000 // 500 + 1
    assert cx.frames_of(FrontendConfig(n_mels=128, hop_length=320, sample_rate=16000)) == 51


def test_exported_file_gives_the_same_figures(tmp_path):
    figures = cx.student_complexity(_export(tmp_path / "student.pt"))
    assert (figures.params, figures.macs) == (61_148, 29_419_156)


def test_over_budget_says_why():
    wide = Complexity(params=64_001, macs=30_000_001)
    assert DCASE24_BUDGET.violations(wide) == ["64,001 parameters = 128,002 bytes at 16 bits > 128,000",
                                               "30,000,001 MACs > 30,000,000"]  # fmt: skip
    at_limit = Complexity(64_000, 30_000_000)
    assert DCASE24_BUDGET.violations(at_limit) == []
    assert Budget(param_bytes=60_000, bits=8).violations(at_limit) == ["64,000 parameters = 64,000 bytes at 8 bits > 60,000"]
    assert Budget().violations(wide) == [], "no limits set"


def test_command(tmp_path, capsys):
    assert cx.main([str(_export(tmp_path / "student.pt"))]) == 0
    out = capsys.readouterr().out
    assert "61,148" in out and "29,419,156" in out and "within" in out
    assert cx.main([str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
