"""A space file, validated once into typed settings.

A space file is YAML data (loaded with yaml.safe_load: nothing in it is evaluated as code):

    system: asc_kd
    metric: acc            # ranking metric; see trainables/asc/metrics.py
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

`system` picks what a trial trains (search/systems/): `asc_kd` (a KD student; fixed settings are
StudentConfig's), `asc_teacher` (a PaSST teacher fine-tuning; TeacherConfig's) or `oskdft2` (OskdftConfig's).
Every error is a `SpaceError` whose message names the offending key. Reading the file and `--set` are
spaces/space_file.py; this module turns the raw mapping into a `Space` and a `Space` back into a mapping. It knows no
system: what it needs of one is the `Schema` it is given (search/system.py's `System` is one).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from spaces.errors import SpaceError, shown, suggest
from trainables.asc.data import SUBSETS
from trainables.asc.student import Budget
from trainables.asc.teacher import TeacherConfig
from trainables.settings import (
    SEED_HIGH, TEXT, Rule, SettingError, Settings, check, flag, path_fields, rule_of, seed_setting, setting,
)  # fmt: skip

SPACES_DIR = Path(__file__).resolve().parent  # the shipped space files lie beside this module


@runtime_checkable
class Schema(Protocol):
    """What a space needs to know of its system (search.system.System provides it)."""

    name: str
    settings: type  # the trial's settings type: the space's fixed settings are its fields
    sections: dict[str, type]  # section name → its settings type
    metric: re.Pattern  # the metrics a space of the system may rank by
    default_metric: str
    default_mode: str
    by_subset: bool  # trials are grouped by training subset (search.subset)
    not_searchable: frozenset[str]  # settings a search may not vary

    def uses_teacher(self, space: Space) -> bool: ...


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a float or int range (optionally log-scaled) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    integer: bool = False

    def distribution(self, observed: Iterable = ()) -> BaseDistribution:
        """The Optuna distribution the search samples from; values `observed` outside it (trials of a record
        written by an older space) widen it, so a study rebuilt from them accepts every one."""
        observed = list(observed)
        if self.choices is not None:
            return CategoricalDistribution(list(dict.fromkeys([*self.choices, *observed])))
        low, high = min([self.low, *observed]), max([self.high, *observed])
        if self.integer:
            return IntDistribution(int(low), int(high), log=self.log)
        return FloatDistribution(float(low), float(high), log=self.log and low > 0)


@dataclass(frozen=True)
class SchedulerSettings(Settings):
    type: str = setting("asha", choices=("asha", "fifo"))  # asha (early stopping) or fifo (every trial runs all epochs)
    grace_period: int = setting(1, low=1)  # epochs every trial gets before it can be stopped
    reduction_factor: int = setting(2, low=2)  # ASHA keeps 1/reduction_factor of the trials at each rung


@dataclass(frozen=True)
class ResourceSettings(Settings):
    """What each trial asks Ray for. None (a space that leaves the setting out) is automatic, decided once Ray
    knows the cluster (search/cluster.py `automatic_resources`): the GPUs it has, packed several trials to a
    GPU by the GPU's memory and the CPUs beside it; none on a CPU-only cluster. An automatic trial's CPUs are
    GPU_TRIAL_CPUS for a GPU trial, 1 otherwise."""

    cpus_per_trial: float | None = setting(None, low=0.01)  # below 0.01, Ray would pack trials by the thousand
    gpus_per_trial: float | None = setting(None, low=0.0)  # a fraction packs several trials on one GPU; 0: CPU only
    teacher_cpus_per_trial: float | None = setting(None, low=0.01)
    teacher_gpus_per_trial: float | None = setting(None, low=0.0)

    @property
    def decided(self) -> bool:
        """Whether every request is a number (automatic ones are decided once Ray knows the cluster)."""
        return None not in dataclasses.astuple(self)


# A GPU trial's data path: one core runs the loop, one gathers the next batches into pinned memory.
GPU_TRIAL_CPUS = 2.0


@dataclass(frozen=True)
class Published:
    """A published table's row that a replication is set beside, in percent, with where it comes from."""

    source: str  # the paper or repository, its table or file and line
    metric: str  # the figure it reports, as this run names it (macro_acc, eer): compared on the full test set
    figures: dict  # subset → percent; a system without subsets has one figure, under "all"


KINDS = ("search", "replication")


def _of(cls: type, means: str | None = None) -> Rule:
    return Rule(kind="settings", settings=cls, means=means)


@dataclass(frozen=True)
class Space:
    system: str = setting(rule=TEXT)  # the registry's name of the system
    metric: str = setting(rule=TEXT)  # the ranking metric (the system's Schema.metric says which)
    mode: str = setting(choices=("max", "min"))
    samples: int = setting(low=1)  # trials per subset (a grid: every combination once)
    # The training subsets, each searched on its own; empty for systems not grouped by subset.
    subsets: tuple[int, ...] = setting(rule=Rule(kind="items", item=Rule(choices=SUBSETS)))
    dimensions: tuple[Dimension, ...] = setting(rule=Rule(kind="items", item=_of(Dimension)))
    scheduler: SchedulerSettings = setting(rule=_of(SchedulerSettings))
    resources: ResourceSettings = setting(rule=_of(ResourceSettings))
    settings: Settings = setting(rule=_of(Settings))  # the trial's fixed settings: an instance of spec.settings
    # name → settings of each of the system's sections
    sections: dict = setting(default_factory=dict, rule=Rule(kind="mapping", item=_of(Settings)))
    max_concurrent: int = setting(0, low=0)  # 0: as many as the resources allow
    compare_without_kd: bool = flag(True)  # retrain each subset's best configuration with kd_lambda = 1
    max_failures: int = setting(0, low=0)  # retries of a trial whose worker died
    seed: int = seed_setting(derived=max(SUBSETS))  # seed of the Optuna samplers: subset N's is seed + N
    sampler: str = setting("tpe", choices=("tpe", "random", "grid"))  # grid: every combination of the searched choices
    confirm_top_k: int = setting(0, low=0)  # the top k configurations of each subset are trained again …
    confirm_seeds: int = setting(3, low=2)  # … with this many new seeds (2 at least: a mean and a spread), ranked by
    # their mean
    # search: select on validation, report the held-out part only. replication: the fixed settings trained with
    # `seeds` seeds (the settings' seed and the next ones), nothing selected, every figure on the full test set.
    kind: str = setting("search", choices=KINDS)
    seeds: int = setting(5, low=1)  # a replication's runs per subset
    published: Published | None = setting(None, rule=_of(Published))  # a replication's figures, set beside its own
    # search.arm: named bundles of fixed settings, one searched choice (`arm`) that sets several settings at once, for
    # arms that differ in more than one setting (NTU's Seq-FT and SIT differ in lr and head_lr); name → settings
    arms: dict = setting(default_factory=dict, rule=Rule(kind="mapping", item=_of(dict)))
    # The merged mapping, for the record; and the registry's System that `system` names (neither compared).
    source: dict = field(default_factory=dict, compare=False, metadata={"rule": Rule(kind="mapping")})
    spec: Schema | None = field(default=None, compare=False, repr=False,
                                metadata={"rule": _of(Schema, "must be a system (search/system.py System)")})

    def __post_init__(self) -> None:
        check(self)

    @property
    def confirmation_seeds(self) -> list[int]:
        """The seeds a confirmation (and the no-KD references beside it) trains: seed + 1 … seed + confirm_seeds."""
        first = getattr(self.settings, "seed", 0) + 1
        return list(range(first, first + self.confirm_seeds))

    @property
    def uses_teacher(self) -> bool:
        """Whether some trial of this space distils from the teacher its `teacher` section describes."""
        return self.spec.uses_teacher(self)

    @property
    def teacher(self) -> TeacherConfig:
        return self.sections["teacher"]

    @property
    def data(self):
        return self.sections["data"]

    @property
    def budget(self) -> Budget:
        return self.sections.get("budget", Budget())


SCALAR_KEYS = {"system": str, "metric": str, "mode": str, "samples": int, "max_concurrent": int,
                "compare_without_kd": bool, "max_failures": int, "seed": int, "confirm_top_k": int,
                "confirm_seeds": int, "sampler": str, "kind": str, "seeds": int}  # fmt: skip
_COMMON_SECTIONS: dict[str, type] = {"scheduler": SchedulerSettings, "resources": ResourceSettings}


def section_types(schema: Schema) -> dict[str, type]:
    return {**_COMMON_SECTIONS, **schema.sections}


def setting_names(schema: Schema) -> set[str]:
    """Top-level keys: the trial settings' fields, except those a section of the same name fills."""
    return {f.name for f in dataclasses.fields(schema.settings)} - set(schema.sections)


def _refuse_searched_and_fixed(raw: dict, dimensions: tuple[Dimension, ...], schema: Schema) -> None:
    """A setting both searched and fixed would silently lose its fixed value to the search: refuse it."""
    searched = [d.name for d in dimensions] + (["subset"] if schema.by_subset else [])
    for name in searched:
        if name in raw:
            value = str(raw[name])[:60]  # as the user would type it again
            how = f"--subsets {value}" if name == "subset" else f"--set search.{name}={value}"
            raise SpaceError(f"{name} is searched (search.{name}) and also fixed ({name}: {shown(raw[name])}, in the space "
                             f"file or by --set); a setting is one or the other. To fix it, remove {name} from search: "
                             f"in the space file, or fix it for this run with {how}")  # fmt: skip


def _check_confirmation_seeds(settings: Any, meta: dict) -> None:
    """Confirmations (and the no-KD references on their seeds) train seed + 1 … seed + confirm_seeds: all must be
    seeds a trial accepts."""
    seed, count = getattr(settings, "seed", 0), meta.get("confirm_seeds", _field_default(Space, "confirm_seeds"))
    if meta.get("confirm_top_k", 0) and seed + count > SEED_HIGH:
        raise SpaceError(f"seed: {seed} + confirm_seeds {count} must be at most {SEED_HIGH} (the confirmations train "
                         "seed + 1 … seed + confirm_seeds)")  # fmt: skip


def _field_default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def build(raw: dict, schema: Schema) -> Space:
    """Validate the raw mapping of a space of the system `schema` into a `Space`; raise SpaceError naming the first
    problem. (search.systems.build_space finds the system the mapping names.)"""
    raw = dict(raw)
    sections = section_types(schema)
    fields_ = setting_names(schema)
    known = set(SCALAR_KEYS) | set(sections) | {"search", "published"} | fields_
    for key in raw:
        if key not in known:
            raise SpaceError(f"unknown key {shown(key)}{suggest(str(key), known)}")
    meta = {k: _coerce(raw[k], t, k) for k, t in SCALAR_KEYS.items() if k in raw}
    metric, mode = meta.get("metric", schema.default_metric), meta.get("mode", schema.default_mode)
    if not schema.metric.match(metric):
        raise SpaceError(f"metric: {shown(metric)} is not a metric of {meta.get('system', 'asc_kd')}")
    for key, value in meta.items():  # the Space's own rules, before anything is built on them
        rule = rule_of(Space, key)
        if rule is not None and not rule.allows(value):
            raise SpaceError(f"{key}: {rule.describe()}, got {shown(value)}")
    built = {name: _absolute(_build_dataclass(cls, raw.get(name, {}), name)) for name, cls in sections.items()}
    fills = {name: built[name] for name in schema.sections if name in {f.name for f in dataclasses.fields(schema.settings)}}
    settings = _absolute(_build_dataclass(schema.settings, {k: v for k, v in raw.items() if k in fields_}, "", fills))
    _check_paths(settings)
    for name, section in built.items():
        _check_paths(section, f"{name}.")
    replication = meta.get("kind") == "replication"
    subsets, dimensions = _build_search(raw.get("search", {}), schema, replication)
    arms = _build_arms(raw.get("search") or {}, schema, settings, raw, dimensions)
    published = _build_published(raw.get("published"), schema, subsets, metric)
    if replication:
        dimensions = _replicate(meta, settings, dimensions)  # refuses anything searched: its seed is its own
        _refuse_searched_and_fixed(raw, (), schema)
        built["scheduler"] = _no_early_stopping(built["scheduler"], raw.get("scheduler"))
    else:
        _refuse_searched_and_fixed(raw, dimensions, schema)
    if published is not None and not replication:
        raise SpaceError("published: only a replication (kind: replication) is set beside a published table; a search "
                         "selects on part of the test data, so its figures are not comparable")  # fmt: skip
    _check_confirmation_seeds(settings, meta)
    sampler = meta.get("sampler", "tpe")
    if sampler == "grid":
        ranged = [d.name for d in dimensions if d.choices is None]
        if ranged:
            raise SpaceError(f"sampler: grid needs a list of choices for every searched setting, not a range: {ranged}")
        meta["samples"] = math.prod(len(d.choices) for d in dimensions)  # every combination, once
    # The scalars the space leaves out take the Space's own defaults.
    return Space(**{**meta, "system": schema.name, "metric": metric, "mode": mode, "samples": meta.get("samples", 1)},
                 spec=schema, subsets=subsets, dimensions=dimensions, settings=settings, source=raw, published=published,
                 arms=arms, scheduler=built.pop("scheduler"), resources=built.pop("resources"), sections=built)  # fmt: skip


def _absolute(settings: Any) -> Any:
    """Paths (the fields of kind path) made absolute here, since trials run in other working directories."""
    changes: dict[str, Any] = {}
    for name, _rule in path_fields(settings):
        value = getattr(settings, name)
        if isinstance(value, str) and value:
            changes[name] = str(Path(value).expanduser().resolve())
        elif isinstance(value, tuple):
            changes[name] = tuple(str(Path(v).expanduser().resolve()) for v in value)
    return dataclasses.replace(settings, **changes) if changes else settings


_REPLICATION_FIXES = {"sampler": "grid", "confirm_top_k": 0, "compare_without_kd": False}


def _replicate(meta: dict, settings: Any, searched: tuple[Dimension, ...]) -> tuple[Dimension, ...]:
    """A replication's one dimension: the seed, `seeds` values from the settings' own. Refuses what would select."""
    if searched:
        name = searched[0].name
        raise SpaceError(f"search.{name}: a replication searches nothing; fix {name} (e.g. {name}: <value>) or make "
                         "the space kind: search")  # fmt: skip
    for key, fixed in _REPLICATION_FIXES.items():
        if key in meta and meta[key] != fixed:
            raise SpaceError(f"{key}: a replication trains its settings with each seed and selects nothing; leave "
                             f"{key} out (it is {str(fixed).lower()})")  # fmt: skip
    meta.update(_REPLICATION_FIXES)
    first, count = settings.seed, meta.get("seeds", _field_default(Space, "seeds"))
    if first + count - 1 > SEED_HIGH:
        raise SpaceError(f"seed: {first} + seeds {count} must stay at most {SEED_HIGH} (a replication trains seed … "
                         "seed + seeds − 1)")  # fmt: skip
    return (_seed_dimension(first, count),)


def _seed_dimension(first: int, count: int) -> Dimension:
    return Dimension("seed", choices=tuple(range(first, first + count)), integer=True)


def _no_early_stopping(scheduler: SchedulerSettings, given: Any) -> SchedulerSettings:
    if isinstance(given, dict) and given.get("type", "fifo") != "fifo":
        raise SpaceError("scheduler.type: a replication runs every seed to the end; leave the scheduler out (fifo)")
    return dataclasses.replace(scheduler, type="fifo")


def _build_published(raw: Any, schema: Schema, subsets: tuple[int, ...], metric: str) -> Published | None:
    """`published: {source, metric, figures}`: the figures in percent, one per subset the space runs."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"source", "metric", "figures"}:
        raise SpaceError("published: expected {source: …, metric: …, figures: {subset: percent}}, got " + shown(raw))
    source, figure, figures = raw["source"], raw["metric"], raw["figures"]
    if not isinstance(source, str) or not source.strip():
        raise SpaceError("published.source: say where the figures come from (paper or repository, table or file)")
    if not isinstance(figure, str) or not schema.metric.match(figure):
        raise SpaceError(f"published.metric: {shown(figure)} is not a metric of {schema.name}")
    keys = [int(s) for s in subsets] if schema.by_subset else ["all"]
    if not isinstance(figures, dict) or not figures:
        raise SpaceError(f"published.figures: expected {{{keys[0]}: percent, …}}, got {shown(figures)}")
    checked = {}
    for key, value in figures.items():
        if key not in ([*SUBSETS] if schema.by_subset else ["all"]):
            raise SpaceError(f"published.figures: {shown(key)} is not a subset of {schema.name}"
                             + ("" if schema.by_subset else " (its one figure goes under all)"))  # fmt: skip
        percent = _coerce(value, float, f"published.figures.{key}")
        if not 0.0 <= percent <= 100.0:
            raise SpaceError(f"published.figures.{key}: a percentage, got {shown(value)}")
        checked[key] = percent
    return Published(source.strip(), figure, {k: checked[k] for k in keys if k in checked})


def _build_search(search: Any, schema: Schema,
                  replication: bool = False) -> tuple[tuple[int, ...], tuple[Dimension, ...]]:  # fmt: skip
    if search is None and replication:
        search = {}
    if not isinstance(search, dict) or (not search and not replication):
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
        if name == ARM:
            if not isinstance(spec, dict) or not spec or not all(isinstance(k, str) and k for k in spec):
                raise SpaceError(f"search.{ARM}: expected {{arm name: {{setting: value, …}}, …}}, got "
                                 f"{shown(spec)}")  # fmt: skip
            dimensions.append(Dimension(ARM, choices=tuple(spec)))
            continue
        searchable = {n for n, t in hints.items() if t in (int, float, str)} - schema.not_searchable
        if name not in searchable:
            label = f"search.{name}" if isinstance(name, str) and len(name) <= 64 else f"search: {shown(name)}"
            raise SpaceError(f"{label}: not a searchable setting{suggest(str(name), searchable)}")
        dimensions.append(_build_dimension(name, spec, hints[name], f"search.{name}", rule_of(schema.settings, name)))
    if not dimensions and not replication:
        besides = " besides subset" if schema.by_subset else ""
        raise SpaceError(f"search: declares no hyperparameter to search{besides}; to train fixed settings with several "
                         "seeds, make the space kind: replication")  # fmt: skip
    return tuple(sorted(set(subsets))), tuple(dimensions)


ARM = "arm"


def _build_arms(search: dict, schema: Schema, settings: Any, raw: dict,
                dimensions: tuple[Dimension, ...]) -> dict[str, dict]:  # fmt: skip
    """`search.arm`: each arm's settings, typed and checked as the settings type checks them. A setting an arm sets
    is neither fixed nor searched besides: it would silently lose to the arm, or the arm to it."""
    given = search.get(ARM) if isinstance(search, dict) else None
    if given is None:
        return {}
    hints = typing.get_type_hints(schema.settings)
    names = setting_names(schema) - schema.not_searchable - {"subset"}
    searched = {d.name for d in dimensions}
    arms = {}
    for arm, values in given.items():
        where = f"search.{ARM}.{arm}"
        if not isinstance(values, dict) or not values:
            raise SpaceError(f"{where}: expected the arm's settings {{setting: value, …}}, got {shown(values)}")
        typed = {}
        for key, value in values.items():
            if key not in names:
                raise SpaceError(f"{where}.{key}: not a setting an arm can set{suggest(str(key), names)}")
            if key in raw or key in searched:
                how = "fixed" if key in raw else "searched"
                raise SpaceError(f"{where}.{key}: {key} is set by the arms and also {how}; a setting is one or the "
                                 f"other (remove {key} from the {'file' if key in raw else 'search'})")  # fmt: skip
            typed[key] = _coerce(value, hints[key], f"{where}.{key}")
        try:
            dataclasses.replace(settings, **typed)  # the settings' own rules, across fields too
        except SettingError as err:
            raise SpaceError(f"{where}.{err}") from None
        except ValueError as err:
            raise SpaceError(f"{where}: {err}") from None
        arms[arm] = typed
    return arms


def recorded_dimensions(mapping: dict) -> tuple[Dimension, ...]:
    """The searched dimensions of a space file's mapping written by `to_mapping` (a run's record), read without its
    system: each entry as `build` reads it, its type that of its values. A replication's one is its seed."""
    if mapping.get("kind") == "replication":
        return (_seed_dimension(int(mapping.get("seed", 0)), int(mapping.get("seeds", 1))),)
    found = []
    for name, spec in (mapping.get("search") or {}).items():
        if name == "subset":
            continue
        if name == ARM:
            found.append(Dimension(ARM, choices=tuple(spec)))
            continue
        found.append(_build_dimension(name, spec, _kind_of(spec), f"search.{name}", None))
    return tuple(found)


def _kind_of(spec: Any) -> type:
    """The type a recorded range or list of choices was written with."""
    values = spec if isinstance(spec, list) else [spec.get("low"), spec.get("high")] if isinstance(spec, dict) else []
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return int
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return float
    return str if isinstance(spec, list) and all(isinstance(v, str) for v in spec) else object


def _build_dimension(name: str, spec: Any, kind: Any, where: str, rule: Rule | None) -> Dimension:
    integer = kind is int
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"{where}: an empty list of choices")
        choices = tuple(_coerce(v, kind, where) for v in spec)
        _check_range(name, choices, where, rule)
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
    _check_range(name, (low, high), where, rule)
    return Dimension(name, low=low, high=high, log=log, integer=integer)


def _check_range(name: str, values: tuple, where: str, rule: Rule | None) -> None:
    """A searched range or list of choices must keep to the setting's own rule (its field's metadata)."""
    if rule is not None and not all(rule.allows(v) for v in values):
        shown_values = f"[{values[0]}, {values[1]}]" if len(values) == 2 else list(values)
        raise SpaceError(f"{where}: {name} {rule.describe()}, got {shown_values}")


def _check_paths(settings: Any, where: str = "") -> None:
    """Files the settings name (the paths that must exist) must be there on this machine: the trials read them."""
    for name, rule in path_fields(settings):
        missing = rule.missing_at(getattr(settings, name))
        if missing:
            raise SpaceError(f"{where}{name}: {missing}")


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
            raise SpaceError(f"unknown key {shown(label)}{suggest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], label)
    try:
        return cls(**kwargs, **(fills or {}))
    except SettingError as err:  # a rule of one setting: named as the space file names it
        raise SpaceError(f"{where}.{err}" if where else str(err)) from None
    except ValueError as err:  # the settings' checks across fields (OskdftConfig, SslConfig)
        raise SpaceError(f"{where or 'settings'}: {err}") from None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check (and gently convert) one value against a type hint (object: any value)."""
    if kind is object:
        return value
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


def to_mapping(space: Space) -> dict:
    """`space` as a space file's mapping, every setting spelled out: `build_space` of it gives `space` again."""
    replication = space.kind == "replication"
    searched = {d.name for d in space.dimensions} | ({"subset"} if space.spec.by_subset else set())
    search: dict[str, Any] = {"subset": list(space.subsets)} if space.spec.by_subset else {}
    for d in space.dimensions if not replication else ():  # a replication's seeds are its settings' seed and `seeds`
        search[d.name] = list(d.choices) if d.choices is not None else {"low": d.low, "high": d.high, "log": d.log}
    if space.arms:
        search[ARM] = {arm: dict(values) for arm, values in space.arms.items()}
    arm_set = {key for values in space.arms.values() for key in values}
    fixed = {k: v for k, v in dataclasses.asdict(space.settings).items()
             if (k not in searched or (replication and k == "seed")) and k not in space.sections
             and k not in arm_set}  # fmt: skip
    kind = {"kind": space.kind, "seeds": space.seeds} if replication else {"kind": space.kind}
    if space.published is not None:
        kind["published"] = dataclasses.asdict(space.published)
    return {
        "system": space.system, "metric": space.metric, "mode": space.mode, "samples": space.samples,
        "max_concurrent": space.max_concurrent, "compare_without_kd": space.compare_without_kd,
        "max_failures": space.max_failures, "seed": space.seed, "sampler": space.sampler,
        "confirm_top_k": space.confirm_top_k, "confirm_seeds": space.confirm_seeds, **kind, "search": search,
        "scheduler": dataclasses.asdict(space.scheduler), "resources": dataclasses.asdict(space.resources),
        **{name: dataclasses.asdict(value) for name, value in space.sections.items()}, **fixed,
    }  # fmt: skip


def differences(recorded: Any, current: Any, where: str = "") -> list[str]:
    """'key: recorded → now' for every setting that differs, dotted keys for nested ones."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        found = []
        for key in list(recorded) + [k for k in current if k not in recorded]:
            label = f"{where}.{key}" if where else str(key)
            found += differences(recorded.get(key, "(absent)"), current.get(key, "(absent)"), label)
        return found
    return [] if recorded == current else [f"{where}: {recorded!r} → {current!r}"]


def plain(value: Any) -> Any:
    """`value` as a space file holds it once written and read back: tuples as lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
