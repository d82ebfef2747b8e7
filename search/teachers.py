"""Make sure every subset has teacher logits in the cache, training what is missing as Ray trials.

Where a subset's teacher comes from, in order of the `teacher` section's settings:
- `logits: FILE` (`{subset}` replaced by the subset): the seed systems' [meta.csv rows, classes]
  tensor or this project's filename-keyed file; no teacher is trained.
- otherwise PaSST teachers, trained in stages, each stage cached under `<storage>/cache/teachers/`:
  1. initial weights: AudioSet weights from `weights` (standard PaSST), or for `passt_tiny` with
     `pretrain: synthetic` a pretraining on the synthetic AudioSet stand-in (trainables/synthetic_asc.py);
  2. `cochlscene: ROOT`: SIT's first stage, training on CochlScene's 13 scenes;
  3. per subset and ensemble member (seeds seed … seed+ensemble−1): fine-tuning on the subset only,
     the backbone at lr · backbone_lr_ratio (< 1: SIT's slow learner; 1: Seq-FT);
  4. members averaged into one teacher when `ensemble` > 1.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from ray import tune

from search.service import RunRequest, cached_dataset
from search.space import Space, SpaceError
from trainables.asc_data import AscData, load_prepared
from trainables.atomic import set_aside
from trainables.cochlscene import prepare_cochlscene
from trainables.logits_file import LogitsMismatch, average_logits, check_logits_cache, read_logits, save_logits
from trainables.tensor_files import UnreadableFile, load_tensors
from trainables.loop import logits_metrics
from trainables.synthetic_asc import PretrainingConfig, generate_pretraining
from trainables.teacher import STANDARD_ARCH, TINY_ARCH, TeacherConfig

# Settings that change what a stage produces; the others (logits, ensemble, …) do not enter its key.
_INIT_KEYS = ("arch", "weights", "embed_dim", "depth", "num_heads", "drop_path_rate", "s_patchout_t", "s_patchout_f",
              "freqm", "timem", "batch_size", "lr", "head_lr", "weight_decay", "schedule", "warmup_fraction", "warmup_epochs",
              "rampdown_start", "rampdown_epochs", "lr_floor", "mixstyle_p", "mixstyle_alpha", "roll_sec", "dir_path",
              "dir_prob", "sample_rate", "precision", "seed")  # fmt: skip


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _init_part(teacher: TeacherConfig) -> dict:
    return {k: getattr(teacher, k) for k in _INIT_KEYS}


def external_logits_paths(teacher: TeacherConfig, subset: int) -> list[Path]:
    return [Path(path.replace("{subset}", str(subset))) for path in teacher.logits]


def read_external_logits(teacher: TeacherConfig, data: AscData, subset: int) -> np.ndarray:
    """`teacher.logits` of one subset: one file's logits, or the mean of several (LogitsMismatch on a misfit)."""
    from trainables.logits_file import LogitsMismatch

    paths = external_logits_paths(teacher, subset)
    for path in paths:
        if not path.is_file():
            raise LogitsMismatch(f"teacher.logits: no file at {path}")
    return average_logits(paths, data)


def check_external_logits(teacher: TeacherConfig, data: AscData, subsets: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Read and check `teacher.logits` for every subset before anything trains (LogitsMismatch on a misfit)."""
    return {subset: read_external_logits(teacher, data, subset) for subset in subsets}


def check_teacher_is_trained(space: Space, data_dir: Path) -> None:
    """On real data, refuse (SpaceError) a teacher that would start from random weights: a tiny PaSST, or PaSST-S
    without AudioSet weights. Its logits would teach the student little, silently; `allow_untrained` says it is meant."""
    from search.service import _uses_teacher

    if json.loads((data_dir / "dataset.json").read_text()).get("source", "").startswith("synthetic"):
        return
    if space.system == "asc_teacher":
        teacher, where = space.settings, ""
    elif space.system == "asc_kd" and _uses_teacher(space) and not space.teacher.logits:
        teacher, where = space.teacher, "teacher."
    else:
        return
    if teacher.allow_untrained or (teacher.arch == STANDARD_ARCH and teacher.weights):
        return
    start = f"a {TINY_ARCH} from random weights" if teacher.arch == TINY_ARCH else f"{STANDARD_ARCH} without weights"
    raise SpaceError(f"{where}arch: on real data the teacher would be {start}; give {where}weights (the AudioSet "
                     f"checkpoint) with arch {STANDARD_ARCH}, distil from files with teacher.logits, or set "
                     f"{where}allow_untrained: true")  # fmt: skip


class TeacherPlan:
    """The cache paths of every stage of a run's teachers, and the Ray experiments that fill them."""

    def __init__(self, request: RunRequest, data_dir: Path, teacher: TeacherConfig | None = None):
        self.request = request
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
        missing = [s for s, p in paths.items() if not self._cached_logits(p)]
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
        todo = {key: path for key, path in members.items() if not self._cached_logits(path)}
        if todo:
            self._fine_tune(todo, init)
        if self.teacher.ensemble > 1:
            for subset in missing:
                stacked = np.stack([read_logits(members[(subset, seed)])["logits"].numpy() for seed in seeds])
                logits = stacked.mean(axis=0)
                save_logits(paths[subset], self.data.filenames, logits, logits_metrics(logits, self.data, subset))
        return paths

    def _cached_logits(self, path: Path) -> bool:
        """Whether `path` holds whole, finite logits for every clip; a damaged file is set aside to be made again."""
        if not path.exists():
            return False
        try:
            check_logits_cache(path, self.data)
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
                config = {"data_dir": str(directory), "subset": 100, "stage": name, "state_path": str(state_path),
                          "init_path": None if init is None else str(init)}  # fmt: skip
                self._fit(f"teacher_{name}", config, grid=None)
                if not state_path.is_file():
                    raise RuntimeError(f"the teacher's {name} stage failed; see {self.request.run_dir / f'teacher_{name}'}")
            init = state_path
        return init

    def _fine_tune(self, todo: dict[tuple[int, int], Path], init: Path | None) -> None:
        # The longest trainings first, so the short ones fill the gaps.
        order = sorted(todo, key=lambda key: (-key[0], key[1]))
        config = {"data_dir": str(self.data_dir), "init_path": None if init is None else str(init),
                  "member": tune.grid_search([f"{s}:{seed}" for s, seed in order]),
                  "subset": tune.sample_from(lambda c: int(c["member"].split(":")[0])),
                  "seed": tune.sample_from(lambda c: int(c["member"].split(":")[1])),
                  "logits_path": tune.sample_from(lambda c: str(todo[tuple(map(int, c["member"].split(":")))]))}  # fmt: skip
        self._fit("teachers", config, grid=True)
        failed = [key for key, path in todo.items() if not path.is_file()]
        if failed:
            raise RuntimeError(f"teacher training failed for (subset, seed) {failed}; see {self.request.run_dir / 'teachers'}")

    def _fit(self, name: str, config: dict, grid: bool | None) -> None:
        from search.trials import teacher_trial
        from search.tuning import fit_experiment

        res = self.request.space.resources
        trainable = tune.with_resources(teacher_trial, {"cpu": res.teacher_cpus_per_trial, "gpu": res.teacher_gpus_per_trial})
        param_space = {"teacher": dataclasses.asdict(self.teacher), "cpus_per_trial": res.teacher_cpus_per_trial,
                       "gpus_per_trial": res.teacher_gpus_per_trial, **config}  # fmt: skip
        fit_experiment(self.request, name, trainable, param_space)


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
    from results.leaderboard import device_columns

    for subset, path in sorted(paths.items()):
        metrics = read_logits(path)["metrics"]
        devices = device_columns(metrics, prefix="test_acc_")
        cells = "  ".join(f"{d}={metrics[f'test_acc_{d}']:.3f}" for d in devices)
        print(f"Teacher {subset}%: test acc={metrics['test_acc']:.3f} unseen={metrics['test_acc_unseen']:.3f}  {cells}")


def ensure_ssl_teacher(request: RunRequest, data_dir: Path) -> Path:
    """OS-KDFT2's frozen teacher as a cached state dict: the given weights, or trained once on the data."""
    from search.trials import ssl_teacher_trial
    from search.tuning import fit_experiment
    from trainables.speaker.data import load_prepared as load_speakers
    from trainables.speaker.models import build_teacher, load_ssl_state_dict

    space = request.space
    ssl, training = space.settings.teacher, space.sections["teacher_training"]
    cache = request.cache_dir / "teachers"
    if training.weights:
        source = Path(training.weights)
        path = cache / f"ssl-file-{_key(str(source), source.stat().st_mtime_ns, dataclasses.asdict(ssl))}.pt"
        if not cached_state(path):
            state = load_ssl_state_dict(source)
            build_teacher(ssl, state)  # refuse weights that do not fit the declared architecture, here
            from search.trials import _save_state

            _save_state(state, path)
        print(f"SSL teacher: {source} ({path})", flush=True)
        return path
    fingerprint = load_speakers(data_dir).fingerprint
    path = cache / f"ssl-{_key(fingerprint, dataclasses.asdict(ssl), dataclasses.asdict(training))}.pt"
    cached = cached_state(path)
    print(f"SSL teacher: {'cached' if cached else 'to train'} ({path})", flush=True)
    if not cached:
        res = space.resources
        trainable = tune.with_resources(ssl_teacher_trial, {"cpu": res.teacher_cpus_per_trial, "gpu": res.teacher_gpus_per_trial})
        fit_experiment(request, "teacher_ssl", trainable, {
            "data_dir": str(data_dir), "ssl": dataclasses.asdict(ssl), "training": dataclasses.asdict(training),
            "state_path": str(path), "subset": 0, "cpus_per_trial": res.teacher_cpus_per_trial,
            "gpus_per_trial": res.teacher_gpus_per_trial})  # fmt: skip
        if not path.is_file():
            raise RuntimeError(f"the SSL teacher's training failed; see {request.run_dir / 'teacher_ssl'}")
    return path
