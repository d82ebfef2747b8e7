"""GPU throughput of the ASC trainables, in a run that fits 10 minutes of GPU time. Skips cleanly (exit 0) without CUDA.

    python tests/benchmarks/bench_gpu.py --budget-s 540 --project dcase24    # every phase, 9 minutes at most
    python tests/benchmarks/bench_gpu.py --cpu-dry-run --project dcase24     # every phase at toy size on the CPU
    python tests/benchmarks/bench_gpu.py --project dcase24 --figures bench_gpu.json   # only the projection, from a
                                                                                      # run's figures

The phases run in this order, each in processes of its own under its own time limit (shortened to what is left of
--budget-s; a phase that would get under 20 s is skipped), and each writes its figures to --out as it gets them, so
a run cut short keeps what it measured:
  data            20,000 noise clips as a prepared dataset: their content does not change the cost
  one_trial       train_student called directly: clips/s at batch 256 fp32 (the figure the others are compared
                  with), at batch 32, in bf16 and torch.compile'd; peak GPU memory
  one_trial_ray   the same trial through search/run.py and Ray (--gpus-per-trial 1)
  passt_s         PaSST-S (random weights: they do not change the cost; batch 80, 6 of 12 frequency patches
                  dropped): training and logits clips/s, fp32 and bf16
  packed_8        8 concurrent trials through Ray (--gpus-per-trial 0.125): clips/s in all, its ratio to one trial,
                  each trial's clips/s and the slowest's ratio to the fastest
  packed_16       the same with 16 (--gpus-per-trial 0.0625)
  default_search  search/run.py --space kd.yaml --gpus-per-trial 0.125; its datasets are made in the background
                  while the phases before it run, so it measures the search, not the generator
A trial's clips/s is the mean of its epochs after the first (the first pays for cuDNN's autotuning); with several
trials, only the epochs during which every trial was training count. GPU utilisation (nvidia-smi every 0.5 s)
counts only the samples taken while trials trained, placed by their epochs' times: not Ray starting, nor the trials
loading. `--project dcase24` prints the projected wall time of the DCASE24 KD search on this GPU, with its formula.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from common import ROOT

from trainables.asc.data import is_prepared, load_prepared, write_prepared
from trainables.asc.synthetic import ALL_DEVICES, CLASSES, TRAIN_DEVICES_EXTRA

# Time limit of each phase on a GPU, in seconds: about twice what it took on one H200. The last one gets whatever
# the budget has left.
PHASE_LIMITS: dict[str, float | None] = {"data": 45, "one_trial": 100, "one_trial_ray": 60, "passt_s": 75,
                                         "packed_8": 80, "packed_16": 100, "default_search": None}  # fmt: skip
MIN_PHASE_S = 20.0  # less than this measures nothing: Ray alone takes about 10 s to start
RESERVE_S = 5.0  # for the projection and the summary after the last phase
INTERRUPT_GRACE_S = 10.0  # a phase past its limit gets Ctrl-C (Tune saves its trials, Ray stops), then is killed

# Toy sizes of --cpu-dry-run: enough to run every line, too little for any figure to mean anything.
DRY_CLIPS, DRY_BATCH, DRY_STEPS, DRY_PACKED = 80, 8, 2, 2

DEFAULT_SEARCH = ["--space", "kd.yaml", "--gpus-per-trial", "0.125", "--set", "resources.teacher_gpus_per_trial=0.2"]
# The default search at the size of the test suite's end-to-end run (tests/search/test_end_to_end.py), with a tiny dataset.
DRY_SEARCH = ["--space", "kd.yaml", "--subsets", "5", "--samples", "1", "--set", "epochs=1", "--set", "train_steps=2",
              "--set", "batch_size=16", "--set", "confirm_top_k=0", "--set", "compare_without_kd=false",
              "--set", "teacher.epochs=1", "--set", "teacher.train_steps=2", "--set", "teacher.pretrain=none",
              "--set", "teacher.width=16", "--set", "teacher.eval_batch_size=180",
              "--set", "data.train_segments_per_class=3", "--set", "data.held_out_clips_per_segment=1"]  # fmt: skip

# The DCASE24 KD search projected by --project dcase24: TAU22's 100 % split, and trials per subset. Its epochs,
# batch size and subsets are the baseline's; its ASHA that of the first of these spaces to stop trials with ASHA
# (dcase24_baseline.yaml trains one configuration; the KD search around it is ntu_kd_search.yaml, once ntu_kd.yaml).
DCASE24_CLIPS = 139_620
DCASE24_TRIALS = 32
DCASE24_SPACES = ("dcase24_baseline.yaml", "ntu_kd_search.yaml", "ntu_kd.yaml")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--budget-s", type=float, default=540.0, help="the whole run's wall time at most (default 540)")
parser.add_argument("--out", default="bench_gpu.json", help="where the figures go as JSON, written as they come")
parser.add_argument("--logs", help="folder of the Ray phases' console output (default: the --out file's name + .logs)")
parser.add_argument("--clips", type=int, default=20_000, help="training clips of the benchmark's dataset")
parser.add_argument("--epochs", type=int, default=4, help="epochs of each directly trained student (batch 256)")
parser.add_argument("--ray-epochs", type=int, default=10, help="epochs of each student trial through Ray")
parser.add_argument("--project", choices=["dcase24"], help="also print the projected wall time of that search")
parser.add_argument("--figures", help="project from the figures in this file (a former --out) and run nothing")
parser.add_argument("--cpu-dry-run", action="store_true", help="run every phase at toy size on the CPU")
parser.add_argument("--phase", help=argparse.SUPPRESS)  # run one phase in this process (the parent's own calls)
parser.add_argument("--data-dir", help=argparse.SUPPRESS)
parser.add_argument("--work", help=argparse.SUPPRESS)
args = parser.parse_args()
DRY = args.cpu_dry_run
OUT = Path(args.out)


# --- figures --------------------------------------------------------------------------------------------------------


def record(key: str, value, text: str | None = None) -> None:
    """Put `value` at the dotted `key` of the figures file (at once, so a run cut short keeps it), and print `text`."""
    figures = json.loads(OUT.read_text()) if OUT.is_file() else {}
    *parents, leaf = key.split(".")
    node = figures
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    partial = OUT.with_name(OUT.name + ".partial")
    partial.write_text(json.dumps(figures, indent=1))
    os.replace(partial, OUT)  # whole or not at all: a phase killed mid-write leaves the previous figures
    if text:
        print(text, flush=True)


def target(value: float | None, goal: float, text: str, below: bool = False) -> str:
    """`[target TEXT: met]` or `… missed]`; no verdict in a dry run or without a figure."""
    if value is None or DRY:
        return f"[target {text}{'; dry run' if DRY else ''}]"
    met = value <= goal if below else value >= goal
    return f"[target {text}: {'met' if met else 'missed'}]"


# --- phase: data ----------------------------------------------------------------------------------------------------


def noise_dataset(directory: Path, clips: int) -> None:
    """A prepared dataset of `clips` training clips of noise, laid out as TAU22 (devices, nested subsets, every
    device in val and test), for measuring throughput only. One block of noise is written over and over: drawing
    every clip would cost more than the rest of the dataset, and no trial's cost depends on what a clip holds."""
    rng = np.random.default_rng(0)
    held_out = 18 if DRY else 180  # clips of val and of test: every device, every scene, in turn
    devices = ["a" if i % 100 < 73 else TRAIN_DEVICES_EXTRA[i % len(TRAIN_DEVICES_EXTRA)] for i in range(clips)]
    rows = [(f"audio/{CLASSES[i % 10]}-noise-{i % 60}-{i}-0-{device}.wav", CLASSES[i % 10], f"noise-{i % 60}", device)
            for i, device in enumerate(devices)]  # fmt: skip
    held_out_splits: dict[str, list[str]] = {"val": [], "test": []}
    for split, names in held_out_splits.items():
        for k in range(held_out):
            scene, device = CLASSES[k % len(CLASSES)], ALL_DEVICES[k % len(ALL_DEVICES)]
            names.append(f"audio/{scene}-{split}-{k % 6}-{len(rows)}-0-{device}.wav")
            rows.append((names[-1], scene, f"{split}-{k % 6}", device))
    meta = pd.DataFrame(rows, columns=["filename", "scene_label", "identifier", "source_label"])
    directory.mkdir(parents=True, exist_ok=True)
    samples = 32_000
    out = np.lib.format.open_memmap(directory / "clips.npy", mode="w+", dtype=np.int16, shape=(len(meta), samples))
    block = rng.integers(-3277, 3277, size=(512, samples), dtype=np.int16)  # about -20 dBFS, as the real clips
    for start in range(0, len(meta), len(block)):
        out[start : start + len(block)] = block[: len(meta) - start]
    out.flush()
    del out
    order = rng.permutation(clips)
    splits = {f"split{p}": meta["filename"][np.sort(order[: max(1, math.ceil(p / 100 * clips))])].tolist()
              for p in (5, 10, 25, 50, 100)}  # fmt: skip
    write_prepared(directory, meta, None, {**splits, **held_out_splits}, samples, CLASSES, f"noise-{clips}-{held_out}",
                   source="tests/benchmarks/bench_gpu.py noise")  # fmt: skip


def phase_data() -> None:
    directory = Path(args.data_dir)
    started = time.perf_counter()
    cached = is_prepared(directory)
    if not cached:
        noise_dataset(directory, args.clips)
    seconds = time.perf_counter() - started
    data = load_prepared(directory)
    held_out = len(data.splits["val"]) + len(data.splits["test"])
    how = "found cached" if cached else f"made in {seconds:.1f} s {target(seconds, 20, '≤ 20 s', below=True)}"
    record("data", {"clips": len(data.splits["split100"]), "held_out": held_out, "seconds": seconds, "cached": cached},
           f"data: {len(data.splits['split100']):,} training clips and {held_out} held out, {how}")  # fmt: skip


# --- phase: one trial, called directly ------------------------------------------------------------------------------


def phase_one_trial() -> None:
    import torch

    from trainables.asc.student_training import StudentConfig, train_student

    device = cuda_device()
    data = load_prepared(Path(args.data_dir))
    teacher = np.random.default_rng(0).normal(size=(len(data.filenames), len(data.classes))).astype(np.float32)
    # batch 256 fp32 first: the figure every later one is compared with. Batch 32 goes over a quarter of the clips:
    # at a tenth of the rate, the whole set would take most of the phase.
    for label, batch, subset, extra in [("fp32", 256, 100, {}), ("fp32", 32, 25, {}),
                                        ("bf16", 256, 100, {"precision": "bf16"}),
                                        ("compiled", 256, 100, {"compile": True})]:  # fmt: skip
        if DRY and extra.get("compile"):
            continue  # inductor on a CPU needs a C++ toolchain; the GPU run measures it
        sizes = {"batch_size": DRY_BATCH, "train_steps": DRY_STEPS, "epochs": 2} if DRY else {"batch_size": batch}
        config = StudentConfig(**{"subset": subset, "epochs": args.epochs, "kd_lambda": 0.02, **extra, **sizes})
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        reports: list[dict] = []
        train_student(config, data, teacher, lambda metrics, checkpoint: reports.append(metrics), device=device)
        rate = float(np.mean([r["clips_per_second"] for r in reports[1:] or reports]))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        goal = target(rate, 20_000, "≥ 20,000 clips/s") if (label, batch) == ("fp32", 256) else ""
        record(f"one_trial.{label}_b{batch}", {"clips_per_second": rate, "peak_mib": peak, "subset": subset},
               f"one trial (direct), batch {batch}, {label}: {rate:,.0f} clips/s, peak {mib(peak)} allocated {goal}"
               .rstrip())


def cuda_device():
    """The device to train on. An index-less "cuda" would break the loader's feeder thread (torch.cuda.set_device),
    so the current device is named by its index, as trainables.common.resolve_device names it."""
    import torch

    if DRY:
        torch.set_num_threads(1)  # a dry run shares a small machine: two threads a process made steps 4x slower
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


# --- phase: PaSST-S -------------------------------------------------------------------------------------------------


def phase_passt_s() -> None:
    import torch

    from trainables.asc.loader import clip_batches
    from trainables.asc.teacher import STANDARD_ARCH, TINY_ARCH, PasstTeacher, TeacherConfig
    from trainables.asc.teacher_training import teacher_loss

    device = cuda_device()
    data = load_prepared(Path(args.data_dir))
    train = data.splits["split100"]
    labels = torch.as_tensor(data.labels).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for precision in ("fp32", "bf16"):
        # PaSST-S takes seconds a step on a CPU, and 30 s in bf16 without bf16 units: the dry run uses the tiny one.
        arch = TINY_ARCH if DRY else STANDARD_ARCH
        config = TeacherConfig(arch=arch, s_patchout_f=6, batch_size=80, mixstyle_p=0.4, precision=precision)
        model = PasstTeacher(config, len(data.classes)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
        warmup, timed = (1, 1) if DRY else (5, 40)
        batch_size = 2 if DRY else config.batch_size
        model.train()
        started = time.perf_counter()
        rows = np.resize(train, batch_size * (warmup + timed))
        for i, batch in enumerate(clip_batches(data, rows, batch_size, True, device)):
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
        rows, logits_batch = (np.resize(train, 4), 2) if DRY else (np.resize(train, 20_000), 512)
        with torch.no_grad():
            for batch in clip_batches(data, rows[:logits_batch], logits_batch, False, device):  # warm-up
                model.logits(batch.waveform, precision)
            sync()
            started = time.perf_counter()
            for batch in clip_batches(data, rows, logits_batch, False, device):
                model.logits(batch.waveform, precision)
            sync()
        logits_rate = len(rows) / (time.perf_counter() - started)
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
        goals = (f" {target(train_rate, 2_300, '≥ 2,300')} / {target(logits_rate, 10_000, '≥ 10,000')}"
                 if precision == "bf16" else "")  # fmt: skip
        record(f"passt_s.{precision}", {"train_clips_per_second": train_rate, "logits_clips_per_second": logits_rate,
                                        "arch": arch, "batch_size": batch_size},
               f"PaSST-S {precision}{f' ({arch})' if arch != STANDARD_ARCH else ''}: training {train_rate:,.0f} "
               f"clips/s (batch {batch_size}), logits {logits_rate:,.0f} clips/s{goals}")  # fmt: skip


# --- phase: the default search's datasets, made in the background ----------------------------------------------------


def phase_prewarm() -> None:
    """Make the datasets the default search reads, where it will look for them: the generator is single-threaded
    and takes about a minute, a quarter of the search. At the lowest priority, beside the phases measuring."""
    os.nice(19)
    from search.preflight import cached_dataset, prepare_dataset
    from search.request import RunRequest
    from search.systems import build_space, system_of
    from spaces.space_file import apply_override, read_space_file
    from trainables.asc.synthetic import PretrainingConfig, generate_pretraining

    command = DRY_SEARCH if DRY else DEFAULT_SEARCH
    raw = read_space_file(command[command.index("--space") + 1])
    for i, word in enumerate(command):
        if word == "--set":
            apply_override(raw, command[i + 1], system_of(raw))
    space = build_space(raw)
    request = RunRequest(space=space, storage=Path(args.work).resolve(), name="default_search", data=None,
                         address=None, resume=False)  # fmt: skip
    prepare_dataset(request)
    if getattr(space.teacher, "pretrain", None) == "synthetic":
        # Where search/teachers.py caches the AudioSet stand-in; were the two to differ, the search makes its own.
        config = PretrainingConfig(seed=space.teacher.seed)
        directory = request.cache_dir / "datasets" / f"pretraining-{config.fingerprint()}"
        cached_dataset(directory, config, generate_pretraining, load_prepared, "the synthetic AudioSet stand-in")


# --- Ray phases: trials' epochs and the GPU's utilisation ------------------------------------------------------------


@dataclass
class Epoch:
    start: float  # wall clock (time.time()), to about a tenth of a second
    end: float
    clips_per_second: float | None


def trial_epochs(run_dir: Path) -> list[list[Epoch]]:
    """The epochs of every trial under `run_dir` (Ray Tune's result.json files, teachers' included), on the wall clock.

    Ray stamps a report with whole seconds (`timestamp`) and with the trial's own clock (`time_total_s`); their
    median difference puts the trial's clock on the wall clock. The first report's interval holds the trial's start
    (imports, data, CUDA), so its epoch is taken to last as long as the second."""
    trials = []
    for path in sorted(run_dir.rglob("result.json")):
        reports = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a trial killed mid-write leaves half a line
                reports.append(json.loads(line))
        reports = [r for r in reports if {"timestamp", "time_total_s", "time_this_iter_s"} <= r.keys()]
        if not reports:
            continue
        offset = float(np.median([r["timestamp"] - r["time_total_s"] for r in reports])) + 0.5
        lengths = [r["time_this_iter_s"] for r in reports]
        if len(lengths) > 1:
            lengths[0] = min(lengths[0], lengths[1])
        trials.append([Epoch(offset + r["time_total_s"] - length, offset + r["time_total_s"], r.get("clips_per_second"))
                       for r, length in zip(reports, lengths)])  # fmt: skip
    return trials


def union_seconds(spans: list[tuple[float, float]]) -> float:
    total, reached = 0.0, -math.inf
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    return total


class GpuSampler:
    """nvidia-smi every 0.5 s, in a thread: the GPU's utilisation and memory in use, stamped with the wall clock, and
    each process's peak memory. Which samples count is decided afterwards, from the trials' epochs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (time.time(), utilisation %, MiB in use)
        self.peak_mib: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        self._gpu = visible if visible.isdigit() else "0"

    def _query(self, *what: str) -> list[list[str]]:
        try:
            out = subprocess.run(["nvidia-smi", "-i", self._gpu, *what, "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [[field.strip() for field in line.split(",")] for line in out.splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for line in self._query("--query-gpu=utilization.gpu,memory.used"):
                with contextlib.suppress(ValueError):
                    self.samples.append((time.time(), float(line[0]), float(line[1])))
            for line in self._query("--query-compute-apps=pid,used_memory"):
                with contextlib.suppress(ValueError, IndexError):
                    self.peak_mib[line[0]] = max(self.peak_mib.get(line[0], 0.0), float(line[1]))

    def __enter__(self) -> "GpuSampler":
        if not DRY:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def busy(self, spans: list[tuple[float, float]]) -> float | None:
        """Mean utilisation (%) of the samples inside any of `spans`; None without one."""
        inside = [util for t, util, _ in self.samples if any(start <= t <= end for start, end in spans)]
        return float(np.mean(inside)) if inside else None


def run_limited(command: list[str], limit_s: float, log: Path | None = None,
                env: dict | None = None) -> tuple[int | None, float]:  # fmt: skip
    """Run `command` from the project's root in a process group of its own (Ray's GCS and raylet join it; its workers,
    in groups of their own, exit when the raylet goes); past `limit_s` (its Ctrl-C grace included) stop the whole
    group. Returns (exit status, or None when cut; seconds)."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(log, "w")) if log else None
        process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=output,
                                   stderr=output and subprocess.STDOUT, env={**os.environ, **(env or {})})  # fmt: skip
        code: int | None = None
        try:
            code = process.wait(timeout=max(1.0, limit_s - INTERRUPT_GRACE_S))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=INTERRUPT_GRACE_S)
        finally:
            # Also after a clean exit: a GCS or raylet outliving its driver would keep its workers, and their GPU
            # memory, into the next phase.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return code, time.perf_counter() - started


def search(phase: str, arguments: list[str], limit_s: float) -> tuple[int | None, float, Path, GpuSampler]:
    """search/run.py ARGUMENTS as phase `phase`, within `limit_s`: (exit status or None, seconds, run dir, GPU use)."""
    storage = Path(args.work)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "search/run.py", *arguments, "--storage", str(storage), "--name", phase]
    with GpuSampler() as sampler:
        code, seconds = run_limited(command, limit_s, logs / f"{phase}.log", env={"RAY_AUTH_MODE": "disabled"})
    if code not in (0, None):
        tail = (logs / f"{phase}.log").read_text(errors="replace").splitlines()[-15:]
        print(f"{phase}: search/run.py failed (exit {code}); the end of {logs / phase}.log:", *tail, sep="\n  ")
    return code, seconds, storage / phase, sampler


def student_search(phase: str, trials: int, limit_s: float) -> tuple[int | None, float, Path, GpuSampler]:
    """`trials` student trials at batch 256 (the direct trial's settings, without a teacher) packed on one GPU."""
    cores = os.cpu_count() or 1
    sizes = {"batch_size": DRY_BATCH, "train_steps": DRY_STEPS, "epochs": 2} if DRY else {"batch_size": 256,
                                                                                          "epochs": args.ray_epochs}
    space = {"system": "asc_kd", "samples": trials, "compare_without_kd": False, "confirm_top_k": 0, "kd_lambda": 1.0,
             "search": {"subset": [100], "lr": {"low": 0.002, "high": 0.02, "log": True}},
             "scheduler": {"type": "fifo"},
             # One CPU feeds a GPU trial and one runs its loop; with more trials than that allows, they share.
             "resources": {"cpus_per_trial": min(2.0, cores / trials), "gpus_per_trial": 0 if DRY else 1 / trials},
             **sizes}  # fmt: skip
    Path(args.work).mkdir(parents=True, exist_ok=True)
    space_path = Path(args.work) / f"{phase}.yaml"
    space_path.write_text(yaml.safe_dump(space))
    return search(phase, ["--space", str(space_path), "--data", args.data_dir], limit_s)


def how_it_ended(code: int | None) -> str:
    return "done" if code == 0 else "cut at its limit" if code is None else f"failed (exit {code})"


def phase_ray_trials(phase: str, trials: int, limit_s: float) -> int | None:
    code, seconds, run_dir, sampler = student_search(phase, trials, limit_s)
    epochs = [t for t in trial_epochs(run_dir) if any(e.clips_per_second for e in t)]
    if not epochs:
        record(phase, {"status": how_it_ended(code), "wall_seconds": seconds},
               f"{phase}: no trial finished an epoch ({how_it_ended(code)})")  # fmt: skip
        return code
    # Only epochs after the first, and wholly inside the time every trial was training, count: the trials start one
    # by one, and a trial's rate while others are still loading is not the rate of the trials packed.
    begin, finish = max(t[0].start for t in epochs), min(t[-1].end for t in epochs)
    rates, overlapped = [], True
    for trial in epochs:
        later = [e for e in trial[1:] or trial if e.clips_per_second]
        inside = [e for e in later if begin <= e.start and e.end <= finish]
        overlapped &= bool(inside)
        rates.append(float(np.mean([e.clips_per_second for e in inside or later])))
    total = float(sum(rates))
    spans = [(t[0].start, t[-1].end) for t in epochs]
    one = read_figures().get("one_trial", {}).get("fp32_b256", {}).get("clips_per_second")
    ratio = total / one if one else None
    figures = {"status": how_it_ended(code), "trials": len(epochs), "aggregate_clips_per_second": total,
               "ratio_to_one_trial": ratio, "trial_rates": rates,
               "slowest_to_fastest": min(rates) / max(rates) if max(rates) else None,
               "all_trials_overlapped": overlapped, "wall_seconds": seconds, "training_seconds": union_seconds(spans),
               "gpu_busy_while_training": sampler.busy(spans),
               "gpu_busy_while_all_trained": sampler.busy([(begin, finish)]) if finish > begin else None,
               "peak_mib_per_process": max(sampler.peak_mib.values(), default=None),
               "peak_mib_in_use": max((used for *_, used in sampler.samples), default=None)}  # fmt: skip
    shown_ratio = "-" if ratio is None else f"{ratio:.2f}"
    if len(epochs) == 1:
        text = f"{phase}: one trial through Ray: {total:,.0f} clips/s, {shown_ratio}x the direct trial"
    else:
        spread = figures["slowest_to_fastest"]
        text = (f"{phase}: {len(epochs)} trials through Ray: {total:,.0f} clips/s in all, {shown_ratio}x one trial"
                + (f" {target(ratio, 6, '≥ 6x')}" if phase == "packed_8" else "")
                + f"; per trial {min(rates):,.0f} to {max(rates):,.0f}, slowest/fastest {spread or 0:.2f}"
                + (f" {target(spread, 0.7, '≥ 0.7')}" if phase == "packed_8" else ""))  # fmt: skip
    if not overlapped:
        text += "; the trials hardly overlapped, so these rates include trials running with fewer others"
    text += (f"; GPU busy {percent(figures['gpu_busy_while_training'])} while trials trained "
             f"({percent(figures['gpu_busy_while_all_trained'])} while all did), {figures['training_seconds']:.0f} s "
             f"of {seconds:.0f} s; peak {mib(figures['peak_mib_per_process'])} per trial process; {figures['status']}")
    record(phase, figures, text)
    return code


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} %"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


def phase_default_search(limit_s: float, prewarm: subprocess.Popen | None) -> int | None:
    if prewarm is not None and prewarm.poll() is None:  # two generators of one dataset would each take a core
        print("default_search: waiting for its datasets to be made", flush=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            prewarm.wait(timeout=max(0.0, limit_s - MIN_PHASE_S))
        limit_s = min(limit_s, deadline - time.monotonic() - RESERVE_S)
    stop(prewarm)
    code, seconds, run_dir, sampler = search("default_search", DRY_SEARCH if DRY else DEFAULT_SEARCH, limit_s)
    spans = [(t[0].start, t[-1].end) for t in trial_epochs(run_dir)]
    figures = {"status": how_it_ended(code), "wall_seconds": seconds, "trials": len(spans),
               "training_seconds": union_seconds(spans), "gpu_busy_while_training": sampler.busy(spans),
               "peak_mib_in_use": max((used for *_, used in sampler.samples), default=None)}  # fmt: skip
    command = " ".join(DRY_SEARCH if DRY else DEFAULT_SEARCH)
    record("default_search", figures,
           f"search/run.py {command}: {seconds:.0f} s, {figures['status']}; {len(spans)} trials trained for "
           f"{figures['training_seconds']:.0f} s in all, the GPU {percent(figures['gpu_busy_while_training'])} busy "
           f"meanwhile")  # fmt: skip
    return code


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    if process is not None:
        process.wait()


# --- the DCASE24 projection -----------------------------------------------------------------------------------------


def asha_stops(trials: int, max_t: int, grace: int, reduction: int) -> list[tuple[int, int]]:
    """(trials, epoch they stop at) under ASHA that keeps 1/reduction of the trials at each rung: the rungs of Ray's
    AsyncHyperBandScheduler (grace · reduction^k below max_t), each trial ranked once all reached it."""
    stops, alive, rung = [], trials, grace
    while rung < max_t and alive > 1:
        keep = math.ceil(alive / reduction)
        stops.append((alive - keep, rung))
        alive, rung = keep, rung * reduction
    return stops + [(alive, max_t)]


def project_dcase24(figures: dict) -> dict | None:
    """The DCASE24 KD search's wall time on this GPU from the measured figures; None without a one-trial figure."""
    spaces = {name: yaml.safe_load((ROOT / "spaces" / name).read_text()) for name in DCASE24_SPACES
              if (ROOT / "spaces" / name).is_file()}  # fmt: skip
    baseline = spaces[DCASE24_SPACES[0]]
    epochs, batch, subsets = baseline["epochs"], baseline["batch_size"], baseline["search"]["subset"]
    asha = [(space["scheduler"], name) for name, space in spaces.items()
            if (space.get("scheduler") or {}).get("type") == "asha"]  # fmt: skip
    if not asha:
        print(f"DCASE24 projection: none of spaces/{', '.join(DCASE24_SPACES)} stops trials with ASHA")
        return None
    scheduler, source = asha[0]
    one = figures.get("one_trial", {}).get(f"fp32_b{batch}", {}).get("clips_per_second")
    if not one:
        print(f"DCASE24 projection: no one-trial figure at batch {batch}; nothing to project from")
        return None
    packed = [(figures[p]["ratio_to_one_trial"], p) for p in ("packed_8", "packed_16")
              if (figures.get(p) or {}).get("ratio_to_one_trial")]  # fmt: skip
    ratio, packing = max(packed) if packed else (1.0, "no packed figure: one trial at a time")
    stops = asha_stops(DCASE24_TRIALS, epochs, scheduler["grace_period"], scheduler["reduction_factor"])
    trial_epochs_per_subset = sum(n * at for n, at in stops)
    clip_epochs = DCASE24_CLIPS * sum(subsets) / 100 * trial_epochs_per_subset
    seconds = clip_epochs / (one * ratio)
    formula = (f"{DCASE24_CLIPS:,} clips × ({' + '.join(str(s) for s in subsets)}) % × {trial_epochs_per_subset:,} "
               f"trial-epochs per subset ({' + '.join(f'{n}×{at}' for n, at in stops)}) = {clip_epochs:,.0f} clips "
               f"trained, at {one:,.0f} clips/s (one trial, batch {batch}) × {ratio:.2f} ({packing}) = "
               f"{one * ratio:,.0f} clips/s: {seconds:,.0f} s")  # fmt: skip
    print(f"DCASE24 KD search projected on this GPU: {len(subsets)} subsets × {DCASE24_TRIALS} trials × {epochs} "
          f"epochs, ASHA grace {scheduler['grace_period']}, reduction {scheduler['reduction_factor']} "
          f"(spaces/{source}): {seconds / 60:,.1f} min {target(seconds, 3600, 'under 1 hour', below=True)}\n"
          f"  = {formula}\n  (training only: each epoch's evaluation, trial start-up and Ray are not counted)")
    return {"seconds": seconds, "formula": formula, "trial_epochs_per_subset": trial_epochs_per_subset,
            "clips_per_second": one * ratio, "packing": packing, "scheduler_from": source}  # fmt: skip


def read_figures() -> dict:
    return json.loads(OUT.read_text()) if OUT.is_file() else {}


# --- the parent: phases in order, each within its limit ----------------------------------------------------------


def child(phase: str, limit_s: float) -> int | None:
    """Run `phase` in a new process of this script: a hard time limit, and the GPU's memory freed after it."""
    command = [sys.executable, __file__, "--phase", phase, "--out", str(OUT), "--data-dir", args.data_dir,
               "--clips", str(args.clips), "--epochs", str(args.epochs), *dry_flag()]
    # The figures are the output; library deprecation warnings in it are noise.
    code, _ = run_limited(command, limit_s, env={"PYTHONWARNINGS": "ignore"})
    return code


def dry_flag() -> list[str]:
    return ["--cpu-dry-run"] if DRY else []


def summary(figures: dict) -> list[str]:
    """The phases' outcomes and the figures that have targets, one line each."""
    lines = [f"{name}: {state}" for name, state in figures.get("phases", {}).items()]
    data = figures.get("data") or {}
    if data and not data["cached"]:
        lines.append(f"data: {data['clips']:,} clips made in {data['seconds']:.1f} s "
                     f"{target(data['seconds'], 20, '≤ 20 s', below=True)}")  # fmt: skip
    one = figures.get("one_trial", {}).get("fp32_b256", {}).get("clips_per_second")
    if one:
        lines.append(f"one trial, batch 256: {one:,.0f} clips/s {target(one, 20_000, '≥ 20,000')}")
    packed = figures.get("packed_8") or {}
    if packed.get("ratio_to_one_trial"):
        lines.append(f"8 packed: {packed['ratio_to_one_trial']:.2f}x one trial, slowest/fastest "
                     f"{packed['slowest_to_fastest'] or 0:.2f} {target(packed['ratio_to_one_trial'], 6, '≥ 6x')} "
                     f"{target(packed['slowest_to_fastest'], 0.7, '≥ 0.7')}")  # fmt: skip
    bf16 = figures.get("passt_s", {}).get("bf16")
    if bf16:
        train, logits = bf16["train_clips_per_second"], bf16["logits_clips_per_second"]
        lines.append(f"PaSST-S bf16: training {train:,.0f} clips/s {target(train, 2_300, '≥ 2,300')}, logits "
                     f"{logits:,.0f} clips/s {target(logits, 10_000, '≥ 10,000')}")
    projection = figures.get("projection_dcase24")
    if projection:
        lines.append(f"DCASE24 projection: {projection['seconds'] / 60:,.1f} min "
                     f"{target(projection['seconds'], 3600, 'under 1 hour', below=True)}")  # fmt: skip
    return lines


def main() -> int:
    global deadline
    if args.figures:
        project_dcase24(json.loads(Path(args.figures).read_text()))
        return 0
    import torch

    if not DRY and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; skipped (use --cpu-dry-run to exercise the code on the CPU)")
        return 0
    # A SIGTERM (gpu_check.sh's timeout) unwinds like Ctrl-C, so the phase running is stopped with its Ray processes:
    # they live in process groups of their own, which no signal to this one reaches.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    deadline = time.monotonic() + args.budget_s
    started = time.monotonic()
    args.logs = args.logs or str(OUT.with_name(OUT.name + ".logs"))
    args.clips = DRY_CLIPS if DRY else args.clips
    args.data_dir = args.data_dir or f"/tmp/kd-bench/noise-{args.clips}-dry{int(DRY)}"
    OUT.unlink(missing_ok=True)
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    device = "cpu (dry run: no figure means anything)" if DRY else torch.cuda.get_device_name(0)
    record("device", device, f"bench_gpu: {device}, {os.cpu_count()} cores, budget {args.budget_s:.0f} s")
    record("budget_s", args.budget_s)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        args.work = work
        with open(Path(args.logs) / "prewarm.log", "w") as log:
            command = [sys.executable, __file__, "--phase", "prewarm", "--work", work, "--out", str(OUT), *dry_flag()]
            prewarm = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        try:
            for phase, limit in PHASE_LIMITS.items():
                left = deadline - time.monotonic() - RESERVE_S
                # A CPU shared with other work starts Ray and exports a run's best student slower than a GPU machine.
                limit = left if limit is None else min(limit * (2 if DRY else 1), left)
                data_missing = phase != "data" and "done" not in read_figures().get("phases", {}).get("data", "")
                if limit < MIN_PHASE_S or data_missing:
                    why = "no dataset" if data_missing else f"{max(left, 0):.0f} s of the budget left"
                    record(f"phases.{phase}", f"skipped: {why}", f"{phase}: skipped ({why})")
                    continue
                print(f"--- {phase} (limit {limit:.0f} s)", flush=True)
                phase_started = time.monotonic()
                if phase in ("data", "one_trial", "passt_s"):
                    code = child(phase, limit)
                elif phase == "default_search":
                    code = phase_default_search(limit, prewarm)
                else:
                    trials = {"one_trial_ray": 1, "packed_8": 8, "packed_16": 16}[phase]
                    code = phase_ray_trials(phase, DRY_PACKED if DRY and trials > 1 else trials, limit)
                took = time.monotonic() - phase_started
                failed |= code not in (0, None)
                record(f"phases.{phase}", f"{how_it_ended(code)}, {took:.0f} s (limit {limit:.0f} s)")
        finally:
            stop(prewarm)
    if args.project:
        projection = project_dcase24(read_figures())
        if projection:
            record("projection_dcase24", projection)
    record("wall_seconds", time.monotonic() - started)
    print(f"--- summary ({time.monotonic() - started:.0f} s of a {args.budget_s:.0f} s budget; figures in {OUT})")
    for line in summary(read_figures()):
        print(f"  {line}")
    return 1 if failed else 0


deadline = 0.0

if __name__ == "__main__":
    if args.phase:
        phases = {"data": phase_data, "one_trial": phase_one_trial, "passt_s": phase_passt_s, "prewarm": phase_prewarm}
        phases[args.phase]()
        sys.exit(0)
    sys.exit(main())
