"""The search service: dataset → teachers → per-subset student search → no-KD references → results.

Run directory (`<storage>/<name>/`):
    space.yaml          the resolved settings (a resume refuses a changed space)
    teachers/           the Tune experiment that trained this run's teachers (absent on a cache hit)
    search/             the Tune experiment of every student trial, all subsets
    no_kd/              each subset's best configuration retrained with kd_lambda = 1
    leaderboard.csv, comparison.csv, best/subset_<N>/student.pt   (written by results/)
Shared caches (`<storage>/cache/`): prepared datasets and teacher logits, reused across runs.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from search.space import Space, SpaceError
from trainables.asc_data import load_prepared
from trainables.atomic import build_directory, set_aside
from trainables.synthetic_asc import generate

ROOT = Path(__file__).resolve().parent.parent
# A reused worker runs each trial in a new thread, and glibc gives threads their own malloc arenas, each keeping
# the memory it once held: a worker grew from 0.8 to 1.9 GB over 6 sequential trials. Two arenas hold it at
# one trial's peak, with no measurable cost in speed.
WORKER_ENV = {"env_vars": {"MALLOC_ARENA_MAX": "2"}}


@dataclass(frozen=True)
class RunRequest:
    space: Space
    storage: Path  # absolute
    name: str
    data: Path | None  # a prepared dataset; None: the embedded synthetic one, until prepare_dataset
    address: str | None  # a running Ray cluster; None: start Ray here
    resume: bool
    verbose: bool = False  # Ray Tune's own console output as well as the run's

    @property
    def run_dir(self) -> Path:
        return self.storage / self.name

    @property
    def cache_dir(self) -> Path:
        return self.storage / "cache"


def check_run_dir(request: RunRequest) -> None:
    """Refuse to overwrite a finished or started run, and a resume whose settings changed (before Ray starts)."""
    from search.record import RECORD, check_resumable

    record = request.run_dir / RECORD
    if request.resume:
        check_resumable(request.run_dir, request.space)
    elif record.exists():
        raise SpaceError(f"{request.run_dir} already holds a run; pass --resume to continue it or choose another --name")


def prepare_dataset(request: RunRequest) -> Path:
    """The prepared dataset the trials read: --data as given, or the embedded one, generated once and cached."""
    if request.data is not None:
        return request.data
    if request.space.system == "oskdft2":
        from trainables.speaker import synthetic as speakers
        from trainables.speaker.data import load_prepared as load_speakers

        directory = request.cache_dir / "datasets" / f"speakers-{request.space.data.fingerprint()}"
        return cached_dataset(directory, request.space.data, speakers.generate, load_speakers)
    directory = request.cache_dir / "datasets" / f"synthetic-{request.space.data.fingerprint()}"
    return cached_dataset(directory, request.space.data, generate, load_prepared)


def cached_dataset(directory: Path, config, make: Callable, load: Callable,
                   label: str = "the embedded synthetic dataset") -> Path:  # fmt: skip
    """`directory`, generated from `config` unless a whole copy is there; a damaged copy is set aside and made again.

    Generated under a temporary name and renamed when whole, so a run starting meanwhile never reads half of it."""
    if directory.exists():
        try:
            found = load(directory).fingerprint
            if found == config.fingerprint():
                return directory
            reason = f"made from other settings (fingerprint {found[:20]})"
        except (ValueError, KeyError, OSError, EOFError) as err:  # each loader's DatasetError is a ValueError
            reason = str(err)[:200]
        set_aside(directory, reason)
    from search.console import working

    with working(f"Generating {label} into {directory}"):
        build_directory(directory, lambda work: make(config, work))
    return directory


def run(request: RunRequest) -> None:
    """Everything after validation; starts (or joins) Ray."""
    import ray

    from results.export import export_best, export_lines
    from results.report import write_report
    from results.leaderboard import build_leaderboard, print_comparison, print_leaderboard, print_summary, write_tables
    from search.console import banner, quiet_ray
    from search.record import write_record
    from search.teachers import TeacherPlan, ensure_ssl_teacher, print_teachers
    from search.tuning import run_confirmation, run_references, search_trials, trainable_for, trial_constants

    space = request.space
    request.run_dir.mkdir(parents=True, exist_ok=True)
    print(f"Run directory: {request.run_dir}")
    print(f"Watch it with: tensorboard --logdir {request.run_dir}", flush=True)
    quiet_ray(request.verbose)

    data_dir = prepare_dataset(request)  # made before validation ended; here it is only looked up
    # Workers started here inherit this, so they import the project even where it is not installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray_logging = logging.INFO if request.verbose else logging.ERROR
    owns_ray = not ray.is_initialized()  # a test session (or a notebook) may have started Ray already
    if owns_ray and request.address:
        ray.init(address=request.address, log_to_driver=False, runtime_env=WORKER_ENV, logging_level=ray_logging)
    elif owns_ray:
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20, runtime_env=WORKER_ENV,
                 logging_level=ray_logging)  # fmt: skip
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        check_resources(space, [n["Resources"] for n in nodes])
        if len(nodes) > 1:
            check_shared_storage(request.storage, nodes)
        write_record(request.run_dir, space, data_dir, request.storage)  # only now has the run truly started
        if space.system == "oskdft2":
            constants = trial_constants(space, data_dir, teacher_state=str(ensure_ssl_teacher(request, data_dir)))
        elif space.system == "asc_teacher":
            init = TeacherPlan(request, data_dir, space.settings).run_init_stages()
            constants = trial_constants(space, data_dir, init_path=None if init is None else str(init))
        else:
            teacher_paths = {}
            if _uses_teacher(space):
                banner("Teachers")
                teacher_paths = TeacherPlan(request, data_dir).ensure(space.subsets)
                print_teachers(teacher_paths)
            constants = trial_constants(space, data_dir, teacher_logits={str(s): str(p) for s, p in teacher_paths.items()})
        trainable = trainable_for(space)
        banner(f"Search: {space.samples} trials per subset")
        search_trials(request, trainable, constants)
        if space.confirm_top_k:
            banner(f"Confirmation: the top {space.confirm_top_k} of each subset with {space.confirm_seeds} new seeds")
            run_confirmation(request, constants, build_leaderboard(request.run_dir, space.metric, space.mode))
        board = build_leaderboard(request.run_dir, space.metric, space.mode)
        if space.system == "asc_kd" and space.compare_without_kd and not board.empty:
            banner("References: each subset's best configuration without distillation (kd_lambda = 1)")
            run_references(request, constants, board)
        banner("Results")
        board = write_tables(request.run_dir, space.metric, space.mode)
        print_leaderboard(board, space.metric, [d.name for d in space.dimensions])
        print_comparison(request.run_dir, space.metric, space.mode)
        if space.system != "oskdft2":  # the DCASE rank score is an acoustic-scene figure
            print_summary(board)
            report_findings(request.run_dir, space.metric, space.mode, data_dir)
        for line in export_lines(export_best(request.run_dir, space.metric, space.mode), request.run_dir):
            print(line)
        if space.system != "oskdft2":  # the report's plots are the acoustic-scene ones
            print(f"Report: {write_report(request.run_dir, data_dir)}")
        check_completed(board, request.run_dir)
    finally:
        if owns_ray:
            ray.shutdown()


def report_findings(run_dir: Path, metric: str, mode: str, data_dir: Path) -> None:
    """teachers.csv, and the warnings a new user must read before the figures (students at chance, teachers
    weaker than the students trained without them), on the console as in the report."""
    from results.distillation import print_warnings, write_teachers

    written = write_teachers(run_dir)
    if written is not None:
        print(f"Teachers' test figures: {written}")
    print_warnings(run_dir, metric, mode, len(load_prepared(data_dir).classes))


class RunFailed(RuntimeError):
    """The search ran but no trial completed; the leaderboard and report say what happened to each."""


def check_completed(board, run_dir: Path) -> None:
    """Raise RunFailed, in one line, when no trial ran all its epochs."""
    if not board.empty and (board["status"] == "complete").any():
        return
    counts = ", ".join(f"{n} {status}" for status, n in board["status"].value_counts().items()) or "none"
    errors = [e for e in board.get("error", []) if isinstance(e, str) and e.strip()]
    reason = f"; the first error: {errors[0].strip().splitlines()[-1][:150]}" if errors else ""
    raise RunFailed(f"no trial completed (trials: {counts}){reason}; see {run_dir / 'leaderboard.csv'}")


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
    print and return how many student trials run at once."""
    res = space.resources
    requests = {"student": (res.cpus_per_trial, res.gpus_per_trial)}
    if space.system in ("asc_kd", "asc_teacher", "oskdft2"):
        requests["teacher"] = (res.teacher_cpus_per_trial, res.teacher_gpus_per_trial)
    for kind, (cpus, gpus) in requests.items():
        if trials_at_once(nodes, cpus, gpus) == 0:
            biggest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
            raise SpaceError(f"a {kind} trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but the largest node has "
                             f"{biggest[0]:g} CPUs and {biggest[1]:g} GPUs; lower resources.* or --cpus/--gpus-per-trial")
    at_once = trials_at_once(nodes, res.cpus_per_trial, res.gpus_per_trial)
    if space.max_concurrent:
        at_once = min(at_once, space.max_concurrent)
    total_cpus, total_gpus = (sum(n.get(kind, 0) for n in nodes) for kind in ("CPU", "GPU"))
    print(f"Resources: {total_cpus:g} CPUs, {total_gpus:g} GPUs on {len(nodes)} node(s): up to {at_once} student "
          f"trials at once ({res.cpus_per_trial:g} CPUs, {res.gpus_per_trial:g} GPUs each)", flush=True)  # fmt: skip
    if res.gpus_per_trial > 0:
        print(f"A GPU trial's {res.cpus_per_trial:g} CPUs run its training loop and the thread that gathers its next "
              "batches into pinned memory (resources.cpus_per_trial sets them)", flush=True)  # fmt: skip
    return at_once


def check_shared_storage(storage: Path, nodes: list[dict]) -> None:
    """On several nodes, every node must see the storage (trials write checkpoints, caches are read there)."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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


def _uses_teacher(space: Space) -> bool:
    fixed = space.settings.kd_lambda < 1.0
    searched = [d for d in space.dimensions if d.name == "kd_lambda"]
    if not searched:
        return fixed
    d = searched[0]
    return (min(d.choices) if d.choices else d.low) < 1.0
