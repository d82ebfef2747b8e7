"""Fractional GPUs: how many trials a cluster holds at once, automatic packing, impossible requests, and each
trial's memory cap.

No GPU runs here: the cluster is described by the resource dicts Ray reports, and the memory-cap test runs
under the CUDA stand-in (tests/cuda_standin.py), which checks the arguments as torch.cuda does.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from search.cluster import STUDENT_GPU_MEMORY, Gpu, automatic_resources, check_resources, trials_at_once
from search.systems import build_space
from spaces.errors import SpaceError
from spaces.space_file import read_space_file
from tests.cuda_standin import cuda_standin
from trainables.common import claim_device

GPU_NODE = {"CPU": 16.0, "GPU": 2.0, "memory": 1e11}
CPU_NODE = {"CPU": 32.0, "memory": 1e11}


def test_fractional_gpus_pack_several_trials_on_one_gpu():
    assert trials_at_once([GPU_NODE], cpus=1, gpus=0.25) == 8
    assert trials_at_once([GPU_NODE], cpus=4, gpus=0.25) == 4, "CPUs limit before GPUs"
    assert trials_at_once([GPU_NODE], cpus=1, gpus=0.1) == 16, "1 / 0.1 is 10 per GPU, capped by 16 CPUs"
    assert trials_at_once([{"CPU": 64.0, "GPU": 1.0}], cpus=1, gpus=0.1) == 10


def test_a_trial_fits_on_one_node_not_across_nodes():
    # The CPU-only head adds CPUs but no GPU-trial can use them.
    assert trials_at_once([CPU_NODE, GPU_NODE], cpus=1, gpus=0.5) == 4
    assert trials_at_once([CPU_NODE, GPU_NODE], cpus=1, gpus=0) == 48
    assert trials_at_once([CPU_NODE, {"CPU": 2.0, "GPU": 1.0}], cpus=1, gpus=0.25) == 2
    assert trials_at_once([CPU_NODE], cpus=1, gpus=0.25) == 0


H200 = Gpu("NVIDIA H200", 139 * 2**30)


def _space(nodes: list[dict], max_concurrent: int = 0, gpu: Gpu | None = H200, **resources):
    """kd.yaml with `resources` set, its automatic requests decided for `nodes` as the run decides them."""
    raw = read_space_file("kd")
    raw["resources"] = {**raw["resources"], **resources}
    raw["max_concurrent"] = max_concurrent
    space = build_space(raw)
    return dataclasses.replace(space, resources=automatic_resources(space.resources, nodes, gpu))


def test_the_run_prints_how_many_trials_run_at_once(capsys):
    nodes = [CPU_NODE, GPU_NODE, GPU_NODE]
    assert check_resources(_space(nodes, gpus_per_trial=0.25, cpus_per_trial=2), nodes) == 16
    assert "up to 16 student trials at once" in capsys.readouterr().out
    assert check_resources(_space([GPU_NODE], max_concurrent=3, gpus_per_trial=0.25), [GPU_NODE]) == 3


def test_a_gpu_trial_gets_the_cpus_its_data_path_needs_unless_the_space_sets_them(capsys):
    assert _space([CPU_NODE]).resources.cpus_per_trial == 1, "a CPU trial: one core"
    gpu = _space([GPU_NODE], gpus_per_trial=0.125)
    assert gpu.resources.cpus_per_trial == 2, "a GPU trial: its loop and its batch feeder"
    assert gpu.resources.teacher_cpus_per_trial == 2, "kd.yaml's own teacher CPUs"
    assert _space([GPU_NODE], gpus_per_trial=0.125, cpus_per_trial=1).resources.cpus_per_trial == 1, "the space's own"
    assert check_resources(gpu, [GPU_NODE]) == 8
    out = capsys.readouterr().out
    assert "2 CPUs, 0.125 GPUs each" in out and "gathers its next batches" in out


def test_without_gpu_flags_the_gpus_a_cluster_has_are_packed_by_memory_and_cpus(capsys):
    # The lent machine, 16 CPUs beside one H200: 8 students of 2 CPUs (its memory would hold 46 of 3 GiB).
    res = _space([{"CPU": 16.0, "GPU": 1.0}]).resources
    assert (res.gpus_per_trial, res.cpus_per_trial) == (0.125, 2.0)
    assert "GPUs found (NVIDIA H200, 139 GiB): 8 student trials per GPU" in capsys.readouterr().out
    # 16 CPUs beside each of 2 GPUs: 8 a GPU, so 4 students on each.
    assert _space([GPU_NODE]).resources.gpus_per_trial == 0.25
    # A 64-core node with one 16 GiB GPU: its memory holds 5 students (1/5 GPU each).
    small = _space([{"CPU": 64.0, "GPU": 1.0}], gpu=Gpu("T4", 16 * 2**30)).resources
    assert small.gpus_per_trial == 0.2 and 16 * 2**30 // STUDENT_GPU_MEMORY == 5
    # 1/3 as Ray counts it (units of 1/10,000, rounded down) still packs 3.
    third = _space([{"CPU": 6.0, "GPU": 1.0}]).resources
    assert third.gpus_per_trial == 0.3333 and trials_at_once([{"CPU": 6.0, "GPU": 1.0}], 2.0, 0.3333) == 3
    # A remote cluster whose GPUs this driver cannot see: a 16 GiB GPU is assumed, and the run says so.
    assert _space([{"CPU": 16.0, "GPU": 1.0}], gpu=None).resources.gpus_per_trial == 0.2
    assert "not visible here: assumed 16 GiB" in capsys.readouterr().out
    # --gpus-per-trial 0 keeps a GPU cluster's students on CPUs (the teachers still get the GPUs) …
    kept = _space([GPU_NODE], gpus_per_trial=0).resources
    assert (kept.gpus_per_trial, kept.cpus_per_trial, kept.teacher_gpus_per_trial) == (0.0, 1.0, 0.25)
    assert capsys.readouterr().out.startswith("GPUs found (NVIDIA H200, 139 GiB): 4 teacher trials per GPU")
    # … and with no GPU anywhere every trial is a CPU trial, a core each (kd.yaml gives teachers 2).
    cpu = _space([CPU_NODE]).resources
    assert (cpu.gpus_per_trial, cpu.cpus_per_trial, cpu.teacher_gpus_per_trial) == (0.0, 1.0, 0.0)
    assert "GPUs found" not in capsys.readouterr().out


def test_a_request_no_node_can_satisfy_is_refused():
    with pytest.raises(SpaceError, match="student trial asks for 2 CPUs and 0.5 GPUs"):
        nodes = [CPU_NODE, {"CPU": 8.0}]
        check_resources(_space(nodes, gpus_per_trial=0.5), nodes)
    with pytest.raises(SpaceError, match="teacher trial asks for 64 CPUs"):
        check_resources(_space([CPU_NODE, GPU_NODE], teacher_cpus_per_trial=64), [CPU_NODE, GPU_NODE])


@pytest.mark.parametrize("fraction, capped", [(0.25, 0.25), (0.5, 0.5), (1.0, 1.0), (2.0, 1.0)])
def test_a_fractional_gpu_trial_caps_its_gpu_memory_to_its_share(fraction, capped):
    threads = torch.get_num_threads()
    try:
        with cuda_standin():
            device = claim_device(cpus=2, gpus=fraction)
            assert torch.get_num_threads() == 2
            assert device == torch.device("cuda", 0), "the trial's device carries its index"
            assert torch.cuda.get_per_process_memory_fraction(device) == capped
    finally:
        torch.set_num_threads(threads)
