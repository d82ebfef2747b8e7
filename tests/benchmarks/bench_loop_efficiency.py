"""(b) The student's training loop against the bare work: clips per second of a whole epoch
(reading, front end, augmentation, KD loss, optimiser) over front end + forward + backward on
batches already in memory. Target: at least 0.85.

    .venv/bin/python tests/benchmarks/bench_loop_efficiency.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import dataset

from trainables.asc.frontend import LogMel
from trainables.asc.student import Student
from trainables.asc.student_training import StudentConfig, train_student

torch.set_num_threads(1)
_, data = dataset()
config = StudentConfig(subset=100, epochs=1, batch_size=32)
rows = data.splits["split100"]
logits = np.random.default_rng(0).normal(size=(len(data.filenames), 10)).astype(np.float32)

reports = []
train_student(config, data, logits, lambda m, c: reports.append(m), device=torch.device("cpu"))
loop_rate = reports[-1]["clips_per_second"]

frontend, model = LogMel(), Student().to(memory_format=torch.channels_last)
optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
batches = [data.waveforms(rows[i : i + 32]) for i in range(0, len(rows), 32)]
labels = [torch.as_tensor(data.labels[rows[i : i + 32]]) for i in range(0, len(rows), 32)]
started = time.perf_counter()
for waveform, label in zip(batches, labels):
    loss = torch.nn.functional.cross_entropy(model(frontend(waveform).contiguous(memory_format=torch.channels_last)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
bare_rate = len(rows) / (time.perf_counter() - started)
print(f"training loop: {loop_rate:.1f} clips/s; bare front end + forward + backward: {bare_rate:.1f} clips/s; "
      f"ratio {loop_rate / bare_rate:.3f} (target >= 0.85); {len(rows)} clips, 1 thread")
