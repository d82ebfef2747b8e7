"""GPU throughput of the ASC trainables, in one run. Skips cleanly (exit 0) without CUDA.

    python tests/benchmarks/bench_gpu.py                   # every figure below, about 8 minutes on one H100/H200
    python tests/benchmarks/bench_gpu.py --full-search     # … and the default search packed 8 to a GPU
    python tests/benchmarks/bench_gpu.py --cpu-dry-run     # every step at toy size on the CPU (no figure means anything)

Prints, and writes as JSON to --out:
- one student trial (train_student called directly): training clips/s at batch 32 and 256 (fp32), and at 256
  with bf16 autocast and with torch.compile; its peak GPU memory;
- 1, 4, 8 and 16 concurrent student trials through search/run.py and Ray on one GPU (--gpus-per-trial 1/N):
  aggregate clips/s (the sum of the trials' own rates while all ran), its ratio to one trial, GPU utilisation
  (nvidia-smi, sampled every 0.5 s while trials ran) and the peak GPU memory of a trial process;
- PaSST-S (random weights: they do not change the cost; batch 80, 6 of 12 frequency patches dropped):
  training clips/s and logits clips/s, fp32 and bf16.
A trial's clips/s is that of its fastest epoch after the first (the first pays for cuDNN's autotuning).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import ROOT, dataset

from trainables.asc.loader import clip_batches
from trainables.asc.synthetic import SyntheticConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--segments", type=int, default=146, help="device-a training segments per scene (146: ~20k clips)")
parser.add_argument("--concurrency", default="1,4,8,16", help="concurrent trials on one GPU")
parser.add_argument("--epochs", type=int, default=3, help="epochs of each student trial")
parser.add_argument("--full-search", action="store_true", help="also time search/run.py --space kd.yaml packed 8 to a GPU")
parser.add_argument("--out", default="bench_gpu.json", help="where the figures go as JSON")
parser.add_argument("--cpu-dry-run", action="store_true", help="run every step at toy size on the CPU")
args = parser.parse_args()

if not torch.cuda.is_available() and not args.cpu_dry_run:
    print("bench_gpu: no CUDA device here; skipped (use --cpu-dry-run to exercise the code on the CPU)")
    sys.exit(0)
DRY = args.cpu_dry_run
DEVICE = torch.device("cpu" if DRY else "cuda")
CORES = os.cpu_count() or 1
figures: dict = {"device": "cpu (dry run)" if DRY else torch.cuda.get_device_name(0), "cores": CORES}


def show(key: str, value, text: str) -> None:
    figures[key] = value
    print(text, flush=True)
    Path(args.out).write_text(json.dumps(figures, indent=1))


class GpuSampler:
    """nvidia-smi every 0.5 s: GPU utilisation (%) while any process uses the GPU, and each process's peak memory."""

    def __init__(self) -> None:
        self.busy: list[float] = []
        self.peak_mib: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _query(self, *what: str) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *what, "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return [[f.strip() for f in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.is_set():
            apps = self._query("--query-compute-apps=pid,used_memory")
            for pid, mib in apps:
                self.peak_mib[pid] = max(self.peak_mib.get(pid, 0.0), float(mib))
            if apps:
                self.busy.append(float(self._query("--query-gpu=utilization.gpu")[0][0]))
            time.sleep(0.5)

    def __enter__(self) -> "GpuSampler":
        if not DRY:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict:
        return {"util_mean": float(np.mean(self.busy)) if self.busy else None,
                "util_max": max(self.busy, default=None), "peak_mib_per_process": max(self.peak_mib.values(), default=None)}


def search(space: dict, data_dir: Path, extra: list[str] = ()) -> tuple[float, Path, dict]:
    """Run search/run.py on `space` (a mapping, or a space file's name); wall seconds, run directory, GPU use."""
    storage = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    if isinstance(space, dict):
        (storage / "bench.yaml").write_text(yaml.safe_dump(space))
        space = str(storage / "bench.yaml")
    command = [sys.executable, "search/run.py", "--space", space, "--storage", str(storage), "--name", "bench", *extra]
    if data_dir is not None:
        command += ["--data", str(data_dir)]
    started = time.perf_counter()
    with GpuSampler() as sampler:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, storage / "bench", sampler.summary()


def trial_rates(run_dir: Path) -> list[float]:
    """Each student trial's clips/s: its fastest epoch after the first (all of them when it ran one)."""
    rates = []
    for result in sorted((run_dir / "search").glob("*/result.json")):
        epochs = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        speeds = [e["clips_per_second"] for e in epochs if "clips_per_second" in e]
        if speeds:
            rates.append(max(speeds[1:] or speeds))
    return rates


# --- data: the embedded generator, scaled -----------------------------------------------------------------------
segments = 3 if DRY else args.segments
data_dir, data = dataset(SyntheticConfig(train_segments_per_class=segments, val_segments_per_class=1,
                                         test_segments_per_class=1, held_out_clips_per_segment=2))  # fmt: skip
train = data.splits["split100"]
show("clips", len(train), f"{figures['device']}, {CORES} cores; {len(train):,} training clips")

# --- one student trial, called directly ---------------------------------------------------------------------------
from trainables.asc.student_training import StudentConfig, train_student  # noqa: E402

epochs = 1 if DRY else args.epochs
teacher = np.random.default_rng(0).normal(size=(len(data.filenames), len(data.classes))).astype(np.float32)
for label, batch, extra in [("fp32", 32, {}), ("fp32", 256, {}), ("bf16", 256, {"precision": "bf16"}),
                            ("compiled", 256, {"compile": True})]:  # fmt: skip
    if DRY and extra.get("compile"):
        continue  # inductor on a CPU needs a C++ toolchain; the GPU run measures it
    reports: list[dict] = []
    if not DRY:
        torch.cuda.reset_peak_memory_stats()
    config = StudentConfig(subset=100, epochs=epochs, batch_size=batch, kd_lambda=0.02, **extra)
    train_student(config, data, teacher, lambda metrics, checkpoint: reports.append(metrics), device=DEVICE)
    rate = max(r["clips_per_second"] for r in (reports[1:] or reports))
    peak = 0.0 if DRY else torch.cuda.max_memory_allocated() / 2**20
    show(f"student_{label}_b{batch}", {"clips_per_second": rate, "peak_mib": peak},
         f"student trial, batch {batch}, {label}: {rate:,.0f} clips/s, peak {peak:,.0f} MiB allocated")
one_trial = figures["student_fp32_b256"]["clips_per_second"]

# --- concurrent trials through Ray ---------------------------------------------------------------------------------
for n in [int(n) for n in args.concurrency.split(",")]:
    if DRY and n > 2:
        continue
    space = {"system": "asc_kd", "samples": n, "compare_without_kd": False, "kd_lambda": 1.0, "epochs": epochs,
             "batch_size": 256, "search": {"subset": [100], "lr": {"low": 0.002, "high": 0.02, "log": True}},
             "scheduler": {"type": "fifo"},
             "resources": {"cpus_per_trial": min(2.0, CORES / n), "gpus_per_trial": 0 if DRY else 1 / n}}  # fmt: skip
    seconds, run_dir, gpu = search(space, data_dir)
    rates = trial_rates(run_dir)
    total = float(sum(rates))
    show(f"ray_{n}_trials", {"aggregate_clips_per_second": total, "ratio_to_one_trial": total / one_trial,
                             "trial_rates": rates, "wall_seconds": seconds, **gpu},
         f"{n} concurrent trials through Ray (batch 256, {min(2.0, CORES / n):g} CPUs each): {total:,.0f} clips/s in all, "
         f"{total / one_trial:.2f}x one direct trial; GPU busy {gpu['util_mean']}% on average (max {gpu['util_max']}), "
         f"peak {gpu['peak_mib_per_process']} MiB per trial process; {seconds:.0f} s")  # fmt: skip

# --- PaSST-S ------------------------------------------------------------------------------------------------------
from trainables.asc.teacher import STANDARD_ARCH, PasstTeacher, TeacherConfig  # noqa: E402
from trainables.asc.teacher_training import teacher_loss  # noqa: E402


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


for precision in ("fp32", "bf16"):
    config = TeacherConfig(arch=STANDARD_ARCH, s_patchout_f=6, batch_size=80, mixstyle_p=0.4, precision=precision)
    model = PasstTeacher(config, len(data.classes)).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    labels = torch.as_tensor(data.labels).to(DEVICE)
    warmup, timed = (1, 2) if DRY else (5, 40)
    batch_size = 4 if DRY else config.batch_size
    batches = clip_batches(data, np.resize(train, batch_size * (warmup + timed)), batch_size, True, DEVICE)
    model.train()
    for i, batch in enumerate(batches):
        if i == warmup:
            sync()
            started = time.perf_counter()
        loss = teacher_loss(model, batch, labels, config, precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    train_rate = batch_size * timed / (time.perf_counter() - started)
    model.eval()
    rows = np.resize(train, 8 if DRY else 20_000)
    with torch.no_grad():
        list(model.logits(b.waveform, precision) for b in clip_batches(data, rows[:1024], 512, False, DEVICE))  # warm-up
        sync()
        started = time.perf_counter()
        outputs = [model.logits(b.waveform, precision) for b in clip_batches(data, rows, 4 if DRY else 512, False, DEVICE)]
        sync()
    logits_rate = len(rows) / (time.perf_counter() - started)
    del model, optimizer, outputs
    show(f"passt_s_{precision}", {"train_clips_per_second": train_rate, "logits_clips_per_second": logits_rate},
         f"PaSST-S {precision}: training {train_rate:,.0f} clips/s (batch {batch_size}), logits {logits_rate:,.0f} clips/s")

# --- the default search, packed 8 to a GPU --------------------------------------------------------------------------
if args.full_search and not DRY:
    seconds, _, gpu = search("kd.yaml", None, ["--gpus-per-trial", "0.125", "--set", "resources.teacher_gpus_per_trial=0.2"])
    show("kd_search_packed_8", {"wall_seconds": seconds, **gpu},
         f"search/run.py --space kd.yaml --gpus-per-trial 0.125: {seconds:.0f} s, GPU busy {gpu['util_mean']}% on "
         f"average while trials ran (max {gpu['util_max']})")
print(f"figures written to {args.out}")
