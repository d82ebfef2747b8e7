"""Typed settings: each constraint declared on the field it constrains, and enforced when settings are made.

    kd_lambda: float = setting(0.02, low=0.0, high=1.0)  # weight of the label loss
    arch: str = setting("passt_tiny", choices=ARCHS)

`setting` keeps a `Rule` in the field's metadata. A settings class calls `check(self)` in its
`__post_init__`, so no instance breaks a rule, however it was made; `from_dict` refuses keys the
class does not know. The space parser (search/space.py) reads the same rules to check a searched
range, so each rule is written once, beside its field.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


class SettingError(ValueError):
    """A setting outside its rule, or a key no setting has; the message starts with the setting's name."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem

    def __reduce__(self) -> tuple:  # a trial's error crosses processes pickled
        return SettingError, (self.name, self.problem)


@dataclass(frozen=True)
class Rule:
    """The values a setting may take: a range (each end open or closed) or a list of choices. None passes
    (the settings that may be None say so in their type)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is outside
    high_open: bool = False
    choices: tuple | None = None

    def allows(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        if self.choices is not None:
            return "must be one of " + ", ".join(str(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return (f"must lie in {'(' if self.low_open else '['}{_bound(self.low)}, "
                    f"{_bound(self.high)}{')' if self.high_open else ']'}")  # fmt: skip
        if self.low == 0:
            return "must be positive" if self.low_open else "must not be negative"
        if self.low is not None:
            return f"must be {'above' if self.low_open else 'at least'} {self.low}"
        return f"must be {'below' if self.high_open else 'at most'} {self.high}"

    def check(self, name: str, value: Any) -> None:
        if value is not None and not self.allows(value):
            raise SettingError(name, f"{self.describe()}, got {value!r}")


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else str(float(value))


# numpy's seeds (RandomState, hence Optuna's samplers) take [0, 2**32 - 1]; torch takes more, but one rule for every
# seed keeps a seed that works in one place from failing in another.
SEED_HIGH = 2**32 - 1


# A learning rate above this moves every weight by more than its own size in one step: nothing trains, and a
# search range reaching 1e300 only overflows.
MAX_LR = 10.0


def seed_setting(default: int = 0, *, derived: int = 0) -> Any:
    """A seed's field: in numpy's range, less `derived` when seeds up to seed + derived are made from it."""
    return setting(default, low=0, high=SEED_HIGH - derived)


def setting(default: Any = MISSING, *, low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False, choices: tuple | None = None, default_factory: Any = MISSING) -> Any:  # fmt: skip
    """A dataclass field whose values follow a `Rule` (positive: low=0, low_open=True)."""
    rule = Rule(low, high, low_open, high_open, None if choices is None else tuple(choices))
    return field(default=default, default_factory=default_factory, metadata={"rule": rule})


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


def check_step_budget(train_steps: int, epochs: int) -> None:
    """A step budget gives every epoch (the unit of reports and early stopping) at least one step."""
    if train_steps and train_steps < epochs:
        raise SettingError("train_steps", f"{train_steps} must be 0 (epochs passes over the subset) or at least epochs "
                                          f"({epochs}), so every epoch takes a step")  # fmt: skip


def from_dict(cls: type[T], values: dict) -> T:
    """`cls(**values)`, refusing a key `cls` has no setting for (a typo would otherwise be dropped silently)."""
    names = {f.name for f in fields(cls)}
    for key in values:
        if key not in names:
            raise SettingError(str(key), f"{cls.__name__} has no such setting{suggest(str(key), names)}")
    return cls(**values)


def suggest(word: str, options: set[str]) -> str:
    """' (did you mean 'x'?)' for the option nearest `word`, or nothing."""
    if len(word) > 64:  # difflib is quadratic; nothing that long is a near miss
        return ""
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
