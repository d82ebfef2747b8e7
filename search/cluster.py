"""The Ray cluster a run uses: started here or joined, its resources checked against what trials ask for,
and its storage checked to be shared by every node."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from search.request import RunRequest
from search.signals import sigterm_shielded
from spaces.errors import SpaceError
from spaces.space import GPU_TRIAL_CPUS, ResourceSettings, Space

ROOT = Path(__file__).resolve().parent.parent
# A reused worker runs each trial in a new thread, and glibc gives threads their own malloc arenas, each keeping
# the memory it once held: a worker grew from 0.8 to 1.9 GB over 6 sequential trials. Two arenas hold it at
# one trial's peak, with no measurable cost in speed.
WORKER_ENV = {"env_vars": {"MALLOC_ARENA_MAX": "2"}}


# What one trial holds on a GPU: a student at batch 256 in fp32 peaked at 2.3 GB on an H200 (2026-12-04); a
# teacher (PaSST-S at batch 80) needs far more. Packing stops at 8 trials a GPU: past that they only take turns.
STUDENT_GPU_MEMORY = 3 * 2**30
TEACHER_GPU_MEMORY = 24 * 2**30
MAX_TRIALS_PER_GPU = 8
UNKNOWN_GPU_MEMORY = 16 * 2**30  # a cluster's GPU this driver cannot see: assume a small one


@dataclasses.dataclass(frozen=True)
class Gpu:
    """The GPU automatic packing plans for (the driver's own first GPU, or an assumption on a remote cluster)."""

    name: str
    memory: int  # bytes


def local_gpu() -> Gpu | None:
    """This machine's first GPU, or None."""
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        return Gpu(properties.name, int(properties.total_memory))
    return None


@contextmanager
def cluster(request: RunRequest) -> Iterator[RunRequest]:
    """Ray for the run: joined at --address, or started here (and stopped after); its resources checked, and
    the automatic ones decided. Yields the request with every resource a number."""
    # Workers started here inherit this, so they import the project even where it is not installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray_logging = logging.INFO if request.verbose else logging.ERROR
    owns_ray = not ray.is_initialized()  # a test session (or a notebook) may have started Ray already
    started_here = owns_ray and not request.address
    if owns_ray and request.address:
        ray.init(address=request.address, log_to_driver=False, runtime_env=WORKER_ENV, logging_level=ray_logging)
    elif owns_ray:
        # Ray counts GPUs through NVML; torch's count is what the trials will see (and honours CUDA_VISIBLE_DEVICES).
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        with sigterm_shielded():  # a scheduler's SIGTERM to the job's process group must stop the run, not its Ray
            ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20,
                     runtime_env=WORKER_ENV, logging_level=ray_logging, num_gpus=gpus)  # fmt: skip
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        found = [n["Resources"] for n in nodes]
        resources = automatic_resources(request.space.resources, found, local_gpu())
        request = dataclasses.replace(request, space=dataclasses.replace(request.space, resources=resources))
        request = dataclasses.replace(request, trials_at_once=check_resources(request.space, found))
        if len(nodes) > 1:
            check_shared_storage(request.storage, nodes)
        yield request
    finally:
        if started_here:
            _stop_started_ray()
        elif owns_ray:
            ray.shutdown()


def _stop_started_ray() -> None:
    """ray.shutdown() for the Ray this run started, without its graceful stop. Its processes were started with
    SIGTERM blocked (sigterm_shielded), so the SIGTERM Ray sends each reaches none, and each waits out a second
    before Ray's SIGKILL: 5 s at the end of every run. They are SIGKILLed once the driver has disconnected."""
    worker = ray._private.worker  # Ray's own record of the node it started (Ray is pinned; without it, Ray's stop)
    node = getattr(worker, "_global_node", None)
    if node is None or not hasattr(node, "kill_all_processes"):
        ray.shutdown()
        return
    worker._global_node = None  # ray.shutdown then disconnects the driver and leaves the node's processes here
    try:
        ray.shutdown()
    finally:
        if node.is_head():
            node.destroy_external_storage()
        node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)


def trials_per_gpu(memory: int, per_trial_memory: int, cpus_per_gpu: float, cpus_per_trial: float) -> int:
    """How many trials share one GPU: as many as its memory and the CPUs beside it hold, 1 to MAX_TRIALS_PER_GPU."""
    by_memory = memory // per_trial_memory
    by_cpus = math.floor(cpus_per_gpu / cpus_per_trial + 1e-6)
    return int(max(1, min(MAX_TRIALS_PER_GPU, by_memory, by_cpus)))


def automatic_resources(resources: ResourceSettings, nodes: list[dict], gpu: Gpu | None) -> ResourceSettings:
    """Decide the requests the space left automatic (None), and print what was chosen for GPUs.

    A cluster with GPUs gets GPU trials: each GPU node's GPUs packed with as many trials as one GPU's memory and
    its share of the node's CPUs hold (a fraction Ray can count: 1/n rounded down to its 1/10,000 units). A GPU
    trial's CPUs default to GPU_TRIAL_CPUS, a CPU trial's to 1. `gpu` describes the GPU (None: not visible from
    here, e.g. a remote cluster; a small one is assumed)."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
    memory = gpu.memory if gpu is not None else UNKNOWN_GPU_MEMORY
    cpus_per_gpu = min((n.get("CPU", 0) / n["GPU"] for n in gpu_nodes), default=0.0)
    changes: dict[str, float] = {}
    chosen: list[str] = []
    for kind, need in (("", STUDENT_GPU_MEMORY), ("teacher_", TEACHER_GPU_MEMORY)):
        gpus, cpus = getattr(resources, f"{kind}gpus_per_trial"), getattr(resources, f"{kind}cpus_per_trial")
        if gpus is None:
            if gpu_nodes:
                per_gpu = trials_per_gpu(memory, need, cpus_per_gpu, cpus or GPU_TRIAL_CPUS)
                gpus = math.floor(10_000 / per_gpu) / 10_000
                chosen.append(f"{per_gpu} {kind.rstrip('_') or 'student'} trial{'s' * (per_gpu > 1)} per GPU")
            else:
                gpus = 0.0
        if cpus is None:
            cpus = GPU_TRIAL_CPUS if gpus > 0 else 1.0
        changes[f"{kind}gpus_per_trial"], changes[f"{kind}cpus_per_trial"] = gpus, cpus
    if chosen:
        seen = f"{gpu.name}, {gpu.memory / 2**30:.0f} GiB" if gpu is not None else "not visible here: assumed 16 GiB"
        print(f"GPUs found ({seen}): {' and '.join(chosen)}, by GPU memory and CPUs; --gpus-per-trial or "
              "resources.* choose otherwise", flush=True)  # fmt: skip
    return dataclasses.replace(resources, **changes)


def trials_at_once(nodes: list[dict], cpus: float, gpus: float) -> int:
    """How many trials asking for `cpus` CPUs and `gpus` GPUs each (fractions allowed) the nodes hold at once.

    nodes: each node's resources as Ray reports them ({"CPU": 16.0, "GPU": 2.0, …}); a trial runs on one node.
    """

    def fits(available: float, asked: float) -> float:
        # The epsilon keeps 1 / 0.1 from flooring to 9; Ray itself counts in units of 1/10,000.
        return math.floor(available / asked + 1e-6) if asked > 0 else math.inf

    return int(sum(min(fits(n.get("CPU", 0), cpus), fits(n.get("GPU", 0), gpus)) for n in nodes))


def check_resources(space: Space, nodes: list[dict]) -> int:
    """Refuse, at start, a per-trial request no node can ever satisfy (Tune would leave it pending forever);
    print and return how many of its trials (students, for a KD run) run at once."""
    res = space.resources
    requests = {"student": (res.cpus_per_trial, res.gpus_per_trial),
                "teacher": (res.teacher_cpus_per_trial, res.teacher_gpus_per_trial)}  # fmt: skip
    for kind, (cpus, gpus) in requests.items():
        if trials_at_once(nodes, cpus, gpus) == 0:
            biggest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
            raise SpaceError(f"a {kind} trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but the largest node has "
                             f"{biggest[0]:g} CPUs and {biggest[1]:g} GPUs; lower resources.* or --cpus/--gpus-per-trial")
    at_once = trials_at_once(nodes, res.cpus_per_trial, res.gpus_per_trial)
    if space.max_concurrent:
        at_once = min(at_once, space.max_concurrent)
    total_cpus, total_gpus = (sum(n.get(kind, 0) for n in nodes) for kind in ("CPU", "GPU"))
    print(f"Resources: {total_cpus:g} CPUs, {total_gpus:g} GPUs on {len(nodes)} node(s): up to {at_once} "
          f"{space.spec.trials_are} at once ({res.cpus_per_trial:g} CPUs, {res.gpus_per_trial:g} GPUs each)",
          flush=True)  # fmt: skip
    if res.gpus_per_trial > 0:
        print(f"A GPU trial's {res.cpus_per_trial:g} CPUs run its training loop and the thread that gathers its next "
              "batches into pinned memory (resources.cpus_per_trial sets them)", flush=True)  # fmt: skip
    return at_once


def check_shared_storage(storage: Path, nodes: list[dict]) -> None:
    """On several nodes, every node must see the storage (trials write checkpoints, caches are read there)."""
    marker = storage / f".shared-check-{uuid.uuid4().hex}"
    storage.mkdir(parents=True, exist_ok=True)
    marker.write_text("this node wrote it")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return Path(path).is_file()

    try:
        checks = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}  # fmt: skip
        blind = [node for node, ref in checks.items() if not ray.get(ref, timeout=60)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise SpaceError(f"--storage {storage} is not shared: node(s) {', '.join(blind)} cannot see it; on a cluster "
                         "use a path every node mounts (NFS) so trials can write checkpoints and read the caches")
    print(f"Storage {storage} is shared by all {len(nodes)} nodes", flush=True)
