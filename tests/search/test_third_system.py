"""A new system is one module and one registry line (issue 25): a toy classifier distilled from a toy teacher, declared
here as a `System`, registered, and searched through the same command line as the real ones. Nothing in search/ or
results/ is told about it."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from ray import cloudpickle, tune

from search.run import main
from search.system import DatasetKind, System
from search.systems import SYSTEMS
from trainables.settings import Settings, seed_setting, setting

# Ray's workers import nothing of the tests: what they run of this module travels with the trial, by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class ToyData(Settings):
    """Two Gaussian blobs in 4 dimensions, split into train, val and test."""

    seed: int = seed_setting(0)
    points: int = setting(240, low=30)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ToyConfig(Settings):
    """A linear student, trained on labels and (1 - kd_lambda) on its teacher's soft labels."""

    lr: float = setting(0.1, low=0.0, low_open=True)
    kd_lambda: float = setting(0.5, low=0.0, high=1.0)
    epochs: int = setting(2, low=1)
    seed: int = seed_setting(0)


@dataclass(frozen=True)
class ToyContext:
    data_dir: Path
    teacher: Path  # the teacher's logits of every point
    settings: ToyConfig  # the space's; a trial's are these with the search's suggestion in place


def _generate(config: ToyData, directory: Path) -> None:
    rng = np.random.default_rng(config.seed)
    labels = rng.integers(0, 2, config.points)
    points = rng.normal(size=(config.points, 4)) + 0.6 * labels[:, None]
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "toy.npz", points=points.astype(np.float32), labels=labels)
    (directory / "dataset.json").write_text(json.dumps({"fingerprint": config.fingerprint(), "source": "toy"}))


@dataclass(frozen=True)
class _Loaded:
    fingerprint: str
    points: np.ndarray
    labels: np.ndarray


def _load(directory: Path) -> _Loaded:
    arrays = np.load(Path(directory) / "toy.npz")
    fingerprint = json.loads((Path(directory) / "dataset.json").read_text())["fingerprint"]
    return _Loaded(fingerprint, arrays["points"], arrays["labels"])


def _splits(n: int) -> tuple[slice, slice, slice]:
    return slice(0, n // 2), slice(n // 2, 3 * n // 4), slice(3 * n // 4, n)


def _fit(points: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None, lr: float, kd_lambda: float,
         steps: int, seed: int) -> torch.nn.Linear:  # fmt: skip
    torch.manual_seed(seed)
    model = torch.nn.Linear(points.shape[1], 2)
    optimiser = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        logits = model(points)
        loss = kd_lambda * F.cross_entropy(logits, labels)
        if soft is not None:
            loss = loss + (1 - kd_lambda) * F.kl_div(F.log_softmax(logits, 1), soft, reduction="batchmean")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def toy_context(request) -> ToyContext:
    """The teacher, trained once on labels before the trials (the system's own business), its logits saved."""
    data = _load(request.data)
    train = _splits(len(data.labels))[0]
    teacher = _fit(torch.from_numpy(data.points[train]), torch.from_numpy(data.labels[train]), None, 0.5, 1.0, 50, 0)
    path = request.run_dir / "toy_teacher.pt"
    torch.save(teacher(torch.from_numpy(data.points)).detach(), path)
    print(f"Toy teacher: {path}", flush=True)
    return ToyContext(request.data, path, request.space.settings)


def toy_trial(config: dict, context: ToyContext) -> None:
    settings = replace(context.settings, **config)
    data = _load(context.data_dir)
    points, labels = torch.from_numpy(data.points), torch.from_numpy(data.labels)
    soft = torch.softmax(torch.load(context.teacher, weights_only=True), 1)
    train, val, test = _splits(len(labels))
    for epoch in range(1, settings.epochs + 1):
        model = _fit(points[train], labels[train], soft[train], settings.lr, settings.kd_lambda, 10 * epoch,
                     settings.seed)  # fmt: skip
        with torch.no_grad():
            predicted = model(points).argmax(1)
        metrics = {"epoch": epoch, "epochs": settings.epochs, "acc": float((predicted[val] == labels[val]).float().mean())}
        if epoch == settings.epochs:
            metrics["test_acc"] = float((predicted[test] == labels[test]).float().mean())
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"state_dict": model.state_dict(), "config": {"train": asdict(settings)}},
                       Path(directory) / "student.pt")  # fmt: skip
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


TOY = System(
    name="toy", settings=ToyConfig, sections={"data": ToyData}, metric=re.compile(r"^acc$"), default_metric="acc",
    default_mode="max", by_subset=False, not_searchable=frozenset({"seed"}),
    dataset=DatasetKind("toy", _generate, _load, lambda path: (Path(path) / "toy.npz").is_file(), False, None,
                        "no toy dataset"),
    trial=toy_trial, context=toy_context, checks=None, scene_report=False, default_space="toy.yaml",
)  # fmt: skip


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(SYSTEMS, "toy", TOY)  # the one line a new system adds to search/systems/__init__.py


def test_a_third_system_is_searched_ranked_and_exported_by_the_same_command(ray_session, toy_registered, tmp_path,
                                                                            capsys):  # fmt: skip
    space = tmp_path / "toy.yaml"
    space.write_text(yaml.safe_dump({"system": "toy", "samples": 3, "epochs": 2, "scheduler": {"type": "fifo"},
                                     "search": {"lr": {"low": 0.01, "high": 0.5, "log": True},
                                                "kd_lambda": {"low": 0.0, "high": 1.0}}}))  # fmt: skip
    storage = tmp_path / "runs"
    assert main(["--space", str(space), "--storage", str(storage), "--name", "toy", "--cpus-per-trial", "1",
                 "--gpus-per-trial", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    run = storage / "toy"
    assert "Toy teacher:" in out and "== Search: 3 trials ==" in out and "up to 2 trials at once" in out
    board = pd.read_csv(run / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 3 and (board["status"] == "complete").all() and board["rank"].tolist() == [1, 2, 3]
    assert board["acc"].is_monotonic_decreasing and board["lr"].between(0.01, 0.5).all()
    assert board["kd_lambda"].between(0.0, 1.0).all() and "test_acc" in board
    best = torch.load(run / "best" / "student.pt", weights_only=True)
    assert best["trial_id"] == board.iloc[0]["trial_id"] and best["config"]["train"]["lr"] == pytest.approx(board.iloc[0]["lr"])
    assert sorted(p.name for p in (run / "best").iterdir()) == ["student.pt"], "a toy has no other export format"
    assert yaml.safe_load((run / "space.yaml").read_text())["system"] == "toy", "the record names its system"
    assert list((storage / "cache" / "datasets").glob("toy-*/toy.npz")), "its embedded dataset, made and cached"


def test_an_unregistered_system_is_refused_in_one_line(tmp_path, capsys):
    space = tmp_path / "toy.yaml"
    space.write_text(yaml.safe_dump({"system": "toy"}))
    assert main(["--space", str(space), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: system: 'toy' is not known") and "asc_kd" in err and "Traceback" not in err
