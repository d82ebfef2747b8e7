"""(c) A student trial with the teacher-logit cache against one that computes the teacher's logits
inside the trial (a forward pass of the teacher over every training batch, every epoch).

    .venv/bin/python tests/benchmarks/bench_teacher_cache.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import dataset
from trainables.loop import predict
from trainables.student_training import StudentConfig, train_student
from trainables.teacher import PasstTeacher, TeacherConfig

torch.set_num_threads(1)
_, data = dataset()
config = StudentConfig(subset=50, epochs=2, batch_size=32)
rows = data.splits["split50"]
teacher = PasstTeacher(TeacherConfig(), len(data.classes)).eval()
cpu = torch.device("cpu")

started = time.perf_counter()
cached = predict(teacher, data, np.arange(len(data.filenames)), 128, cpu).numpy()  # once, shared by every trial
cache_seconds = time.perf_counter() - started
started = time.perf_counter()
train_student(config, data, cached, lambda m, c: None, device=cpu)
with_cache = time.perf_counter() - started

started = time.perf_counter()
for _ in range(config.epochs):  # what a trial without the cache adds: the teacher over its batches each epoch
    inside = predict(teacher, data, rows, config.batch_size, cpu)
train_student(config, data, cached, lambda m, c: None, device=cpu)
without_cache = time.perf_counter() - started
print(f"student trial ({len(rows)} clips x {config.epochs} epochs): {with_cache:.1f} s with the cache, "
      f"{without_cache:.1f} s computing teacher logits inside: ratio {without_cache / with_cache:.2f}; "
      f"the cache itself cost {cache_seconds:.1f} s once for all {len(data.filenames)} clips (tiny PaSST, 1 thread)")
