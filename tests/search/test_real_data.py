"""Real-data workflows through search/run.py on small data in the real layouts.

A KD search on a TAU22-layout dataset with a SIT teacher (CochlScene first) ensembled over two
seeds; then the same search distilling from the seed systems' logits file; the refusal of a
misaligned file; and a teacher search whose exported logits a KD search can use.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from search.run import main
from trainables.asc.data import load_prepared
from trainables.asc.logits_file import aligned_logits, read_logits, write_seed_logits

# kd.yaml's step budgets and confirmation are the demo's; one pass and no confirmation here.
TINY_STUDENT = ["epochs=1", "batch_size=50", "compare_without_kd=false", "train_steps=0", "confirm_top_k=0",
                "base_channels=8"]  # a narrow student: these workflows are not about its width
TINY_TEACHER = ["teacher.arch=passt_tiny", "teacher.epochs=1", "teacher.pretrain=none", "teacher.allow_untrained=true", "teacher.embed_dim=32", "teacher.depth=1",
                "teacher.num_heads=2", "teacher.eval_batch_size=300", "teacher.batch_size=50", "teacher.train_steps=0",
                "teacher.allow_weak=true"]  # fmt: skip
WEAK_OK = ["teacher.allow_weak=true"]  # teachers of one epoch on tiny data: near chance, and not what these tests test


def _sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


@pytest.fixture(scope="module")
def layout(tau22_written, cochl_written, tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    return {"root": tau22_written, "cochl": cochl_written, "storage": base / "runs"}


@pytest.fixture(scope="module")
def sit_run(ray_session, layout):
    argv = ["--space", "kd", "--data", str(layout["root"]), "--storage", str(layout["storage"]), "--name", "sit",
            "--subsets", "5", "--samples", "1", *_sets(TINY_STUDENT + TINY_TEACHER),
            "--set", f"teacher.cochlscene={layout['cochl']}", "--set", "teacher.sit_epochs=1",
            "--set", "teacher.backbone_lr_ratio=0.1", "--set", "teacher.ensemble=2"]  # fmt: skip
    assert main(argv) == 0
    return layout["storage"]


def test_kd_search_on_tau22_with_a_sit_ensemble(sit_run):
    run_dir = sit_run / "sit"
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 1 and board.iloc[0]["status"] == "complete"
    assert {"acc_s4", "acc_s5", "acc_s6", "acc_unseen"} <= set(board.columns)
    assert (run_dir / "best" / "subset_5" / "student.pt").is_file()
    # A search selects on the validation half of test.csv: no figure it shows may include those clips.
    exported = torch.load(run_dir / "best" / "subset_5" / "student.pt", weights_only=True)["metrics"]
    assert "test_macro_acc" in board and not [c for c in [*board.columns, *exported] if c.startswith("full_test_")]
    assert len(list((run_dir / "teacher_sit").glob("*/params.json"))) == 1, "one CochlScene stage"
    members = list((run_dir / "teachers").glob("*/params.json"))
    assert len(members) == 2, "two ensemble members fine-tuned"
    cache = sit_run / "cache" / "teachers"
    assert len(list(cache.glob("sit-*.pt"))) == 1
    (ensemble,) = cache.glob("ensemble-*.pt")
    member_files = [p for p in cache.glob("*.pt") if not p.name.startswith(("sit-", "ensemble-"))]
    assert len(member_files) == 2
    mean = np.mean([read_logits(p)["logits"].numpy() for p in member_files], axis=0)
    assert np.allclose(read_logits(ensemble)["logits"].numpy(), mean, atol=1e-6)


def test_distils_from_a_seed_logits_file_and_refuses_a_misaligned_one(sit_run, layout, capsys, tmp_path):
    data = load_prepared(next((sit_run / "cache" / "datasets").glob("tau22-*")))
    (ensemble,) = (sit_run / "cache" / "teachers").glob("ensemble-*.pt")
    # The cache holds the rows subset 5 needs; a seed file has every row of meta.csv (the others: zeros).
    rows = data.teacher_rows(5)
    logits = np.zeros((len(data.filenames), len(data.classes)), dtype=np.float32)
    logits[rows] = aligned_logits(ensemble, data, rows)[rows]
    seed_file = tmp_path / "sub5_ensemble.pt"
    write_seed_logits(seed_file, logits)
    assert torch.load(seed_file, weights_only=True).shape == (len(data.filenames), 10)
    common = ["--space", "kd", "--data", str(layout["root"]), "--storage", str(sit_run), "--subsets", "5",
              "--samples", "1", *_sets(TINY_STUDENT + WEAK_OK)]  # fmt: skip
    capsys.readouterr()
    assert main([*common, "--name", "from_file", "--set", f"teacher.logits={tmp_path}/sub{{subset}}_ensemble.pt"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Teacher 5%: test acc=\d\.\d+ unseen=\d\.\d+ .*s6=\d\.\d+", out), "the sanity check is printed"
    assert not (sit_run / "from_file" / "teachers").exists(), "no teacher trained"
    assert len(pd.read_csv(sit_run / "from_file" / "leaderboard.csv", dtype={"trial_id": str})) == 1

    short = tmp_path / "short.pt"
    write_seed_logits(short, logits[:-1])
    assert main([*common, "--name", "short", "--set", f"teacher.logits={short}"]) == 2
    err = capsys.readouterr().err
    assert "rows" in err and str(len(data.filenames)) in err and "Traceback" not in err
    assert not (sit_run / "short").exists(), "refused before anything ran"


def test_teacher_search_exports_logits_a_kd_search_can_use(ray_session, tmp_path, capsys, service_data):
    storage = tmp_path / "runs"
    teacher = ["epochs=1", "pretrain=none", "embed_dim=32", "depth=1", "num_heads=2", "batch_size=50",
               "eval_batch_size=300"]  # fmt: skip
    argv = ["--space", "teacher_tiny", "--storage", str(storage), "--name", "teachers", "--subsets", "5",
            "--samples", "2", "--data", str(service_data), *_sets(teacher)]  # fmt: skip
    assert main(argv) == 0
    board = pd.read_csv(storage / "teachers" / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 2 and {"lr", "backbone_lr_ratio", "acc", "acc_s4", "test_acc"} <= set(board.columns)
    best = storage / "teachers" / "best" / "subset_5"
    assert (best / "logits.pt").is_file() and (best / "logits_meta_order.pt").is_file()
    kd = ["--space", "kd", "--storage", str(storage), "--name", "kd", "--subsets", "5", "--samples", "1",
          "--set", f"teacher.logits={storage}/teachers/best/subset_{{subset}}/logits_meta_order.pt",
          "--data", str(service_data), *_sets(TINY_STUDENT + WEAK_OK)]  # fmt: skip
    assert main(kd) == 0
    assert pd.read_csv(storage / "kd" / "leaderboard.csv", dtype={"trial_id": str}).iloc[0]["status"] == "complete"
