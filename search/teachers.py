"""Make sure every subset has teacher logits in the cache, training what is missing as Ray trials.

Where a subset's teacher comes from, in order of the `teacher` section's settings:
- `logits: FILE` (`{subset}` replaced by the subset): the seed systems' [meta.csv rows, classes]
  tensor or this project's filename-keyed file; no teacher is trained.
- otherwise teachers (PaSST, or the wide CNN), trained in stages, each cached under `<storage>/cache/teachers/`:
  1. initial weights: AudioSet weights from `weights` (standard PaSST), or for `passt_tiny` and `cnn` with
     `pretrain: synthetic` a pretraining on the synthetic AudioSet stand-in (trainables/asc/synthetic.py);
  2. `cochlscene: ROOT`: SIT's first stage, training on CochlScene's 13 scenes;
  3. per subset and ensemble member (seeds seed … seed+ensemble−1): fine-tuning on the subset only,
     the backbone at lr · backbone_lr_ratio (< 1: SIT's slow learner; 1: Seq-FT);
  4. members averaged into one teacher when `ensemble` > 1.

Each system's teacher preparation (`System.context`, search/system.py) ends here too: it makes what the
system's trials distil from and returns the system's `TrialContext` they all get.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from ray import tune

from results.distillation import write_teachers
from results.leaderboard import device_columns
from search.console import banner
from search.preflight import cached_dataset
from search.progress import TrialName
from search.request import RunRequest
from search.teacher_checks import check_teacher_strength, external_logits_paths, read_external_logits
from search.trial_context import SpeakerContext, StudentContext, TeacherJob, TeacherSearchContext, TrialContext
from search.trials import save_state, save_subset_logits, ssl_teacher_trial, teacher_trial
from search.tuning import fit_experiment
from trainables.asc.cochlscene import prepare_cochlscene
from trainables.asc.data import load_prepared
from trainables.asc.evaluation import logits_metrics
from trainables.asc.logits_file import LogitsMismatch, aligned_logits, check_logits_cache, read_logits, save_logits
from trainables.asc.synthetic import PretrainingConfig, generate_pretraining
from trainables.asc.tau22 import prepare_at_rate, tau22_root_of
from trainables.asc.teacher import TeacherConfig
from trainables.atomic import set_aside
from trainables.settings import cache_key_fields
from trainables.speaker.data import load_prepared as load_speakers
from trainables.speaker.teacher import build_teacher, load_ssl_state_dict
from trainables.tensor_files import UnreadableFile, load_tensors

C = TypeVar("C", bound=TrialContext)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _init_part(teacher: TeacherConfig) -> dict:
    """The settings a teacher's weights depend on (their fields say `cache_key=True`); the rest of a key adds the
    stages and the epochs. json.dumps sorts the names, so the order of the fields does not change a key."""
    return cache_key_fields(teacher)


class TeacherPlan:
    """The cache paths of every stage of a run's teachers, and the Ray experiments that fill them."""

    def __init__(self, request: RunRequest, data_dir: Path, teacher: TeacherConfig | None = None, label: str = ""):
        self.request = request
        self.label = label  # names this plan's experiments apart from another's in the same run (an arm's)
        self.data_dir = data_dir
        self.data = load_prepared(data_dir)
        self.teacher: TeacherConfig = teacher or request.space.teacher
        self.cache = request.cache_dir / "teachers"

    @functools.cached_property
    def stages(self) -> list[tuple[str, Path, Path]]:
        """(name, prepared dataset, produced state dict) of the stages before fine-tuning, in order."""
        stages = []
        parts: list = [_init_part(self.teacher)]
        if self.teacher.pretrain == "synthetic":
            config = PretrainingConfig(seed=self.teacher.seed)
            directory = self.request.cache_dir / "datasets" / f"pretraining-{config.fingerprint()}"
            parts += ["pretrain", config.fingerprint(), self.teacher.pretrain_epochs]
            stages.append(("pretrain", directory, self.cache / f"pretrained-{_key(*parts)}.pt"))
        if self.teacher.cochlscene:
            directory = prepare_cochlscene(Path(self.teacher.cochlscene), self.request.cache_dir / "datasets",
                                           sample_rate=self.teacher.sample_rate)  # fmt: skip
            parts += ["sit", load_prepared(directory).fingerprint, self.teacher.sit_epochs, self.teacher.sit_lr,
                      self.teacher.sit_batch_size]  # fmt: skip
            stages.append(("sit", directory, self.cache / f"sit-{_key(*parts)}.pt"))
        return stages

    def member_path(self, subset: int, seed: int) -> Path:
        teacher = dataclasses.replace(self.teacher, seed=seed)
        stages = [path.name for _, _, path in self.stages]  # names are keys themselves; the storage may move
        budget = [teacher.train_steps] if teacher.train_steps else []  # keys of teachers without a budget stay as they were
        key = _key(self.data.fingerprint, subset, _init_part(teacher), teacher.epochs, teacher.backbone_lr_ratio, stages, *budget)
        return self.cache / f"{key}.pt"

    def subset_path(self, subset: int) -> Path:
        """The logits file the students of `subset` read."""
        if self.teacher.logits:
            sources = [hashlib.sha256(path.read_bytes()).hexdigest() for path in external_logits_paths(self.teacher, subset)]
            return self.cache / f"file-{_key(self.data.fingerprint, *sources)}.pt"
        seeds = range(self.teacher.seed, self.teacher.seed + self.teacher.ensemble)
        if self.teacher.ensemble == 1:
            return self.member_path(subset, self.teacher.seed)
        return self.cache / f"ensemble-{_key([self.member_path(subset, s).name for s in seeds])}.pt"

    def ensure(self, subsets: tuple[int, ...]) -> dict[int, Path]:
        """Fill the cache for every subset (training only what is missing) and return the students' files."""
        paths = {s: self.subset_path(s) for s in subsets}
        missing = [s for s, p in paths.items() if not self._cached_logits(p, s)]
        for subset, path in paths.items():
            print(f"Teacher for subset {subset}%: {'to make' if subset in missing else 'cached'} ({path})", flush=True)
        if not missing:
            return paths
        if self.teacher.logits:
            for subset in missing:
                logits = read_external_logits(self.teacher, self.data, subset)
                save_logits(paths[subset], self.data.filenames, logits, logits_metrics(logits, self.data, subset))
            return paths
        init = self.run_init_stages()
        seeds = list(range(self.teacher.seed, self.teacher.seed + self.teacher.ensemble))
        members = {(s, seed): self.member_path(s, seed) for s in missing for seed in seeds}
        todo = {key: path for key, path in members.items() if not self._cached_logits(path, key[0])}
        if todo:
            self._fine_tune(todo, init)
        if self.teacher.ensemble > 1:
            for subset in missing:
                rows = self.data.teacher_rows(subset)
                logits = np.mean([aligned_logits(members[(subset, seed)], self.data, rows)[rows] for seed in seeds], axis=0)
                save_subset_logits(paths[subset], self.data, subset, logits)
        return paths

    def _cached_logits(self, path: Path, subset: int) -> bool:
        """Whether `path` holds whole, finite logits for every clip `subset` needs; a damaged file is set aside to be
        made again."""
        if not path.exists():
            return False
        try:
            check_logits_cache(path, self.data, self.data.teacher_rows(subset))
            return True
        except LogitsMismatch as err:
            set_aside(path, str(err).removeprefix(f"{path}: "))
            return False

    def run_init_stages(self) -> Path | None:
        """Train the stages before fine-tuning that are not cached; the state dict fine-tuning starts from."""
        init: Path | None = None
        for name, directory, state_path in self.stages:
            if name == "pretrain":
                config = PretrainingConfig(seed=self.teacher.seed)
                cached_dataset(directory, config, generate_pretraining, load_prepared, "the synthetic AudioSet stand-in")
            if not cached_state(state_path):
                job = teacher_job(self.request, directory, init_path=init, state_path=state_path)
                experiment = f"teacher_{name}" + (f"_{self.label}" if self.label else "")
                title, epochs = {"pretrain": ("teacher pretraining", self.teacher.pretrain_epochs),
                                 "sit": ("teacher CochlScene stage", self.teacher.sit_epochs)}[name]
                self._fit(experiment, {"stage": name, "subset": 100, "seed": self.teacher.seed}, job, title,
                          functools.partial(stage_name, epochs=epochs))  # fmt: skip
                if not state_path.is_file():
                    raise RuntimeError(f"the teacher's {name} stage failed; see {self.request.run_dir / experiment}")
            init = state_path
        return init

    def _fine_tune(self, todo: dict[tuple[int, int], Path], init: Path | None) -> None:
        # Every seed of every subset that misses one (a member cached alone, after a crash, is made again). The
        # longest trainings first, so the short ones fill the gaps.
        subsets = sorted({subset for subset, _ in todo}, reverse=True)
        seeds = sorted({seed for _, seed in todo})
        paths = {(subset, seed): self.member_path(subset, seed) for subset in subsets for seed in seeds}
        config = {"stage": "finetune", "subset": tune.grid_search(subsets), "seed": tune.grid_search(seeds)}
        self._fit("teachers", config, teacher_job(self.request, self.data_dir, init_path=init, logits_paths=paths),
                  "teacher", functools.partial(member_name, epochs=self.teacher.epochs, ensemble=self.teacher.ensemble))
        failed = [key for key, path in todo.items() if not path.is_file()]
        if failed:
            raise RuntimeError(f"teacher training failed for (subset, seed) {failed}; see {self.request.run_dir / 'teachers'}")

    def _fit(self, name: str, config: dict, job: TeacherJob, title: str, name_of: Callable[[dict], TrialName]) -> None:
        fit_teachers(self.request, name, teacher_trial, job, {"teacher": dataclasses.asdict(self.teacher), **config},
                     title, name_of)  # fmt: skip


def stage_name(config: dict, epochs: int) -> TrialName:
    """A teacher stage before fine-tuning (pretraining, CochlScene): one trial, named by its stage."""
    return TrialName(config["stage"], "", epochs)


def member_name(config: dict, epochs: int, ensemble: int) -> TrialName:
    """One member of a subset's teachers: its subset, and its seed where the subset has several."""
    who = f"subset {config['subset']}%" + (f" seed {config['seed']}" if ensemble > 1 else "")
    return TrialName(f"subset{config['subset']}_seed{config['seed']}", who, epochs)


def _ssl_name(config: dict, epochs: int) -> TrialName:
    return TrialName("ssl", "", epochs)


def teacher_job(request: RunRequest, data_dir: Path, **given) -> TeacherJob:
    """A teacher experiment's constants, with the space's per-teacher resources."""
    res = request.space.resources
    return TeacherJob(data_dir=data_dir, cpus=res.teacher_cpus_per_trial, gpus=res.teacher_gpus_per_trial, **given)


def fit_teachers(request: RunRequest, name: str, trial, job: TeacherJob, param_space: dict, title: str,
                 name_of: Callable[[dict], TrialName]) -> None:  # fmt: skip
    """Run `trial` on every point of `param_space` as the experiment `name`, `job` its constants and resources."""
    trainable = tune.with_resources(tune.with_parameters(trial, job=job), {"cpu": job.cpus, "gpu": job.gpus})
    fit_experiment(request, name, trainable, param_space, title, name_of)


def cached_state(path: Path) -> bool:
    """Whether `path` holds a whole state dict of finite tensors; a damaged file is set aside to be made again."""
    if not path.exists():
        return False
    try:
        state = load_tensors(path)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UnreadableFile("not a state dict of tensors")
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise UnreadableFile(f"NaN or infinite weights in {bad[0]}")
        return True
    except UnreadableFile as err:
        set_aside(path, str(err).removeprefix(f"{path}: "))
        return False


def print_teachers(paths: dict[int, Path]) -> None:
    """The sanity check the seeds do by hand: each teacher's device-wise accuracy on the test split."""

    for subset, path in sorted(paths.items()):
        metrics = read_logits(path)["metrics"]
        devices = device_columns(metrics, prefix="test_acc_")
        cells = "  ".join(f"{d}={metrics[f'test_acc_{d}']:.3f}" for d in devices)
        print(f"Teacher {subset}%: test acc={metrics['test_acc']:.3f} unseen={metrics['test_acc_unseen']:.3f}  {cells}")


def ensure_ssl_teacher(request: RunRequest, data_dir: Path) -> Path:
    """OS-KDFT2's frozen teacher as a cached state dict: the given weights, or trained once on the data."""
    space = request.space
    ssl, training = space.settings.teacher, space.sections["teacher_training"]
    cache = request.cache_dir / "teachers"
    if training.weights:
        source = Path(training.weights)
        path = cache / f"ssl-file-{_key(str(source), source.stat().st_mtime_ns, dataclasses.asdict(ssl))}.pt"
        if not cached_state(path):
            state = load_ssl_state_dict(source)
            build_teacher(ssl, state)  # refuse weights that do not fit the declared architecture, here
            save_state(state, path)
        print(f"SSL teacher: {source} ({path})", flush=True)
        return path
    fingerprint = load_speakers(data_dir).fingerprint
    path = cache / f"ssl-{_key(fingerprint, dataclasses.asdict(ssl), dataclasses.asdict(training))}.pt"
    cached = cached_state(path)
    print(f"SSL teacher: {'cached' if cached else 'to train'} ({path})", flush=True)
    if not cached:
        fit_teachers(request, "teacher_ssl", ssl_teacher_trial, teacher_job(request, data_dir, state_path=path),
                     {"ssl": dataclasses.asdict(ssl), "training": dataclasses.asdict(training), "subset": 0},
                     "SSL teacher", functools.partial(_ssl_name, epochs=training.epochs))
        if not path.is_file():
            raise RuntimeError(f"the SSL teacher's training failed; see {request.run_dir / 'teacher_ssl'}")
    return path


def run_context(request: RunRequest, kind: type[C], **given) -> C:
    """The run's context of type `kind` (the system's TrialContext): what every trial gets, and `given`."""
    res = request.space.resources
    held_out = ("test", "full_test") if request.space.kind == "replication" else ("test",)
    given = {"settings": request.space.settings, **given}
    return kind(data_dir=request.data, cpus=res.cpus_per_trial, gpus=res.gpus_per_trial, held_out=held_out,
                metric=request.space.metric, arms=request.space.arms, **given)  # fmt: skip


def teacher_dataset(request: RunRequest, teacher: TeacherConfig) -> Path:
    """The prepared dataset a run's teachers read: the run's own, unless they hear another rate than the run's TAU22
    was read at (NTU's PaSST teachers: 44.1 kHz). Then TAU22 is read again at theirs, split clip for clip as the
    run's, so they hear the full band; without its root (a run moved to another machine) they hear the run's clips,
    resampled on the device, and are told so."""
    data = load_prepared(request.data)
    if teacher.sample_rate == data.sample_rate or not data.source.startswith("tau22:"):
        return request.data
    root = tau22_root_of(data)
    if root is None:
        print(f"teachers: {data.source.removeprefix('tau22:')} is not here: they hear the {data.sample_rate / 1000:g} "
              f"kHz clips resampled to {teacher.sample_rate / 1000:g} kHz", flush=True)  # fmt: skip
        return request.data
    return prepare_at_rate(data, root, request.cache_dir / "datasets", teacher.sample_rate)


def distillation_teachers(request: RunRequest) -> StudentContext:
    """asc_kd: every subset's teacher logits in the cache (trained where missing), when some trial distils."""
    teacher_logits = {}
    if request.space.uses_teacher:
        banner("Teachers")
        plan = TeacherPlan(request, teacher_dataset(request, request.space.teacher))
        teacher_logits = plan.ensure(request.space.subsets)
        print_teachers(teacher_logits)
        print(f"Teachers' test figures: {write_teachers(request.run_dir, teacher_logits)}", flush=True)
        check_teacher_strength(request.space.teacher, {s: read_logits(p)["metrics"] for s, p in teacher_logits.items()},
                               len(load_prepared(request.data).classes))  # fmt: skip
    return run_context(request, StudentContext, teacher_logits=teacher_logits, budget=request.space.budget)


def teacher_start(request: RunRequest) -> TeacherSearchContext:
    """asc_teacher: the stages before fine-tuning (pretraining, CochlScene), trained where missing; each arm of
    the space (search.arm) starts from its own, since an arm's rates hold in those stages too (NTU's SIT learns
    CochlScene slowly as well)."""
    settings = request.space.settings
    init = TeacherPlan(request, request.data, settings).run_init_stages() if not request.space.arms else None
    arm_inits = {arm: TeacherPlan(request, request.data, dataclasses.replace(settings, **values), arm).run_init_stages()
                 for arm, values in request.space.arms.items()}  # fmt: skip
    return run_context(request, TeacherSearchContext, init_path=init, arm_inits=arm_inits)


def ssl_teacher(request: RunRequest) -> SpeakerContext:
    """oskdft2: the frozen SSL teacher, given or trained once."""
    return run_context(request, SpeakerContext, teacher_state=ensure_ssl_teacher(request, request.data))
