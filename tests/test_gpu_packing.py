"""Fractional GPUs: how many trials a cluster holds at once, impossible requests, and each trial's memory cap.

No GPU runs here: the cluster is described by the resource dicts Ray reports, and the memory-cap test
stands in for CUDA where the trial would call it.
"""

from __future__ import annotations

import pytest
import torch

import search.trials
from search.cluster import check_resources, trials_at_once
from search.space import build_space
from search.space_errors import SpaceError
from search.space_file import read_space_file

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


def _space(max_concurrent: int = 0, **resources):
    raw = read_space_file("kd")
    raw["resources"] = {**raw["resources"], **resources}
    raw["max_concurrent"] = max_concurrent
    return build_space(raw)


def test_the_run_prints_how_many_trials_run_at_once(capsys):
    assert check_resources(_space(gpus_per_trial=0.25, cpus_per_trial=2), [CPU_NODE, GPU_NODE, GPU_NODE]) == 16
    assert "up to 16 student trials at once" in capsys.readouterr().out
    assert check_resources(_space(max_concurrent=3, gpus_per_trial=0.25), [GPU_NODE]) == 3


def test_a_gpu_trial_gets_the_cpus_its_data_path_needs_unless_the_space_sets_them(capsys):
    assert _space().resources.cpus_per_trial == 1, "a CPU trial: one core"
    gpu = _space(gpus_per_trial=0.125)
    assert (gpu.resources.cpus_per_trial, gpu.resources.teacher_cpus_per_trial) == (2, 2)
    assert _space(gpus_per_trial=0.125, cpus_per_trial=1).resources.cpus_per_trial == 1, "the space's own choice stays"
    assert check_resources(gpu, [GPU_NODE]) == 8
    out = capsys.readouterr().out
    assert "2 CPUs, 0.125 GPUs each" in out and "gathers its next batches" in out


def test_a_request_no_node_can_satisfy_is_refused():
    with pytest.raises(SpaceError, match="student trial asks for 2 CPUs and 0.5 GPUs"):
        check_resources(_space(gpus_per_trial=0.5), [CPU_NODE, {"CPU": 8.0}])
    with pytest.raises(SpaceError, match="teacher trial asks for 64 CPUs"):
        check_resources(_space(teacher_cpus_per_trial=64), [CPU_NODE, GPU_NODE])


@pytest.mark.parametrize("fraction, capped", [(0.25, 0.25), (0.5, 0.5), (1.0, None), (2.0, None)])
def test_a_fractional_gpu_trial_caps_its_gpu_memory_to_its_share(monkeypatch, fraction, capped):
    calls = []
    monkeypatch.setattr(search.trials, "default_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda share, device=None: calls.append(share))
    threads = torch.get_num_threads()
    try:
        device = search.trials._claim_device(cpus=2, gpus=fraction)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert device.type == "cuda"
    assert calls == ([] if capped is None else [capped])
