"""Frozen config dataclasses from plain mappings (the API's "options" object, a script's dict).

    RunConfig.from_dict({"variants": 3, "face": {"embedder": "arcface"}})

`from_dict(cls, data)` checks every key and value against the dataclass's fields and types before
building it (the dataclass's own __post_init__ then checks ranges and combinations): an unknown key
or a value of the wrong type is a ConfigError naming the key, the value and what was expected.
Nested config dataclasses (RunConfig.face) take a mapping of their own.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """`cls(**data)` after checking keys and value types; ConfigError naming the first problem."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: options must be an object of name: value, "
                          f"got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(f"unknown option '{where}{unknown[0]}' (allowed: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _value(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _value(kind, v, key: str):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if v is None:
            if type(None) in args:
                return None
            raise ConfigError(f"option '{key}' must not be null")
        choices = [a for a in args if a is not type(None)]
        problems = []
        for a in choices:
            try:
                return _value(a, v, key)
            except ConfigError as exc:
                problems.append(str(exc))
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"option '{key}' has a bad value {v!r} (expected {_name(kind)})")
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, v, f"{key}.")
    if kind is Any:
        return v
    if origin is tuple or kind is tuple:
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
            raise _bad(key, v, "a list")
        item = args[0] if args else Any
        return tuple(_value(item, x, key) for x in v)
    if origin is typing.Literal:
        if v not in args:
            raise ConfigError(f"option '{key}' must be one of {', '.join(map(str, args))}, got {v!r}")
        return v
    if kind is bool:
        if not isinstance(v, bool):
            raise _bad(key, v, "true or false")
        return v
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(key, v, "an integer")
        return v
    if kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _bad(key, v, "a number")
        return float(v)
    if kind is str:
        if not isinstance(v, str):
            raise _bad(key, v, "a string")
        return v
    if kind is Path:
        if not isinstance(v, (str, Path)):
            raise _bad(key, v, "a path")
        return Path(v)
    return v


def _bad(key: str, v, expected: str) -> ConfigError:
    return ConfigError(f"option '{key}' must be {expected}, got {type(v).__name__} {v!r}")


def _name(kind) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(kind) if a is not type(None))


def check_limits(config) -> None:
    """Every field named in the config class's LIMITS ({field: (lo, hi)}) within its range (None allowed
    where the field's default is None). The CLI's options read the same table (`cli.common.ranged`)."""
    for key, (lo, hi) in type(config).LIMITS.items():
        default = type(config).__dataclass_fields__[key].default
        check_range(key, getattr(config, key), lo, hi, optional=default is None)


def check_range(key: str, value, lo=None, hi=None, *, optional: bool = False) -> None:
    """ConfigError unless lo <= value <= hi (None allowed when optional)."""
    if value is None and optional:
        return
    if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ConfigError(f"option '{key}' must be in {rng}, got {value!r}")


def check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"option '{key}' must be one of {', '.join(map(str, choices))}, got {value!r}")


# -- pack files (template.toml, style.toml) -------------------------------------------------------------
PACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PACK_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def read_toml(path: Path, error: type[Exception], what: str) -> dict:
    """`path` parsed as TOML; `error` naming the file when it is missing or unreadable (`what`: the folder's
    kind, for the missing-file message)."""
    if not path.is_file():
        raise error(f"{path}: not found (a {what} folder needs a {path.name})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{path}: cannot parse ({exc})") from exc


class TomlReader:
    """Typed access to a parsed pack file; every error (of class `error`) names the file and the key."""

    def __init__(self, path: Path, data: dict, error: type[Exception] = ConfigError):
        self.path, self.data, self.error = path, data, error

    def fail(self, key: str, msg: str) -> Exception:
        return self.error(f"{self.path}: key '{key}' {msg}")

    def get(self, table: dict, key: str, full: str, kind, default=None, *, lo=None, hi=None, lo_open=False):
        if key not in table:
            return default
        v = table[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if kind is str and not isinstance(v, str) or kind is int and (not isinstance(v, int) or isinstance(v, bool)) \
                or kind is float and not isinstance(v, float):
            raise self.fail(full, f"must be {kind.__name__}, got {type(v).__name__} {v!r}")
        if kind is float and not math.isfinite(v):
            raise self.fail(full, f"must be finite, got {v!r}")
        if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and v > hi:
            rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
            raise self.fail(full, f"must be in {rng}, got {v!r}")
        return v

    def table(self, key: str, within: dict | None = None) -> dict:
        t = (self.data if within is None else within).get(key.rsplit(".", 1)[-1], {})
        if not isinstance(t, dict):
            raise self.fail(key, f"must be a table, got {type(t).__name__}")
        return t

    def unknown(self, table: dict, allowed, prefix: str = "") -> None:
        extra = sorted(set(table) - set(allowed))
        if extra:
            raise self.fail(prefix + extra[0], f"is unknown (allowed: {', '.join(sorted(allowed))})")

    def name(self, default: str) -> str:
        """The pack's `name` (default: its folder's), lower-case letters, digits, '-' or '_'."""
        name = self.get(self.data, "name", "name", str, default)
        if not PACK_NAME_RE.match(name):
            raise self.fail("name", f"must be lower-case letters, digits, '-' or '_' (max 64), got {name!r}")
        return name

    def tags(self) -> tuple[str, ...]:
        tags = self.data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and PACK_TAG_RE.match(t) for t in tags):
            raise self.fail("tags", f"must be a list of tags (lower-case letters, digits, '-'; max 32), got {tags!r}")
        return tuple(dict.fromkeys(tags))

    def file(self, table: dict, key: str, full: str, directory: Path) -> Path | None:
        """A file named by `key`, inside `directory` (no absolute path, no '..'), that exists; None when unset."""
        name = self.get(table, key, full, str)
        if name is None:
            return None
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise self.fail(full, f"must be a file name inside the pack folder, got {name!r}")
        p = directory / name
        if not p.is_file():
            raise self.fail(full, f"names {name!r}, which does not exist in {directory}")
        return p


def find_packs(dirs, toml_name: str, parse, error: type[Exception], on_error=None) -> list:
    """Every pack (a sub-folder holding `toml_name`, read by `parse`) in `dirs`, sorted by name; a name in
    an earlier folder hides later ones. A pack that `parse` refuses with `error` is skipped and passed to
    `on_error(folder, exc)`."""
    seen: dict = {}
    for d in (Path(x) for x in dirs):
        if not d.is_dir():
            continue
        for sub in sorted(p for p in d.iterdir() if not p.name.startswith(".") and (p / toml_name).is_file()):
            try:
                pack = parse(sub)
            except error as exc:
                if on_error:
                    on_error(sub, exc)
                continue
            seen.setdefault(pack.name, pack)
    return sorted(seen.values(), key=lambda p: p.name)
