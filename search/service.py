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

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from search.space import Space, SpaceError, space_to_yaml
from trainables.asc_data import is_prepared
from trainables.synthetic_asc import generate

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunRequest:
    space: Space
    storage: Path  # absolute
    name: str
    data: Path | None  # a prepared dataset; None: the embedded synthetic one
    address: str | None  # a running Ray cluster; None: start Ray here
    resume: bool

    @property
    def run_dir(self) -> Path:
        return self.storage / self.name

    @property
    def cache_dir(self) -> Path:
        return self.storage / "cache"


def check_run_dir(request: RunRequest) -> None:
    """Refuse to overwrite a finished or started run, and a resume whose settings changed (before Ray starts)."""
    record = request.run_dir / "space.yaml"
    if request.resume:
        if not record.is_file():
            raise SpaceError(f"--resume: {request.run_dir} holds no run to resume")
        if record.read_text() != space_to_yaml(request.space):
            raise SpaceError(f"--resume: the settings differ from those {request.run_dir} was started with "
                             f"(see {record}); resume with the same space and flags, or use a new --name")  # fmt: skip
    elif record.exists():
        raise SpaceError(f"{request.run_dir} already holds a run; pass --resume to continue it or choose another --name")


def prepare_dataset(request: RunRequest) -> Path:
    """The prepared dataset the trials read: --data as given, or the embedded one, generated once and cached."""
    if request.data is not None:
        return request.data
    directory = request.cache_dir / "datasets" / f"synthetic-{request.space.data.fingerprint()}"
    if not is_prepared(directory):
        print(f"Generating the embedded synthetic dataset into {directory} …", flush=True)
        generate(request.space.data, directory)
    return directory


def teacher_cache_path(cache_dir: Path, data_fingerprint: str, subset: int, space: Space) -> Path:
    key = json.dumps({"data": data_fingerprint, "subset": subset, "teacher": dataclasses.asdict(space.teacher)},
                     sort_keys=True)  # fmt: skip
    return cache_dir / "teachers" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


def run(request: RunRequest) -> None:
    """Everything after validation; starts (or joins) Ray."""
    import ray

    from results.export import export_best
    from results.leaderboard import build_leaderboard, print_comparison, print_leaderboard, write_tables
    from search.tuning import run_references, run_search, run_teachers
    from trainables.asc_data import load_prepared

    space = request.space
    request.run_dir.mkdir(parents=True, exist_ok=True)
    (request.run_dir / "space.yaml").write_text(space_to_yaml(space))
    print(f"Run directory: {request.run_dir}")
    print(f"Watch it with: tensorboard --logdir {request.run_dir}", flush=True)

    data_dir = prepare_dataset(request)
    fingerprint = load_prepared(data_dir).fingerprint
    # Workers started here inherit this, so they import the project even where it is not installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    owns_ray = not ray.is_initialized()  # a test session (or a notebook) may have started Ray already
    if owns_ray and request.address:
        ray.init(address=request.address, log_to_driver=False)
    elif owns_ray:
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    try:
        needs_teacher = [s for s in space.subsets if _uses_teacher(space)]
        teacher_paths = {s: teacher_cache_path(request.cache_dir, fingerprint, s, space) for s in needs_teacher}
        missing = {s: p for s, p in teacher_paths.items() if not p.is_file()}
        for subset, path in teacher_paths.items():
            print(f"Teacher for subset {subset}%: {'cached' if subset not in missing else 'to train'} ({path})")
        if missing:
            run_teachers(request, data_dir, missing)
        _print_teachers(teacher_paths)
        run_search(request, data_dir, teacher_paths)
        board = build_leaderboard(request.run_dir, space.metric, space.mode)
        if space.compare_without_kd and not board.empty:
            run_references(request, data_dir, board)
        board = write_tables(request.run_dir, space.metric, space.mode)
        print_leaderboard(board, space.metric, [d.name for d in space.dimensions])
        print_comparison(request.run_dir, space.metric, space.mode)
        for path in export_best(request.run_dir, space.metric, space.mode):
            print(f"Exported {path}")
    finally:
        if owns_ray:
            ray.shutdown()


def _uses_teacher(space: Space) -> bool:
    fixed = space.student.kd_lambda < 1.0
    searched = [d for d in space.dimensions if d.name == "kd_lambda"]
    if not searched:
        return fixed
    d = searched[0]
    return (min(d.choices) if d.choices else d.low) < 1.0


def _print_teachers(paths: dict[int, Path]) -> None:
    from results.leaderboard import device_columns
    from trainables.logits_file import read_logits

    for subset, path in sorted(paths.items()):
        metrics = read_logits(path)["metrics"]
        devices = device_columns(metrics, prefix="test_acc_")
        cells = "  ".join(f"{d}={metrics[f'test_acc_{d}']:.3f}" for d in devices)
        print(f"Teacher {subset}%: test acc={metrics['test_acc']:.3f} unseen={metrics['test_acc_unseen']:.3f}  {cells}")
