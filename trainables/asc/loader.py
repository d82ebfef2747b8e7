"""Feeding clips from the memory-mapped int16 cache to the device a loop trains on.

On a GPU the host must never be what the GPU waits for. A background thread gathers the next
batches' int16 rows straight into pinned memory and copies them to the GPU on a side stream, while
the GPU works on the current batch; the main thread only waits on an event, and int16 → float (and
every augmentation after it) happens on the GPU. Moving int16 halves the bytes crossing PCIe.

On a CPU (or the `meta` device tests train on) the same batches are gathered in the loop's own
thread: a second thread would only compete with the training for the trial's cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from trainables.asc.data import AscData

FULL_SCALE = 32768.0  # int16 full scale: samples map to [-1, 1)


@dataclass
class Batch:
    rows: np.ndarray  # dataset row indices, on the host (devices, metrics)
    index: torch.Tensor  # the same rows, int64 on the device (to gather labels and teacher logits there)
    waveform: torch.Tensor  # float32 [len(rows), samples] in [-1, 1), on the device


def batch_rows(rows: np.ndarray, batch_size: int, shuffle: bool) -> list[np.ndarray]:
    """Row indices in batches; shuffled through torch's global CPU generator, which loops seed and checkpoint.

    Each shuffled batch is sorted: the memory map is then read front to back, and a batch's order does
    not matter to training."""
    order = rows[torch.randperm(len(rows)).numpy()] if shuffle else rows
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [np.sort(chunk) for chunk in chunks] if shuffle else chunks


def clip_batches(data: AscData, rows: np.ndarray, batch_size: int, shuffle: bool, device: torch.device,
                 ahead: int = 3) -> Iterator[Batch]:  # fmt: skip
    """The clips of `rows` batch by batch, on `device`; the shuffle is drawn before the first batch."""
    chunks = batch_rows(rows, batch_size, shuffle)
    if device.type == "cuda":
        yield from _cuda_batches(data, chunks, device, ahead)
        return
    for chunk in chunks:
        waveform = torch.from_numpy(np.take(data.clips, chunk, axis=0)).to(device).float().div_(FULL_SCALE)
        yield Batch(chunk, torch.from_numpy(chunk).to(device), waveform)


def epoch_batches(data: AscData, rows: np.ndarray, batch_size: int, steps: int, device: torch.device) -> Iterator[Batch]:
    """`steps` shuffled batches of `rows`: as many passes as they take, the last one cut short (a small subset
    under a step budget goes round several times an epoch; a large one may not finish its pass)."""
    done = 0
    while True:
        for batch in clip_batches(data, rows, batch_size, True, device):
            yield batch
            done += 1
            if done == steps:
                return


def _cuda_batches(data: AscData, chunks: list[np.ndarray], device: torch.device, ahead: int) -> Iterator[Batch]:
    copies = torch.cuda.Stream(device)
    samples = data.clips.shape[1]

    def produce() -> Iterator[tuple]:
        torch.cuda.set_device(device)
        for chunk in chunks:
            host = torch.empty((len(chunk), samples), dtype=torch.int16, pin_memory=True)
            # mode="clip" lets numpy gather into `out` directly ("raise" buffers a copy); the rows are valid.
            np.take(data.clips, chunk, axis=0, out=host.numpy(), mode="clip")
            host_index = torch.from_numpy(chunk).pin_memory()
            with torch.cuda.stream(copies):
                clips = host.to(device, non_blocking=True)
                index = host_index.to(device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(copies)
            yield chunk, index, clips, ready

    compute = torch.cuda.current_stream(device)
    for chunk, index, clips, ready in in_background(produce(), ahead):
        compute.wait_event(ready)
        # The tensors were made on the copy stream: tell the allocator the compute stream uses them too.
        clips.record_stream(compute)
        index.record_stream(compute)
        yield Batch(chunk, index, clips.float().div_(FULL_SCALE))


_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def in_background(items: Iterator, ahead: int) -> Iterator:
    """Run an iterator in a daemon thread, at most `ahead` items in advance; its errors surface here.
    Stopping early (a `break`, an exception in the loop) ends the thread at its next item."""
    ready: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
            ready.put(_Failed(err))

    thread = threading.Thread(target=work, name="clip-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
