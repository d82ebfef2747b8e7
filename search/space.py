"""A space file, validated once into typed settings.

A space file is YAML data (loaded with yaml.safe_load: nothing in it is evaluated as code):

    system: asc_kd
    metric: acc            # ranking metric; see trainables/metrics.py
    mode: max
    samples: 4             # trials per subset
    search:                # searched by Optuna TPE, separately for every subset
      subset: [5, 10, 25, 50, 100]
      temperature: {low: 1.0, high: 5.0}
      kd_lambda: {low: 0.0, high: 0.5}
      lr: {low: 0.001, high: 0.02, log: true}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0}
    teacher: {...}         # TeacherConfig fields
    data: {...}            # SyntheticConfig fields (the embedded dataset)
    epochs: 6              # every other top-level key: a fixed setting of the system's trial

`system` picks what a trial trains: `asc_kd` (a KD student; fixed settings are StudentConfig's) or
`asc_teacher` (a PaSST teacher fine-tuning; fixed settings are TeacherConfig's). Every error is a
`SpaceError` whose message names the offending key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainables.asc_data import SUBSETS
from trainables.student import Budget
from trainables.student_training import StudentConfig
from trainables.speaker.models import SslConfig
from trainables.speaker.synthetic import SyntheticSpeakerConfig
from trainables.speaker.training import OskdftConfig, TeacherTrainConfig
from trainables.synthetic_asc import SyntheticConfig
from trainables.precision import PRECISIONS
from trainables.teacher import ARCHS, SCHEDULES, TINY_ARCH, TeacherConfig

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"
ASC_METRIC = re.compile(r"^(acc|acc_seen|acc_unseen|acc_sim_seen|macro_acc|acc_[a-z0-9]+)$")
SV_METRIC = re.compile(r"^(eer|min_dcf|min_dcf_p05)$")


class SpaceError(ValueError):
    """A space file or override that cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a float or int range (optionally log-scaled) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    integer: bool = False


@dataclass(frozen=True)
class SchedulerSettings:
    type: str = "asha"  # asha (early stopping) or fifo (every trial runs all epochs)
    grace_period: int = 1  # epochs every trial gets before it can be stopped
    reduction_factor: int = 2  # ASHA keeps 1/reduction_factor of the trials at each rung


@dataclass(frozen=True)
class ResourceSettings:
    cpus_per_trial: float = 1.0  # a GPU trial gets GPU_TRIAL_CPUS unless the space sets it
    gpus_per_trial: float = 0.0  # fractions pack several trials on one GPU
    teacher_cpus_per_trial: float = 1.0  # likewise
    teacher_gpus_per_trial: float = 0.0


# A GPU trial's data path: one core runs the loop, one gathers the next batches into pinned memory.
GPU_TRIAL_CPUS = 2.0


def _feed_gpus(resources: ResourceSettings, given: Any) -> ResourceSettings:
    """A GPU trial whose CPUs the space leaves open gets the ones its data path needs."""
    given = given if isinstance(given, dict) else {}
    changes = {f"{kind}cpus_per_trial": GPU_TRIAL_CPUS for kind in ("", "teacher_")
               if getattr(resources, f"{kind}gpus_per_trial") > 0 and f"{kind}cpus_per_trial" not in given}  # fmt: skip
    return dataclasses.replace(resources, **changes)


@dataclass(frozen=True)
class SystemSchema:
    """What a space of one system may say: its trials' settings type, its sections and its metrics."""

    settings: type  # dataclass of a trial's fixed settings: the space's other top-level keys
    sections: dict[str, type]  # named sections besides scheduler and resources
    metric: re.Pattern
    default_metric: str
    default_mode: str
    by_subset: bool  # trials are grouped, searched and ranked per training subset
    not_searchable: frozenset[str]  # settings that identify a trial rather than tune it


SYSTEMS: dict[str, SystemSchema] = {
    "asc_kd": SystemSchema(StudentConfig, {"teacher": TeacherConfig, "data": SyntheticConfig, "budget": Budget},
                           ASC_METRIC,
                           "acc", "max", True, frozenset({"subset", "seed", "eval_batch_size"})),
    "asc_teacher": SystemSchema(TeacherConfig, {"data": SyntheticConfig}, ASC_METRIC, "acc", "max", True,
                                frozenset({"seed", "eval_batch_size", "arch", "weights", "logits", "cochlscene"})),
    # OS-KDFT2: the `teacher` section is OskdftConfig's own teacher field (the SSL architecture).
    "oskdft2": SystemSchema(OskdftConfig, {"teacher": SslConfig, "teacher_training": TeacherTrainConfig,
                                           "data": SyntheticSpeakerConfig}, SV_METRIC, "eer", "min", False,
                            frozenset({"seed", "teacher", "init_layers", "target_layers"})),
}  # fmt: skip


@dataclass(frozen=True)
class Space:
    system: str
    metric: str
    mode: str
    samples: int
    subsets: tuple[int, ...]  # empty for systems not grouped by subset
    dimensions: tuple[Dimension, ...]
    scheduler: SchedulerSettings
    resources: ResourceSettings
    settings: Any  # the trial's fixed settings: SYSTEMS[system].settings
    sections: dict = field(default_factory=dict)  # name → settings of each of the system's sections
    max_concurrent: int = 0  # 0: as many as the resources allow
    compare_without_kd: bool = True  # retrain each subset's best configuration with kd_lambda = 1
    max_failures: int = 0  # retries of a trial whose worker died
    seed: int = 0  # seed of the Optuna sampler
    sampler: str = "tpe"  # tpe, random, or grid (every combination of the searched choices)
    confirm_top_k: int = 0  # the top k configurations of each subset are trained again …
    confirm_seeds: int = 3  # … with this many new seeds, and ranked by their mean
    source: dict = field(default_factory=dict, compare=False)  # the merged mapping, for the record

    @property
    def schema(self) -> SystemSchema:
        return SYSTEMS[self.system]

    @property
    def teacher(self) -> TeacherConfig:
        return self.sections["teacher"]

    @property
    def data(self):
        return self.sections["data"]

    @property
    def budget(self) -> Budget:
        return self.sections.get("budget", Budget())


_SCALAR_META = {"system": str, "metric": str, "mode": str, "samples": int, "max_concurrent": int,
                "compare_without_kd": bool, "max_failures": int, "seed": int, "confirm_top_k": int,
                "confirm_seeds": int, "sampler": str}  # fmt: skip
_COMMON_SECTIONS: dict[str, type] = {"scheduler": SchedulerSettings, "resources": ResourceSettings}


def _schema_of(raw: dict) -> SystemSchema:
    system = raw.get("system", "asc_kd")
    if system not in SYSTEMS:
        raise SpaceError(f"system: {shown(system)} is not known; expected one of {', '.join(SYSTEMS)}")
    return SYSTEMS[system]


def _sections_of(schema: SystemSchema) -> dict[str, type]:
    return {**_COMMON_SECTIONS, **schema.sections}


def _settings_fields(schema: SystemSchema) -> set[str]:
    """Top-level keys: the trial settings' fields, except those a section of the same name fills."""
    return {f.name for f in dataclasses.fields(schema.settings)} - set(schema.sections)


def resolve_path(name_or_path: str) -> Path:
    """A bare name (with or without .yaml) is looked up in spaces/; anything else is a path."""
    path = Path(name_or_path)
    if path.exists() or path.parent != Path("."):
        return path
    for candidate in (SPACES_DIR / name_or_path, SPACES_DIR / f"{name_or_path}.yaml"):
        if candidate.exists():
            return candidate
    return path


MAX_SPACE_BYTES = 1 << 20  # a space file is a page of settings; more is a mistake or an attack
MAX_SPACE_DEPTH = 16  # the deepest real space nests 3 levels (search → lr → low)


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load without aliases and with a nesting limit.

    Aliases are refused: nested ones make a few lines stand for billions of values, which any later walk
    over the value (a check, an error message) expands. Deep nesting would exhaust Python's stack."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            line = self.peek_event().start_mark.line + 1
            raise SpaceError(f"line {line}: YAML aliases (*name) are not allowed; write the value out")
        self.depth += 1
        try:
            if self.depth > MAX_SPACE_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise SpaceError(f"line {line}: nested deeper than {MAX_SPACE_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(text: str) -> Any:
    """YAML data (no code, no aliases, bounded depth); SpaceError or yaml.YAMLError on a bad text."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except SpaceError:
        raise
    except ValueError as err:  # e.g. an integer literal longer than Python converts
        raise SpaceError(f"a value that cannot be read ({str(err)[:80]})") from None
    finally:
        loader.dispose()


def read_space_file(name_or_path: str) -> dict:
    path = resolve_path(name_or_path)
    if not path.is_file():
        raise SpaceError(f"space file {shown(name_or_path)} not found (looked in . and {SPACES_DIR})")
    if path.stat().st_size > MAX_SPACE_BYTES:
        raise SpaceError(f"{path}: {path.stat().st_size} bytes; a space file may hold at most {MAX_SPACE_BYTES}")
    try:
        raw = load_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: a space file must be a mapping of keys to values")
    return raw


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set KEY=VALUE` (dotted keys for sections) to the raw mapping, in place."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise SpaceError(f"--set {shown(assignment)}: expected KEY=VALUE")
    parts = key.split(".")
    schema = _schema_of(raw)
    sections = _sections_of(schema)
    if len(parts) == 2 and parts[0] == "search":
        _override_search(raw, parts[1], text, schema)
        return
    if len(parts) == 1:
        names = _settings_fields(schema) | set(_SCALAR_META)
        if parts[0] not in names:
            raise SpaceError(f"--set {key}: unknown setting{_suggest(parts[0], names)}")
    elif len(parts) == 2 and parts[0] in sections:
        names = {f.name for f in dataclasses.fields(sections[parts[0]])}
        if parts[1] not in names:
            raise SpaceError(f"--set {key}: {parts[0]} has no setting {shown(parts[1])}{_suggest(parts[1], names)}")
    else:
        raise SpaceError(f"--set {key}: unknown setting (sections: {', '.join(sections)})")
    try:
        value = load_yaml(text) if text else None
    except yaml.YAMLError:
        value = text
    except SpaceError as err:
        raise SpaceError(f"--set {key}: {err}") from None
    target = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise SpaceError(f"--set {key}: {part} is not a section in the space file")
    target[parts[-1]] = value


def _override_search(raw: dict, name: str, text: str, schema: SystemSchema) -> None:
    """`--set search.NAME=VALUE`: a range or list replaces NAME's search; a plain value fixes NAME at it
    (NAME leaves `search:` and becomes a fixed setting), the way to fix a setting the space file searches."""
    if name not in _settings_fields(schema):
        raise SpaceError(f"--set search.{name}: unknown setting{_suggest(name, _settings_fields(schema))}")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    search = raw.setdefault("search", {})
    if not isinstance(search, dict):
        raise SpaceError("search: must map each searched setting to its range")
    if isinstance(value, (dict, list)):
        search[name] = value
    else:
        search.pop(name, None)
        raw[name] = value


def _refuse_searched_and_fixed(raw: dict, dimensions: tuple[Dimension, ...], schema: SystemSchema) -> None:
    """A setting both searched and fixed would silently lose its fixed value to the search: refuse it."""
    searched = [d.name for d in dimensions] + (["subset"] if schema.by_subset else [])
    for name in searched:
        if name in raw:
            value = str(raw[name])[:60]  # as the user would type it again
            how = f"--subsets {value}" if name == "subset" else f"--set search.{name}={value}"
            raise SpaceError(f"{name} is searched (search.{name}) and also fixed ({name}: {shown(raw[name])}, in the space "
                             f"file or by --set); a setting is one or the other. To fix it, remove {name} from search: "
                             f"in the space file, or fix it for this run with {how}")  # fmt: skip


def build_space(raw: dict) -> Space:
    """Validate the raw mapping into a `Space`; raise SpaceError naming the first problem."""
    raw = dict(raw)
    schema = _schema_of(raw)
    sections = _sections_of(schema)
    fields_ = _settings_fields(schema)
    known = set(_SCALAR_META) | set(sections) | {"search"} | fields_
    for key in raw:
        if key not in known:
            raise SpaceError(f"unknown key {shown(key)}{_suggest(str(key), known)}")
    meta = {k: _coerce(raw[k], t, k) for k, t in _SCALAR_META.items() if k in raw}
    metric, mode = meta.get("metric", schema.default_metric), meta.get("mode", schema.default_mode)
    if not schema.metric.match(metric):
        raise SpaceError(f"metric: {shown(metric)} is not a metric of {meta.get('system', 'asc_kd')}")
    if mode not in ("max", "min"):
        raise SpaceError(f"mode: {shown(mode)} must be max or min")
    if meta.get("samples", 1) < 1:
        raise SpaceError(f"samples: must be at least 1, got {shown(meta['samples'])}")
    if meta.get("max_concurrent", 0) < 0 or meta.get("max_failures", 0) < 0 or meta.get("confirm_top_k", 0) < 0:
        raise SpaceError("max_concurrent, max_failures and confirm_top_k must not be negative")
    if meta.get("confirm_seeds", 3) < 2:
        seeds = shown(meta["confirm_seeds"])
        raise SpaceError(f"confirm_seeds: at least 2 seeds give a mean and a spread, got {seeds}")
    built = {name: _absolute(_build_dataclass(cls, raw.get(name, {}), name)) for name, cls in sections.items()}
    built["resources"] = _feed_gpus(built["resources"], raw.get("resources"))
    _check_sections(built)
    fills = {name: built[name] for name in schema.sections if name in {f.name for f in dataclasses.fields(schema.settings)}}
    settings = _absolute(_build_dataclass(schema.settings, {k: v for k, v in raw.items() if k in fields_}, "", fills))
    _check_settings(settings)
    subsets, dimensions = _build_search(raw.get("search", {}), schema)
    _refuse_searched_and_fixed(raw, dimensions, schema)
    sampler = meta.get("sampler", "tpe")
    if sampler not in ("tpe", "random", "grid"):
        raise SpaceError(f"sampler: {shown(sampler)} must be tpe, random or grid")
    if sampler == "grid":
        ranged = [d.name for d in dimensions if d.choices is None]
        if ranged:
            raise SpaceError(f"sampler: grid needs a list of choices for every searched setting, not a range: {ranged}")
        meta["samples"] = math.prod(len(d.choices) for d in dimensions)  # every combination, once
    return Space(
        system=meta.get("system", "asc_kd"), metric=metric, mode=mode, samples=meta.get("samples", 1),
        subsets=subsets, dimensions=dimensions, settings=settings, max_concurrent=meta.get("max_concurrent", 0),
        compare_without_kd=meta.get("compare_without_kd", True), max_failures=meta.get("max_failures", 0),
        seed=meta.get("seed", 0), sampler=sampler, confirm_top_k=meta.get("confirm_top_k", 0), confirm_seeds=meta.get("confirm_seeds", 3),
        source=raw, scheduler=built.pop("scheduler"), resources=built.pop("resources"),
        sections=built,
    )  # fmt: skip


_PATH_SETTINGS = ("weights", "cochlscene", "logits", "dir_path")  # also teacher_training.weights


def _absolute(settings: Any) -> Any:
    """Paths made absolute here, since trials run in other working directories."""
    changes: dict[str, Any] = {}
    for name in _PATH_SETTINGS:
        value = getattr(settings, name, None)
        if isinstance(value, str) and value:
            changes[name] = str(Path(value).expanduser().resolve())
        elif isinstance(value, tuple):
            changes[name] = tuple(str(Path(v).expanduser().resolve()) for v in value)
    return dataclasses.replace(settings, **changes) if changes else settings


def _build_search(search: Any, schema: SystemSchema) -> tuple[tuple[int, ...], tuple[Dimension, ...]]:
    if not isinstance(search, dict) or not search:
        raise SpaceError("search: must map each searched setting to its range")
    subsets: list = []
    if schema.by_subset:
        subsets = search.get("subset", [100])
        subsets = [subsets] if isinstance(subsets, int) else subsets
        if not isinstance(subsets, list) or not subsets or any(s not in SUBSETS for s in subsets):
            found = shown(search.get("subset"))
            raise SpaceError(f"search.subset: must be a list drawn from {list(SUBSETS)}, got {found}")
    hints = typing.get_type_hints(schema.settings)
    dimensions = []
    for name, spec in search.items():
        if name == "subset" and schema.by_subset:
            continue
        searchable = {n for n, t in hints.items() if t in (int, float, str)} - schema.not_searchable
        if name not in searchable:
            label = f"search.{name}" if isinstance(name, str) and len(name) <= 64 else f"search: {shown(name)}"
            raise SpaceError(f"{label}: not a searchable setting{_suggest(str(name), searchable)}")
        where = f"search.{name}"
        dimensions.append(_build_dimension(name, spec, hints[name], where))
    if not dimensions:
        raise SpaceError("search: declares no hyperparameter to search" + (" besides subset" if schema.by_subset else ""))
    return tuple(sorted(set(subsets))), tuple(dimensions)


def _build_dimension(name: str, spec: Any, kind: Any, where: str) -> Dimension:
    integer = kind is int
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"{where}: an empty list of choices")
        choices = tuple(_coerce(v, kind, where) for v in spec)
        _check_bounds(name, min(choices), max(choices), where)
        return Dimension(name, choices=choices, integer=integer)
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected {{low: …, high: …}} or a list of choices, got {shown(spec)}")
    for key in spec:
        if key not in ("low", "high", "log"):
            raise SpaceError(f"{where}: unknown key {shown(key)} (expected low, high, log)")
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where}: needs both low and high")
    low, high = _coerce(spec["low"], kind, f"{where}.low"), _coerce(spec["high"], kind, f"{where}.high")
    log = _coerce(spec.get("log", False), bool, f"{where}.log")
    if not low < high:
        raise SpaceError(f"{where}: empty or inverted range [{low}, {high}]; low must be below high")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0, got {low}")
    _check_bounds(name, low, high, where)
    return Dimension(name, low=low, high=high, log=log, integer=integer)


_BOUNDS = {"kd_lambda": (0.0, 1.0), "mixstyle_p": (0.0, 1.0), "warmup_fraction": (0.0, 0.999), "dir_prob": (0.0, 1.0),
           "p0": (0.0, 1.0),
           "backbone_lr_ratio": (0.0, 1.0)}  # fmt: skip
_POSITIVE = {"temperature", "lr", "epochs", "batch_size", "base_channels", "channels_multiplier", "expansion_rate",
             "backbone_lr_ratio", "ensemble", "crop_seconds"}  # fmt: skip
_NON_NEGATIVE = {"kd_weight", "ft_weight", "weight_decay"}


def _check_bounds(name: str, low: float, high: float, where: str) -> None:
    if name in _BOUNDS:
        lo, hi = _BOUNDS[name]
        if low < lo or high > hi:
            raise SpaceError(f"{where}: {name} must lie in [{lo}, {hi}], got [{low}, {high}]")
    if name in _POSITIVE and low <= 0:
        raise SpaceError(f"{where}: {name} must be positive, got {low}")
    if name in _NON_NEGATIVE and low < 0:
        raise SpaceError(f"{where}: {name} must not be negative, got {low}")


def _check_settings(settings: Any, where: str = "") -> None:
    for name in _BOUNDS.keys() | _POSITIVE | _NON_NEGATIVE:
        value = getattr(settings, name, None)
        if value is not None:
            _check_bounds(name, value, value, f"{where}{name}")
    if isinstance(settings, TeacherConfig):
        _check_teacher(settings, where)
    precision = getattr(settings, "precision", None)
    if precision is not None and precision not in PRECISIONS:
        raise SpaceError(f"{where}precision: {str(precision)[:20]!r} must be one of {', '.join(PRECISIONS)}")
    blocks = getattr(settings, "n_blocks", None)
    if blocks is not None and not re.fullmatch(r"[1-9](,[1-9]){2}", blocks):
        raise SpaceError(f"{where}n_blocks: {shown(blocks)} must be three block counts 1–9 such as 3,2,1")
    _check_train_steps(settings, where)
    dir_path = getattr(settings, "dir_path", None)
    if dir_path and not list(Path(dir_path).glob("*.wav")):
        raise SpaceError(f"{where}dir_path: no .wav impulse responses in {dir_path}")


def _check_train_steps(settings: Any, where: str) -> None:
    """A step budget gives every epoch (the unit of reports and early stopping) at least one step."""
    steps, epochs = getattr(settings, "train_steps", None), getattr(settings, "epochs", None)
    if steps is None or epochs is None:
        return
    if steps < 0 or (steps and steps < epochs):
        raise SpaceError(f"{where}train_steps: {shown(steps)} must be 0 (epochs passes over the subset) or at least "
                         f"epochs ({epochs}), so every epoch takes a step")


def _check_sections(sections: dict) -> None:
    scheduler: SchedulerSettings = sections["scheduler"]
    if scheduler.type not in ("asha", "fifo"):
        raise SpaceError(f"scheduler.type: {shown(scheduler.type)} must be asha or fifo")
    if scheduler.grace_period < 1 or scheduler.reduction_factor < 2:
        raise SpaceError("scheduler: grace_period must be ≥ 1 and reduction_factor ≥ 2")
    resources: ResourceSettings = sections["resources"]
    for name, value in dataclasses.asdict(resources).items():
        if value < 0 or (name.endswith("cpus_per_trial") and value <= 0):
            raise SpaceError(f"resources.{name}: must be positive, got {value}")
    if "teacher" in sections:
        _check_settings(sections["teacher"], "teacher.")
    budget = sections.get("budget")
    if budget is not None and (budget.param_bytes < 0 or budget.macs < 0 or budget.bits not in (8, 16, 32)):
        raise SpaceError("budget: param_bytes and macs must not be negative, bits one of 8, 16, 32")


def _check_teacher(teacher: TeacherConfig, where: str) -> None:
    if teacher.arch not in ARCHS:
        raise SpaceError(f"{where}arch: {shown(teacher.arch)} must be one of {', '.join(ARCHS)}")
    for name in ("weights", "cochlscene"):
        path = getattr(teacher, name)
        if path and not Path(path).exists():
            raise SpaceError(f"{where}{name}: nothing at {path}")
    if teacher.pretrain not in ("none", "synthetic"):
        raise SpaceError(f"{where}pretrain: {shown(teacher.pretrain)} must be none or synthetic")
    if teacher.pretrain == "synthetic" and teacher.arch != TINY_ARCH:
        raise SpaceError(f"{where}pretrain: synthetic pretraining is for {TINY_ARCH}; the standard PaSST takes weights")
    if teacher.ensemble < 1 or teacher.sit_epochs < 1 or teacher.pretrain_epochs < 1:
        raise SpaceError(f"{where}ensemble, sit_epochs and pretrain_epochs must be at least 1")
    if teacher.schedule not in SCHEDULES:
        raise SpaceError(f"{where}schedule: {str(teacher.schedule)[:40]!r} must be one of {', '.join(SCHEDULES)}")
    if not 0 < teacher.lr_floor <= 1 or teacher.warmup_epochs < 0 or teacher.rampdown_epochs < 1 or teacher.sample_rate < 8000:
        raise SpaceError(f"{where}lr_floor must lie in (0, 1], warmup_epochs ≥ 0, rampdown_epochs ≥ 1, sample_rate ≥ 8000")
    for name in ("head_lr", "sit_lr", "sit_batch_size"):
        if getattr(teacher, name) is not None and getattr(teacher, name) <= 0:
            raise SpaceError(f"{where}{name}: must be positive (or null: as lr / batch_size)")


def _build_dataclass(cls: type, values: Any, where: str, fills: dict | None = None):
    """cls(**values) with every key and type checked; `fills` gives fields already built (sections)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise SpaceError(f"{where}: must be a mapping, got {shown(values)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        label = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise SpaceError(f"unknown key {shown(label)}{_suggest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], label)
    try:
        return cls(**kwargs, **(fills or {}))
    except ValueError as err:  # the settings' own checks (OskdftConfig, SslConfig)
        raise SpaceError(f"{where or 'settings'}: {err}") from None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check (and gently convert) one value against a type hint."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(t for t in options if t is not type(None))
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str):  # one path where a list of them may stand
            value = [value]
        if not isinstance(value, list):
            raise SpaceError(f"{where}: expected a list, got {shown(value)}")
        inner = typing.get_args(kind)[0]
        return tuple(_coerce(v, inner, where) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and len(value) < 64:  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            # NaN passes every bound check (each comparison with it is false), so it is refused here, once.
            if not math.isfinite(number):
                raise SpaceError(f"{where}: must be a finite number, got {shown(value)}")
            return number
    elif kind is str:
        if isinstance(value, str):
            return value
    name = getattr(kind, "__name__", str(kind))
    raise SpaceError(f"{where}: expected {name}, got {shown(value)}")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 2, 3, 4, 4
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40


def shown(value: Any, limit: int = 80) -> str:
    """A bad value for a message: a short prefix of its repr, whatever its size or nesting."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(word: str, options: set[str]) -> str:
    if len(word) > 64:  # difflib is quadratic; nothing that long is a near miss
        return ""
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def space_to_yaml(space: Space) -> str:
    """The resolved settings as YAML, kept next to the run so a resume can check nothing changed."""
    record = {
        "system": space.system, "metric": space.metric, "mode": space.mode, "samples": space.samples,
        "subsets": list(space.subsets), "max_concurrent": space.max_concurrent,
        "compare_without_kd": space.compare_without_kd, "max_failures": space.max_failures, "seed": space.seed,
        "sampler": space.sampler, "confirm_top_k": space.confirm_top_k, "confirm_seeds": space.confirm_seeds,
        "search": [dataclasses.asdict(d) for d in space.dimensions],
        "settings": dataclasses.asdict(space.settings),
        "scheduler": dataclasses.asdict(space.scheduler),
        "resources": dataclasses.asdict(space.resources),
        **{name: dataclasses.asdict(value) for name, value in space.sections.items()},
    }  # fmt: skip
    return yaml.safe_dump(_plain(record), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
