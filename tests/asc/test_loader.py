"""The batch feeder: every row once per epoch, the clips as the dataset holds them, and the background
thread that prepares GPU batches ahead (its order, its errors, stopping early)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from trainables.asc.loader import batch_rows, clip_batches, in_background


def test_batches_cover_each_row_once_with_the_clips_of_those_rows(tiny_data):
    rows = tiny_data.splits["split100"]
    torch.manual_seed(1)
    seen = list(clip_batches(tiny_data, rows, 7, True, torch.device("cpu")))
    assert sorted(np.concatenate([b.rows for b in seen]).tolist()) == sorted(rows.tolist())
    assert [len(b.rows) for b in seen[:-1]] == [7] * (len(seen) - 1)
    for b in seen:
        assert torch.equal(b.index, torch.from_numpy(b.rows))
        assert torch.equal(b.waveform, tiny_data.waveforms(b.rows)) and b.waveform.dtype == torch.float32


def test_the_shuffle_follows_torchs_seed_and_evaluation_keeps_the_order(tiny_data):
    rows = tiny_data.splits["split100"]
    torch.manual_seed(5)
    first = np.concatenate(batch_rows(rows, 8, shuffle=True))
    torch.manual_seed(5)
    assert np.array_equal(first, np.concatenate(batch_rows(rows, 8, shuffle=True)))
    assert not np.array_equal(first, rows)
    assert np.array_equal(np.concatenate(batch_rows(rows, 8, shuffle=False)), rows)


def test_background_items_arrive_in_order_and_errors_surface():
    assert list(in_background(iter(range(50)), ahead=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in in_background(failing(), ahead=2):
            got.append(item)
    assert got == [1]


def test_stopping_early_ends_the_background_thread():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    before = threading.active_count()
    for item in in_background(endless(), ahead=2):
        if item == 3:
            break
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before, "the feeder thread still runs"
    assert len(produced) <= 3 + 2 + 2, "it ran at most `ahead` items past the consumer"
