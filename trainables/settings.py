"""Typed settings: each constraint declared on the field it constrains, and enforced when settings are made.

    kd_lambda: float = setting(0.02, low=0.0, high=1.0)  # weight of the label loss
    arch: str = setting("passt_tiny", choices=ARCHS)

    compile: bool = flag(False)
    weights: str | None = path_setting("file")  # made absolute, and must exist, where a space is read

`setting` keeps a `Rule` in the field's metadata; every field of a settings class has one. Settings
classes derive from `Settings`, whose `__post_init__` checks them, so no instance breaks a rule, however
it was made, and whose `from_dict` refuses keys the class does not know. The space parser
(spaces/space.py) reads the same rules to check a searched range and to find the paths it makes
absolute and checks, so each rule is written once, beside its field.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar


class SettingError(ValueError):
    """A setting outside its rule, or a key no setting has; the message starts with the setting's name."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem

    def __reduce__(self) -> tuple:  # a trial's error crosses processes pickled
        return SettingError, (self.name, self.problem)


@dataclass(frozen=True)
class Rule:
    """The values a setting may take. None passes (the settings that may be None say so in their type).

    kind "number": a range (each end open or closed) or a list of `choices` (which also serves words);
    "bool": True or False; "text": a non-empty string, matching `pattern` if given; "items": a tuple whose
    length is within `length` and whose items follow `item`; "path": a non-empty string naming a file or a
    folder (`path`), which `must_exist` (checked by `missing`, where the settings are read, not where they
    are made: a trial elsewhere may rebuild them from a record); "settings": an instance of `settings`;
    "mapping": a dict whose keys are non-empty strings and whose values follow `item`.
    `predicate` narrows any kind further; `means` then says in words what is allowed.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is outside
    high_open: bool = False
    choices: tuple | None = None
    kind: str = "number"
    pattern: str | None = None  # text: a regular expression the whole value matches
    means: str | None = None  # what pattern or predicate allow, as "must be …"
    predicate: Callable[[Any], bool] | None = None
    item: Rule | None = None  # items: every item's rule
    length: tuple[int, int | None] = (0, None)  # items: fewest and most (None: no limit)
    path: str | None = None  # path: "file" or "dir"
    must_exist: bool = False
    holds: tuple[str, str] | None = None  # path to a folder: (glob, what it is) it must hold at least one of
    missing: str = "nothing at"  # path: the problem when nothing is there, before the path
    settings: type | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind == "path" and self.path not in ("file", "dir"):
            raise ValueError(f"a path rule names a file or a dir, not {self.path!r}")

    def allows(self, value: Any) -> bool:
        if self.choices is not None:
            fits = value in self.choices
        elif self.kind == "number":
            fits = self._in_range(value)
        elif self.kind == "bool":
            fits = isinstance(value, bool)
        elif self.kind == "text":
            fits = isinstance(value, str) and bool(value)
            fits = fits and (self.pattern is None or bool(re.fullmatch(self.pattern, value)))
        elif self.kind == "items":
            fits = (isinstance(value, tuple) and self.length[0] <= len(value)
                    and (self.length[1] is None or len(value) <= self.length[1]) and self._items_allowed(value))  # fmt: skip
        elif self.kind == "path":
            fits = isinstance(value, str) and bool(value.strip())
        elif self.kind == "mapping":
            fits = (isinstance(value, dict) and all(isinstance(k, str) and k for k in value)
                    and self._items_allowed(value.values()))  # fmt: skip
        else:
            fits = isinstance(value, self.settings)
        return fits and (self.predicate is None or bool(self.predicate(value)))

    def _items_allowed(self, values: Any) -> bool:
        """Every value of an items or mapping setting follows `item` (any does without one)."""
        return self.item is None or all(v is not None and self.item.allows(v) for v in values)

    def _in_range(self, value: Any) -> bool:
        # bool is an int to Python, and NaN passes every comparison; neither is a number a setting means.
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        if self.means is not None:
            return self.means
        if self.choices is not None:
            return "must be one of " + ", ".join(str(c) for c in self.choices)
        if self.kind == "bool":
            return "must be true or false"
        if self.kind == "text":
            return "must be a non-empty string" if self.pattern is None else f"must match {self.pattern}"
        if self.kind == "path":
            return f"must be the path of a {'folder' if self.path == 'dir' else 'file'}"
        if self.kind == "settings":
            return f"must be {self.settings.__name__} settings"
        if self.kind == "mapping":
            each = f"; each value {self.item.describe()}" if self.item is not None else ""
            return f"must be a mapping of names to values{each}"
        if self.kind == "items":
            fewest, most = self.length
            count = (f"{fewest} " if fewest == most else f"{fewest}–{most} " if most is not None
                     else f"at least {fewest} " if fewest else "")  # fmt: skip
            each = f"; each {self.item.describe()}" if self.item is not None else ""
            return f"must be a list of {count}items{each}"
        if self.low is not None and self.high is not None:
            return (f"must lie in {'(' if self.low_open else '['}{_bound(self.low)}, "
                    f"{_bound(self.high)}{')' if self.high_open else ']'}")  # fmt: skip
        if self.low == 0:
            return "must be positive" if self.low_open else "must not be negative"
        if self.low is not None:
            return f"must be {'above' if self.low_open else 'at least'} {self.low}"
        if self.high is not None:
            return f"must be {'below' if self.high_open else 'at most'} {self.high}"
        return "must be a finite number"

    def check(self, name: str, value: Any) -> None:
        if value is not None and not self.allows(value):
            shown = repr(value)
            raise SettingError(name, f"{self.describe()}, got {shown if len(shown) <= 80 else shown[:77] + '...'}")

    def missing_at(self, value: Any) -> str | None:
        """What is missing on this machine for a path (or the items' paths) that must exist; None: nothing."""
        if self.kind == "items" and self.item is not None:
            return next((found for v in value or () if (found := self.item.missing_at(v))), None)
        if self.kind != "path" or not self.must_exist or not value:
            return None
        path = Path(value)
        if self.holds is not None:  # a folder that is not there holds nothing either: one message for both
            pattern, what = self.holds
            return None if list(path.glob(pattern)) else f"no {what} in {value}"
        if not path.exists():
            return f"{self.missing} {value}"
        if path.is_dir() != (self.path == "dir"):
            wanted, found = ("folder", "file") if self.path == "dir" else ("file", "folder")
            return f"{value} is a {found}, not a {wanted}"
        return None


KINDS = ("number", "bool", "text", "items", "path", "settings", "mapping")

# Rules several settings share.
FLAG = Rule(kind="bool")
FINITE = Rule()  # any finite number: a level in dB, say, where every value means something
TEXT = Rule(kind="text")


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else str(float(value))


# numpy's seeds (RandomState, hence Optuna's samplers) take [0, 2**32 - 1]; torch takes more, but one rule for every
# seed keeps a seed that works in one place from failing in another.
SEED_HIGH = 2**32 - 1


# A learning rate above this moves every weight by more than its own size in one step: nothing trains, and a
# search range reaching 1e300 only overflows.
MAX_LR = 10.0


def seed_setting(default: int = 0, *, derived: int = 0, cache_key: bool | None = None) -> Any:
    """A seed's field: in numpy's range, less `derived` when seeds up to seed + derived are made from it."""
    return setting(default, low=0, high=SEED_HIGH - derived, cache_key=cache_key)


def setting(default: Any = MISSING, *, low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False, choices: tuple | None = None, rule: Rule | None = None,
            cache_key: bool | None = None, default_factory: Any = MISSING) -> Any:  # fmt: skip
    """A dataclass field whose values follow a `Rule`: a range (positive: low=0, low_open=True), `choices`, or
    any other `rule`. `cache_key`: whether the setting changes what is trained, so cached results made with
    another value must not be reused (None: not decided, which the classes with a cache refuse)."""
    if rule is None and (low is not None or high is not None or choices is not None):
        rule = Rule(low, high, low_open, high_open, None if choices is None else tuple(choices))
    return field(default=default, default_factory=default_factory, metadata={"rule": rule, "cache_key": cache_key})


def flag(default: bool, *, cache_key: bool | None = None) -> Any:
    """A True/False setting."""
    return setting(default, rule=FLAG, cache_key=cache_key)


def path_setting(kind: str, *, must_exist: bool = True, holds: tuple[str, str] | None = None, missing: str = "nothing at",
                 many: bool = False, cache_key: bool | None = None) -> Any:  # fmt: skip
    """An optional path to a file or folder (`kind` "file" or "dir"), made absolute where the settings are read
    (spaces/space.py), since trials run in other working directories; `many`: a tuple of them (default empty)."""
    rule = Rule(kind="path", path=kind, must_exist=must_exist, holds=holds, missing=missing)
    if many:
        return setting((), rule=Rule(kind="items", item=rule), cache_key=cache_key)
    return setting(None, rule=rule, cache_key=cache_key)


def nested(cls: type) -> Any:
    """A field holding settings of their own (`cls`, a Settings class), its defaults by default."""
    return setting(default_factory=cls, rule=Rule(kind="settings", settings=cls))


def rule_of(cls: type, name: str) -> Rule | None:
    """The rule of setting `name` of the settings class `cls` (None: any value of its type)."""
    for f in fields(cls):
        if f.name == name:
            return f.metadata.get("rule")
    return None


def check(settings: Any) -> None:
    """Raise SettingError for the first field of `settings` outside its rule."""
    for f in fields(settings):
        rule = f.metadata.get("rule")
        if rule is not None:
            rule.check(f.name, getattr(settings, f.name))


def path_fields(settings: Any) -> list[tuple[str, Rule]]:
    """(name, rule) of the settings' paths: fields of kind path, or items of paths."""
    found = []
    for f in fields(settings):
        rule = f.metadata.get("rule")
        if rule is not None and (rule.kind == "path" or (rule.kind == "items" and rule.item is not None
                                                         and rule.item.kind == "path")):  # fmt: skip
            found.append((f.name, rule))
    return found


def cache_key_fields(settings: Any) -> dict[str, Any]:
    """The settings whose field is flagged `cache_key=True`, by name: what a cached result made from them depends on."""
    return {f.name: getattr(settings, f.name) for f in fields(settings) if f.metadata.get("cache_key")}


def check_step_budget(train_steps: int, epochs: int) -> None:
    """A step budget gives every epoch (the unit of reports and early stopping) at least one step."""
    if train_steps and train_steps < epochs:
        raise SettingError("train_steps", f"{train_steps} must be 0 (epochs passes over the subset) or at least epochs "
                                          f"({epochs}), so every epoch takes a step")  # fmt: skip


S = TypeVar("S", bound="Settings")


@dataclass(frozen=True)
class Settings:
    """Base of every settings class (a frozen dataclass): no instance breaks a rule of its fields, however it was
    made, and `from_dict` refuses keys the class does not know. A subclass with checks across fields runs them in
    its own `__post_init__`, after `super().__post_init__()`."""

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def from_dict(cls: type[S], values: dict) -> S:
        """`cls(**values)`, refusing a key `cls` has no setting for (a typo would otherwise be dropped silently).
        As JSON and YAML spell them: a list for a tuple of items, a mapping for nested settings."""
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise SettingError(str(key), f"{cls.__name__} has no such setting{suggest(str(key), set(known))}")
            rule = known[key].metadata.get("rule")
            if rule is not None and rule.kind == "items" and isinstance(value, list):
                value = tuple(value)
            elif rule is not None and rule.kind == "settings" and isinstance(value, dict):
                value = rule.settings.from_dict(value)
            kwargs[key] = value
        return cls(**kwargs)


def suggest(word: str, options: set[str]) -> str:
    """' (did you mean 'x'?)' for the option nearest `word`, or nothing."""
    if len(word) > 64:  # difflib is quadratic; nothing that long is a near miss
        return ""
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
