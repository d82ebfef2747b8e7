"""The GPU path, proved on a CPU: every trainable end to end on device "cuda" under the CUDA stand-in
(tests/cuda_standin.py), a whole search against one fake GPU, and a gate that fails when a line that
runs only on a GPU (tests/cuda_lines.py) ran in none of them.

The meta-device tests (test_device.py) catch tensors on mixed devices; these catch CUDA calls made
wrongly, like the index-less `torch.cuda.set_device` that crashed every GPU trial of 0fcc8ca at its first
batch. `python tests/cuda_scenarios.py --device cuda` runs the same scenarios on a real GPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import coverage
import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import TINY
from tests.cuda_lines import project_cuda_lines
from tests.cuda_scenarios import ASC_DATA, SCENARIOS, search
from tests.cuda_standin import LOG_ENV, MEMORY, NAME, cuda_standin
from trainables.asc.loader import clip_batches

CUDA_LINES = project_cuda_lines()


class Recorder:
    """Runs each scenario once under the stand-in, recording which lines of the project it executed (its
    feeder threads too: coverage traces the threads started while it runs)."""

    def __init__(self, work: Path):
        self.work = work
        self.coverage = coverage.Coverage(data_file=None, include=[str(p) for p in CUDA_LINES], config_file=False)
        self.results: dict[str, object] = {}

    def run(self, name: str) -> object:
        if name not in self.results:
            with cuda_standin() as cuda:
                self.coverage.start()
                try:
                    self.results[name] = SCENARIOS[name](cuda, self.work)
                finally:
                    self.coverage.stop()
        return self.results[name]

    def missing(self) -> list[str]:
        data = self.coverage.get_data()
        return [f"{path.relative_to(path.parents[1])}:{line}  {text}" for path, lines in CUDA_LINES.items()
                for line, text in lines.items() if line not in set(data.lines(str(path)) or ())]  # fmt: skip


def _work(folder: Path, tiny_dir: Path) -> Path:
    """A scenario folder whose dataset is the session's tiny one (the same configuration): not made again."""
    assert ASC_DATA == TINY
    (folder / "asc_data").symlink_to(tiny_dir)
    return folder


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_dir) -> Recorder:
    return Recorder(_work(tmp_path_factory.mktemp("cuda"), tiny_dir))


def _finite(metrics: dict) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def test_the_stand_in_refuses_what_torch_cuda_refuses(tiny_data):
    with cuda_standin() as cuda:
        assert cuda == torch.device("cuda") and cuda.index is None
        assert torch.cuda.is_available() and torch.cuda.device_count() == 1
        # 0fcc8ca's crash: the feeder thread selected an index-less device.
        with pytest.raises(ValueError, match="Expected a torch.device with a specified index"):
            next(clip_batches(tiny_data, tiny_data.splits["split100"], 8, True, cuda))
        with pytest.raises(ValueError, match="specified index"):
            torch.cuda.set_device(torch.device("cuda"))
        with pytest.raises(RuntimeError, match="invalid device ordinal"):
            torch.cuda.set_device("cuda:1")
        with pytest.raises(ValueError, match="Expected a cuda device"):
            torch.cuda.Stream(torch.device("cpu"))
        with pytest.raises(TypeError, match="must be `float`"):
            torch.cuda.set_per_process_memory_fraction(1, 0)
        with pytest.raises(ValueError, match="Allowed range"):
            torch.cuda.set_per_process_memory_fraction(1.5, 0)
        with pytest.raises(TypeError, match="torch.cuda.Stream"):
            torch.cuda.Event().record("the copy stream")
        with pytest.raises(TypeError, match="torch.cuda.Stream"):
            torch.zeros(2).record_stream(None)
        with pytest.raises(RuntimeError, match="ByteTensor"):
            torch.cuda.set_rng_state(torch.zeros(4), cuda)
        # What it lets through stays on the CPU.
        torch.cuda.set_device(torch.device("cuda", 0))
        assert torch.zeros(2, device="cuda:0").device.type == "cpu"
        assert torch.empty(3, pin_memory=True).pin_memory().to(cuda, non_blocking=True).device.type == "cpu"
        assert torch.nn.Linear(2, 2).to(cuda).weight.device.type == "cpu"
        assert torch.cuda.get_device_properties(cuda).total_memory == MEMORY
    assert not torch.cuda.is_available(), "the stand-in is gone after its block"
    assert torch.zeros(1).to("cpu").device.type == "cpu"
    with pytest.raises(RuntimeError):
        torch.zeros(1).record_stream(None)


def test_the_data_path_on_cuda_gives_the_cpu_batches(recorded):
    found = recorded.run("data path")
    assert found["batches"] > 1 and found["budget_steps"] == 2 * found["batches"] + 1
    assert found["same_rows"] and found["same_samples"] and found["same_index"] and found["same_shuffle"]


def test_a_student_trial_trains_and_resumes_on_cuda(recorded):
    found = recorded.run("student fp32")
    assert found["claimed"] == torch.device("cuda", 0), "a trial's entry resolves its device once, with its index"
    first, second = found["metrics"]
    assert _finite(first) and _finite(second) and second["epoch"] == 2 and "test_acc" in second
    assert isinstance(found["cuda_rng"], torch.Tensor), "the checkpoint keeps the GPU's random stream"
    (resumed,) = found["resumed"]
    assert resumed["epoch"] == 2
    for key in ("train_loss", "acc", "test_acc", "macro_acc"):
        assert resumed[key] == pytest.approx(second[key], abs=1e-6), key


def test_a_student_trial_trains_in_bf16_on_cuda(recorded):
    (only,) = recorded.run("student bf16")["metrics"]
    assert _finite(only) and only["epoch"] == 1 and 0.0 <= only["test_acc"] <= 1.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_teacher_fine_tunes_and_writes_its_logits_on_cuda(recorded, precision):
    found = recorded.run(f"teacher {precision}")
    assert _finite(found["metrics"]) and found["metrics"]["epoch"] == 1
    assert found["logits"].shape == (found["rows"], found["classes"]) and found["logits"].dtype == np.float32
    assert np.isfinite(found["logits"]).all()


def test_os_kdft2_and_its_ssl_teacher_train_and_resume_on_cuda(recorded):
    found = recorded.run("OS-KDFT2 and SSL teacher")
    assert found["teacher"] and all(_finite(m) for m in found["teacher"])
    assert all(v.device.type == "cpu" for v in found["teacher_state"].values()), "the teacher's state comes back home"
    first, second = found["metrics"]
    assert _finite(first) and _finite(second) and 0.0 <= second["eer"] <= 1.0
    (resumed,) = found["resumed"]
    assert resumed["epoch"] == 2 and resumed["train_loss"] == pytest.approx(second["train_loss"], abs=1e-6)


def test_the_search_plans_for_the_gpu_it_finds(recorded):
    found = recorded.run("GPU planning")
    assert (found["gpu"].name, found["gpu"].memory) == (NAME, MEMORY)
    res = found["resources"]
    # 16 GiB holds 5 students of 3 GiB and no more; 16 CPUs would feed 8; a teacher needs a GPU of its own.
    assert (res.gpus_per_trial, res.cpus_per_trial) == (0.2, 2.0)
    assert (res.teacher_gpus_per_trial, res.teacher_cpus_per_trial) == (1.0, 2.0)


def test_the_default_search_runs_on_one_fake_gpu_without_flags(tmp_path, tiny_dir):
    log = tmp_path / "cuda_calls"
    log.mkdir()
    done = search(_work(tmp_path, tiny_dir), standin=True, env={LOG_ENV: str(log)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"GPUs found ({NAME}, 16 GiB)" in done.stdout
    assert "1 GPUs on 1 node(s): up to 1 student trials at once (2 CPUs, 1 GPUs each)" in done.stdout
    board = pd.read_csv(tmp_path / "runs" / "gpu" / "leaderboard.csv")
    assert (board["status"] == "complete").all() and len(board) == 1
    # The trials' batch feeders selected the fake GPU by its index, in Ray's worker processes.
    selected = [path.read_text() for path in log.glob("*.log")]
    assert len(selected) >= 2 and all(text.splitlines() and set(text.splitlines()) == {"set_device 0"}
                                      for text in selected)  # fmt: skip


def test_every_cuda_only_line_runs_under_the_stand_in(recorded):
    """The gate: every line that runs only on a GPU ran in a scenario above (they share one recorder; run alone,
    this test runs them itself)."""
    assert sum(len(lines) for lines in CUDA_LINES.values()) >= 30, "the finder still sees the GPU path"
    for name in SCENARIOS:
        recorded.run(name)
    missing = recorded.missing()
    assert not missing, "CUDA-only lines no stand-in test executes:\n" + "\n".join(missing)


def test_the_finder_sees_each_kind_of_cuda_only_line(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "import torch\n"
        "def f(device, x):\n"
        "    if device.type == 'cuda':\n"
        "        y = 1\n"
        "    if device.type != 'cuda':\n"
        "        z = 2\n"
        "    torch.cuda.is_available()\n"
        "    torch.cuda.synchronize(device)\n"
        "    x = x.to(device, non_blocking=True)\n"
        "    return 1024 if device.type == 'cuda' else 32\n"
        "def _cuda_feed():\n"
        "    return 3\n"
    )  # fmt: skip
    from tests.cuda_lines import cuda_only_lines

    assert sorted(cuda_only_lines(source)) == [4, 8, 9, 12]

