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
