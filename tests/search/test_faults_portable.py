"""Portable runs that heal (issue 26): a run whose teacher cache was deleted under it, copied to another storage
while its original is moved away, resumes there with more samples; it reruns what failed, grows its search, keeps
everything inside the copy, and its journal and trial ids say the same as its leaderboard. One scenario of two
real runs, read back by the tests below."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml

from results.export import export_best
from results.trial_records import latest_checkpoint
from search.per_subset import journal_storage
from search.run import main
from tests.search.test_resume import ROOT
from trainables.asc.data import load_prepared
from trainables.asc.logits_file import write_seed_logits
from trainables.tensor_files import UnreadableFile

SETTINGS = ["epochs=2", "batch_size=50", "scheduler.type=fifo", "train_steps=0", "confirm_top_k=1", "confirm_seeds=2",
            "compare_without_kd=true", "max_concurrent=1",
            "base_channels=8"]  # a narrow student: these tests are about resuming, not its width  # fmt: skip
EXPERIMENTS = ("search", "confirm", "no_kd")


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file below `directory` with its size and modification time."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def _trial_dirs(run_dir: Path) -> list[Path]:
    return [d for name in EXPERIMENTS for d in (run_dir / name).glob("subset*_*") if d.is_dir()]


def _watch_for_the_first_checkpoint(run_dir: Path, caches: Path, stop: threading.Event, found: list) -> None:
    """Delete the teacher cache once the run's first trial has checkpointed (it has read its logits by then; the
    next trial, started only when it ends, will not find them); what it deleted goes to `found`."""
    while not stop.is_set() and not list((run_dir / "search").glob("*/checkpoint_000000")):
        time.sleep(0.05)
    found.extend(caches.glob("file-*.pt"))
    for cache in found:
        cache.unlink()


def _main(argv: list[str]) -> tuple[int, str]:
    """search/run.py's main in this process (on the session's Ray), with what it said."""
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        code = main(argv)
    return code, said.getvalue()


@pytest.fixture(scope="module")
def healed(ray_session, service_data, tmp_path_factory) -> dict:
    """Run A distils from a teacher-logits file (its cache deleted once the first trial has loaded it, so the
    trials after it fail); A is copied to storage B and moved away; B resumes with --samples 3. Both in this
    process: neither driver is killed, so neither needs a process of its own."""
    root = tmp_path_factory.mktemp("portable")
    data = load_prepared(service_data)
    teacher = root / "teacher.pt"  # a teacher that knows every label: no check can call it weak
    write_seed_logits(teacher, 5.0 * np.eye(len(data.classes), dtype=np.float32)[data.labels])
    raw = yaml.safe_load((ROOT / "spaces" / "kd.yaml").read_text())
    raw["search"] = {"subset": [5], "lr": {"low": 0.002, "high": 0.02, "log": True}}
    raw["kd_lambda"] = 0.5
    space = root / "heal.yaml"
    space.write_text(yaml.safe_dump(raw))

    def argv(storage: Path, *extra: str) -> list[str]:
        args = ["--space", str(space), "--data", str(service_data), "--storage", str(storage), "--name", "crash",
                "--samples", "2", "--set", f"teacher.logits={teacher}"]  # fmt: skip
        for setting in SETTINGS:
            args += ["--set", setting]
        return args + list(extra)

    first, copy, moved = root / "a", root / "b", root / "moved"
    stop, deleted = threading.Event(), []
    watcher = threading.Thread(target=_watch_for_the_first_checkpoint,
                               args=(first / "crash", first / "cache" / "teachers", stop, deleted))  # fmt: skip
    watcher.start()
    try:
        first_code, first_log = _main(argv(first))
    finally:
        stop.set()
        watcher.join()
    first_board = pd.read_csv(first / "crash" / "leaderboard.csv", dtype={"trial_id": str})

    shutil.copytree(first, copy, symlinks=True)
    first.rename(moved)  # the original is gone from where the copy's snapshot says the run was
    before = _files(moved)
    code, said = _main(argv(copy, "--resume", "--samples", "3"))
    return {"first_code": first_code, "first_log": first_log, "first_board": first_board, "deleted": deleted,
            "moved": moved, "before": before, "copy": copy / "crash", "resumed": (code, said)}


def _resumed(healed: dict) -> pd.DataFrame:
    code, said = healed["resumed"]
    assert code == 0, said[-3000:]
    return pd.read_csv(healed["copy"] / "leaderboard.csv", dtype={"trial_id": str})


def test_the_first_run_lost_trials_to_its_deleted_teacher_cache(healed):
    board = healed["first_board"]
    assert healed["first_code"] == 0, healed["first_log"][-3000:]
    assert healed["deleted"], "the teacher's cache was there to delete once the first trial had read it"
    assert sorted(board["status"]) == ["complete", "failed"], board[["trial_id", "status", "error"]]


def test_a_copied_run_resumes_without_touching_the_original(healed):
    _resumed(healed)
    assert _files(healed["moved"]) == healed["before"], "the original run is left as it was"
    assert not (healed["moved"].parent / "a").exists(), "nothing is written where the original was"
    for trial_dir in pd.read_csv(healed["copy"] / "leaderboard.csv")["trial_dir"]:
        assert Path(trial_dir).is_relative_to(healed["copy"]), trial_dir


def test_resume_reruns_failed_trials_and_grows_the_search(healed):
    board = _resumed(healed)
    failed = healed["first_board"].loc[healed["first_board"]["status"] == "failed", "trial_id"].tolist()
    assert len(board) == 3 and (board["status"] == "complete").all(), board[["trial_id", "status", "error"]]
    assert set(failed) <= set(board["trial_id"]), "the failed trial ran again, under its own id"
    assert "Teacher for subset 5%: to make" in healed["resumed"][1], "the deleted teacher cache is made again"
    comparison = pd.read_csv(healed["copy"] / "comparison.csv")
    assert comparison["runs"].tolist() == [2, 2], "the best configuration was confirmed and compared without KD"


def test_the_journal_names_its_run_and_holds_every_stage(healed):
    board = _resumed(healed).set_index("trial_id")
    storage = journal_storage(healed["copy"] / "optuna.journal")
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["crash/subset5"]
    trials = optuna.load_study(study_name="crash/subset5", storage=storage).trials
    by_stage: dict[str, list] = {}
    for trial in trials:
        by_stage.setdefault(trial.user_attrs["stage"], []).append(trial)
    complete = {t.user_attrs["trial_id"] for t in by_stage["search"] if t.state == optuna.trial.TrialState.COMPLETE}
    assert complete == set(board.index), "every trial of the leaderboard has a complete search trial"
    for stage in ("confirm", "no_kd"):
        ran = {d.name.rsplit("_", 1)[1] for d in (healed["copy"] / stage).glob("subset*_*")}
        told = {t.user_attrs["trial_id"]: t for t in by_stage[stage] if t.state == optuna.trial.TrialState.COMPLETE}
        assert len(ran) == 2 and ran <= set(told), stage
        for trial_id in ran:  # the best configuration, with its seed (and for a reference, without the teacher)
            assert told[trial_id].params["lr"] == pytest.approx(board.iloc[0]["lr"])
            assert told[trial_id].user_attrs["seed"] in (1, 2)
            assert told[trial_id].user_attrs["kd_lambda"] == (1.0 if stage == "no_kd" else 0.5)


def test_every_stage_names_its_trials_alike(healed):
    _resumed(healed)
    ids = [d.name.rsplit("_", 1)[1] for d in _trial_dirs(healed["copy"])]
    assert len(ids) >= 5 and all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids), ids


def test_an_export_that_fails_half_way_leaves_the_earlier_one(healed):
    board = _resumed(healed)
    run_dir = healed["copy"]
    target = run_dir / "best" / "subset_5"
    earlier = {p.name: p.read_bytes() for p in target.iterdir()}
    assert set(earlier) == {"student.pt", "student.ts", "student.onnx"}
    checkpoint = latest_checkpoint(Path(board.iloc[0]["trial_dir"])) / "student.pt"
    payload = torch.load(checkpoint, weights_only=True)
    weights = next(key for key in payload["state_dict"] if key.endswith(".weight"))
    payload["state_dict"][weights] = payload["state_dict"][weights][:1]  # student.pt is written, its other formats
    torch.save(payload, checkpoint)  # cannot be: the weights do not fit the student
    with pytest.raises(UnreadableFile, match="not a student file"):  # a file that makes no student is refused
        export_best(run_dir, "acc", "max")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == earlier, "the earlier export, whole"
    assert [p.name for p in target.parent.iterdir()] == ["subset_5"], "no half export is left"


def test_the_best_so_far_never_goes_down(capsys):
    """A trial ASHA stopped at an early epoch may show more than a complete one shows at its last (issue 26, 11)."""
    from ray.tune.experiment import Trial

    from search.progress import SearchProgress

    progress = SearchProgress("search", "acc", "max", epochs=4, totals={5: 3})
    ended = [("a0a0a0a0", 0.50, 1), ("b1b1b1b1", 0.40, 4), ("c2c2c2c2", 0.45, 4)]  # stopped, complete, complete
    trials = [Trial("student_trial", config={"subset": 5}, trial_id=trial_id, stub=True) for trial_id, _, _ in ended]
    best = []
    for trial, (_, acc, epochs) in zip(trials, ended):
        trial.update_last_result({"acc": acc, "training_iteration": epochs})
        progress.on_trial_complete(0, trials, trial)
        trial.set_status(Trial.TERMINATED)
        shown = re.findall(r"best acc (\d\.\d{3})", capsys.readouterr().out)
        best.append(float(shown[0]) if shown else 0.0)
    assert best == sorted(best) and best[-1] == 0.45, best
