"""A space file read from disk (YAML data, never code) and the command line's `--set KEY=VALUE` applied to it.

Both give the raw mapping that `spaces.space.build_space` validates.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from spaces.errors import SpaceError, shown, suggest
from spaces.space import SCALAR_KEYS, SPACES_DIR, Schema, section_types, setting_names


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


def apply_override(raw: dict, assignment: str, schema: Schema) -> None:
    """Apply one `--set KEY=VALUE` (dotted keys for sections) to the raw mapping of a space of `schema`, in place."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise SpaceError(f"--set {shown(assignment)}: expected KEY=VALUE")
    parts = key.split(".")
    sections = section_types(schema)
    if len(parts) == 2 and parts[0] == "search":
        _override_search(raw, parts[1], text, schema)
        return
    if len(parts) == 1:
        names = setting_names(schema) | set(SCALAR_KEYS)
        if parts[0] not in names:
            raise SpaceError(f"--set {key}: unknown setting{suggest(parts[0], names)}")
    elif len(parts) == 2 and parts[0] in sections:
        names = {f.name for f in dataclasses.fields(sections[parts[0]])}
        if parts[1] not in names:
            raise SpaceError(f"--set {key}: {parts[0]} has no setting {shown(parts[1])}{suggest(parts[1], names)}")
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


def _override_search(raw: dict, name: str, text: str, schema: Schema) -> None:
    """`--set search.NAME=VALUE`: a range or list replaces NAME's search; a plain value fixes NAME at it
    (NAME leaves `search:` and becomes a fixed setting), the way to fix a setting the space file searches.
    `--set search.arm=[NAME, …]` keeps only those of the file's arms."""
    if name == "arm":
        _keep_arms(raw, text)
        return
    if name not in setting_names(schema):
        raise SpaceError(f"--set search.{name}: unknown setting{suggest(name, setting_names(schema))}")
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


def _keep_arms(raw: dict, text: str) -> None:
    arms = (raw.get("search") or {}).get("arm") if isinstance(raw.get("search"), dict) else None
    if not isinstance(arms, dict):
        raise SpaceError("--set search.arm: the space file has no arms (search.arm) to choose from")
    try:
        names = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        names = text
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or any(n not in arms for n in names):
        raise SpaceError(f"--set search.arm={text[:60]}: expected a list of the file's arms ({', '.join(map(str, arms))})")
    raw["search"]["arm"] = {n: arms[n] for n in names}
