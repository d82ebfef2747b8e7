"""End-to-end runs of every trainable on device "cuda": under the CUDA stand-in in the test suite
(tests/asc/test_cuda_path.py), and on a real GPU as their twins:

    python tests/cuda_scenarios.py --device cuda --storage /tmp/cuda_scenarios

Each scenario is given the device as a user writes it, `cuda` without an index, and works in its own
folder; it returns what the tests compare. The search scenario runs `search/run.py --space kd.yaml` on
tiny settings in a subprocess (with the stand-in: one fake GPU declared to Ray, installed in every
process it starts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from tests.cuda_standin import ENV as STANDIN_ENV  # noqa: E402
from trainables.asc.data import AscData, load_prepared  # noqa: E402
from trainables.asc.loader import clip_batches, epoch_batches  # noqa: E402
from trainables.asc.student_training import StudentConfig, train_student  # noqa: E402
from trainables.asc.synthetic import SyntheticConfig, generate  # noqa: E402
from trainables.asc.teacher import TeacherConfig  # noqa: E402
from trainables.asc.teacher_training import teacher_logits, train_teacher  # noqa: E402
from trainables.common import claim_device, resolve_device  # noqa: E402
from trainables.speaker.data import load_prepared as load_speakers  # noqa: E402
from trainables.speaker.student_training import OskdftConfig, train_oskdft2  # noqa: E402
from trainables.speaker.synthetic import SyntheticSpeakerConfig  # noqa: E402
from trainables.speaker.synthetic import generate as generate_speakers  # noqa: E402
from trainables.speaker.teacher import SslConfig  # noqa: E402
from trainables.speaker.teacher_training import TeacherTrainConfig, train_ssl_teacher  # noqa: E402

STANDIN_SITE = Path(__file__).resolve().parent / "standin_site"
# 3 segments per scene, val and test 1 segment with 1 clip per device: 90 clips each.
ASC_DATA = SyntheticConfig(seed=3, train_segments_per_class=3, val_segments_per_class=1, test_segments_per_class=1,
                           held_out_clips_per_segment=1)  # fmt: skip
SPEAKER_DATA = SyntheticSpeakerConfig(seed=2, train_speakers=4, train_utterances=3, val_speakers=0, test_speakers=3,
                                      test_utterances=2, ood_speakers=3, ood_utterances=2, min_seconds=1.0,
                                      max_seconds=1.2, trials_per_speaker=2)  # fmt: skip
SSL = SslConfig(layers=2, embed_dim=32, heads=2, ffn_dim=64, conv_channels=16, conv_depth=3, pos_conv_kernel=8,
                pos_conv_groups=2)  # fmt: skip


def asc_data(work: Path) -> AscData:
    directory = work / "asc_data"
    if not (directory / "meta.csv").exists():
        generate(ASC_DATA, directory)
    return load_prepared(directory)


def impulse_responses(work: Path) -> Path:
    folder = work / "irs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, taps in {"short": [1.0, 0.5], "long": [1.0] + [0.0] * 300 + [0.3]}.items():
        soundfile.write(folder / f"{name}.wav", np.asarray(taps, dtype=np.float32), 32000)
    return folder


def data_path(device: torch.device, work: Path) -> dict:
    """The batch feeder on `device`: the same rows and samples as the CPU's, in order and shuffled, and an epoch
    under a step budget."""
    data = asc_data(work)
    rows = data.splits["split100"]
    device = resolve_device(device)
    ordered = list(clip_batches(data, rows, 16, False, device))
    cpu = list(clip_batches(data, rows, 16, False, torch.device("cpu")))
    torch.manual_seed(0)
    shuffled = [b.rows for b in clip_batches(data, rows, 16, True, device)]
    torch.manual_seed(0)
    shuffled_cpu = [b.rows for b in clip_batches(data, rows, 16, True, torch.device("cpu"))]
    steps = sum(1 for _ in epoch_batches(data, rows, 16, 2 * len(ordered) + 1, device))
    return {
        "batches": len(ordered),
        "same_rows": all(np.array_equal(a.rows, b.rows) for a, b in zip(ordered, cpu)),
        "same_samples": all(torch.equal(a.waveform.cpu(), b.waveform) for a, b in zip(ordered, cpu)),
        "same_index": all(np.array_equal(a.index.cpu().numpy(), a.rows) for a in ordered),
        "same_shuffle": all(np.array_equal(a, b) for a, b in zip(shuffled, shuffled_cpu)),
        "budget_steps": steps,
    }


def student(device: torch.device, work: Path, precision: str = "fp32", epochs: int = 2) -> dict:
    """One student trial as a Ray trial runs it (claim_device at its entry), every augmentation and distillation
    on; with 2 epochs, epoch 2 again, resumed from epoch 1's checkpoint."""
    data = asc_data(work)
    threads = torch.get_num_threads()
    try:
        claimed = claim_device(cpus=1, gpus=0.5)
    finally:
        torch.set_num_threads(threads)
    config = StudentConfig(subset=100, epochs=epochs, train_steps=2 * epochs, batch_size=16, kd_lambda=0.5,
                           mixstyle_p=1.0, freqm=48, roll_sec=0.1, mixup_alpha=0.3,
                           dir_path=str(impulse_responses(work)), dir_prob=1.0, precision=precision)  # fmt: skip
    teacher = np.random.default_rng(0).normal(size=(len(data.filenames), len(data.classes))).astype(np.float32)
    reports: list[tuple[dict, dict]] = []
    torch.manual_seed(0)
    train_student(config, data, teacher, lambda m, make: reports.append((m, make())), device=claimed)
    resumed: list[dict] = []
    if epochs > 1:
        train_student(config, data, teacher, lambda m, make: resumed.append(m), device=device,
                      resume=reports[0][1]["train_state"])  # fmt: skip
    return {"claimed": claimed, "metrics": [m for m, _ in reports], "resumed": resumed,
            "cuda_rng": reports[0][1]["train_state"]["cuda_rng"]}  # fmt: skip


def teacher(device: torch.device, work: Path, precision: str = "fp32") -> dict:
    """One teacher fine-tuning (a tiny PaSST) and its logits for a subset's teacher rows."""
    data = asc_data(work)
    config = TeacherConfig(arch="passt_tiny", embed_dim=32, depth=1, num_heads=2, epochs=1, train_steps=2, batch_size=8,
                           freqm=8, timem=8, mixstyle_p=1.0, s_patchout_f=2, s_patchout_t=2, precision=precision,
                           eval_batch_size=64)  # fmt: skip
    torch.manual_seed(0)
    model, metrics = train_teacher(config, data, 100, device=device)
    rows = data.teacher_rows(25)
    logits = teacher_logits(model, data, resolve_device(device), precision=precision, rows=rows)
    return {"metrics": metrics, "logits": logits, "rows": len(rows), "classes": len(data.classes)}


def speaker(device: torch.device, work: Path, precision: str = "fp32") -> dict:
    """The embedded default's SSL teacher trained a step's worth, then an OS-KDFT2 student on it for 2 epochs,
    the second again resumed from the first's checkpoint."""
    directory = work / "speaker_data"
    if not (directory / "meta.csv").exists():
        generate_speakers(SPEAKER_DATA, directory)
    data = load_speakers(directory)
    torch.manual_seed(0)
    teacher_reports: list[dict] = []
    state = train_ssl_teacher(SSL, TeacherTrainConfig(epochs=1, batch_size=3, crop_seconds=0.5, mask_prob=0.3),
                              data, on_epoch=teacher_reports.append, device=device)  # fmt: skip
    config = OskdftConfig(teacher=SSL, epochs=2, batch_size=4, crop_seconds=0.5, precision=precision, dropout=0.1)
    reports: list[tuple[dict, dict]] = []
    torch.manual_seed(0)
    train_oskdft2(config, data, state, lambda m, make: reports.append((m, make())), device=device)
    resumed: list[dict] = []
    train_oskdft2(config, data, state, lambda m, make: resumed.append(m), device=device,
                  resume=reports[0][1]["train_state"])  # fmt: skip
    return {"teacher": teacher_reports, "teacher_state": state, "metrics": [m for m, _ in reports],
            "resumed": resumed}  # fmt: skip


SEARCH_SETTINGS = [
    "epochs=1", "train_steps=2", "batch_size=16", "confirm_top_k=0", "compare_without_kd=false",
    "teacher.epochs=1", "teacher.train_steps=2", "teacher.pretrain=none", "teacher.width=16",
    "teacher.eval_batch_size=180", "teacher.allow_weak=true",  # 2 steps teach a teacher nothing, and need not here
]  # fmt: skip


def search(work: Path, standin: bool, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`search/run.py --space kd.yaml` with no GPU flag, one subset, one trial, on tiny data; with `standin`,
    every process it starts sees one fake GPU."""
    asc_data(work)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if standin:
        env[STANDIN_ENV] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STANDIN_SITE), str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, str(ROOT / "search" / "run.py"), "--space", "kd.yaml", "--data", str(work / "asc_data"),
            "--storage", str(work / "runs"), "--name", "gpu", "--subsets", "25", "--samples", "1"]  # fmt: skip
    for setting in SEARCH_SETTINGS:
        argv += ["--set", setting]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=work)


def gpu_planning(device: torch.device, work: Path) -> dict:
    """What the search driver sees of this machine's GPU, and the packing it plans on a 16-core node with it."""
    from search.cluster import automatic_resources, local_gpu
    from spaces.space import ResourceSettings

    gpu = local_gpu()
    node = {"CPU": 16.0, "GPU": 1.0}
    return {"gpu": gpu, "resources": automatic_resources(ResourceSettings(), [node], gpu)}


SCENARIOS: dict[str, Callable[[torch.device, Path], object]] = {
    "data path": data_path,
    "student fp32": student,
    "student bf16": lambda device, work: student(device, work, "bf16", epochs=1),  # bf16 convolutions crawl on CPUs
    "teacher fp32": teacher,
    "teacher bf16": lambda device, work: teacher(device, work, "bf16"),
    "OS-KDFT2 and SSL teacher": speaker,
    "GPU planning": gpu_planning,
}


def main() -> int:
    parser = argparse.ArgumentParser(description="Every trainable end to end on a real device (the stand-in's twins).")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--storage", type=Path, default=Path("cuda_scenarios"))
    parser.add_argument("--no-search", action="store_true", help="skip the search/run.py scenario")
    args = parser.parse_args()
    args.storage.mkdir(parents=True, exist_ok=True)
    work = args.storage.resolve()
    failed = 0
    runs: dict[str, Callable[[], object]] = {name: (lambda f=f: f(torch.device(args.device), work))
                                              for name, f in SCENARIOS.items()}  # fmt: skip
    if not args.no_search:
        runs["search/run.py --space kd.yaml"] = lambda: _checked_search(work)
    for name, run in runs.items():
        started = time.perf_counter()
        try:
            run()
            print(f"ok    {name} ({time.perf_counter() - started:.1f} s)", flush=True)
        except Exception:  # noqa: BLE001 - every scenario runs; the exit status says whether all passed
            failed += 1
            print(f"FAIL  {name} ({time.perf_counter() - started:.1f} s)\n{traceback.format_exc()}", flush=True)
    print(f"{len(runs) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _checked_search(work: Path) -> None:
    done = search(work, standin=False)
    if done.returncode != 0:
        raise RuntimeError(f"search/run.py exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


if __name__ == "__main__":
    sys.exit(main())
