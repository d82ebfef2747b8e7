"""(c) A student trial with the teacher-logit cache against one that computes the teacher's logits
inside the trial (a forward pass of the teacher over every training batch, every epoch).

    .venv/bin/python tests/benchmarks/bench_teacher_cache.py                                   # tiny PaSST
    .venv/bin/python tests/benchmarks/bench_teacher_cache.py --arch passt_s_swa_p16_128_ap476 --subset 10

The teacher's weights do not change its cost, so PaSST-S runs with random weights here. The cache
is filled for the trial's training clips only (the service fills it once for every clip, so that the
teacher's own validation and test figures can be printed); its cost is given per clip.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import dataset

from trainables.asc.evaluation import predict
from trainables.asc.student_training import StudentConfig, train_student
from trainables.asc.teacher import PasstTeacher, TeacherConfig

parser = argparse.ArgumentParser()
parser.add_argument("--arch", default="passt_tiny", help="teacher architecture (TeacherConfig.arch)")
parser.add_argument("--subset", type=int, default=50, help="the student trial's training subset, percent")
args = parser.parse_args()
arch = args.arch
torch.set_num_threads(1)
_, data = dataset()
config = StudentConfig(subset=args.subset, epochs=2, batch_size=32)
rows = data.splits[f"split{args.subset}"]
teacher = PasstTeacher(TeacherConfig(arch=arch), len(data.classes)).eval()
cpu = torch.device("cpu")

started = time.perf_counter()
cached = np.zeros((len(data.filenames), len(data.classes)), dtype=np.float32)
cached[rows] = predict(teacher, data, rows, config.batch_size, cpu).numpy()  # once, shared by every trial
cache_seconds = time.perf_counter() - started
started = time.perf_counter()
train_student(config, data, cached, lambda m, c: None, device=cpu)
with_cache = time.perf_counter() - started

started = time.perf_counter()
for _ in range(config.epochs):  # what a trial without the cache adds: the teacher over its batches each epoch
    predict(teacher, data, rows, config.batch_size, cpu)
train_student(config, data, cached, lambda m, c: None, device=cpu)
without_cache = time.perf_counter() - started
print(f"student trial ({len(rows)} clips x {config.epochs} epochs): {with_cache:.1f} s with the cache, "
      f"{without_cache:.1f} s computing teacher logits inside: ratio {without_cache / with_cache:.2f}; "
      f"filling the cache cost {1000 * cache_seconds / len(rows):.0f} ms per clip, once ({arch}, 1 thread)")
