"""`--template auto[:N[:TAG,TAG]]`: the N single-face templates that suit this user best.

A template suits a user when fusion has the least to hide:
- its face turns the way the user's best photos do (yaw: the selected photos' median);
- its visible skin is close to the user's (ITA of the face skin, portrait.post.skin_tone): a
  black-and-white template shows no tone, so it costs a fixed `BW_TONE_COST`, as if 15 degrees of
  ITA apart, neither always chosen nor never;
- it carries every tag asked for (`auto:3:studio,colour`).

Cost = |yaw difference| / YAW_SCALE + |ITA difference| / ITA_SCALE; lowest first, ties by name.
The choice is recorded in result.json under `auto` with each term, so a user can see why.
(No face-shape term: dlib5's five points are fitted to a fixed geometry, so they carry no shape.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError
from .model import Template
from .pack import TAG_RE

AUTO_RE = re.compile(r"^auto(?::(\d+)(?::([a-z0-9,-]+))?)?$")
DEFAULT_N, MAX_N = 3, 12
YAW_SCALE, ITA_SCALE = 10.0, 15.0
BW_TONE_COST = 1.0


@dataclass(frozen=True)
class AutoRequest:
    n: int
    tags: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"auto:{self.n}" + (f":{','.join(self.tags)}" if self.tags else "")


@dataclass(frozen=True)
class UserLook:
    yaw: float   # median yaw of the selected photos, degrees
    ita: float   # ITA of the reference photo's face skin
    monk: int    # its Monk tone (0: unknown)

    def to_dict(self) -> dict:
        return {"yaw": round(self.yaw, 1), "ita": round(self.ita, 1), "skin_tone": self.monk}


@dataclass(frozen=True)
class Choice:
    template: str
    cost: float
    yaw: float
    ita: float | None  # None: a black-and-white template
    why: str

    def to_dict(self) -> dict:
        return {"template": self.template, "cost": round(self.cost, 3), "yaw": self.yaw, "ita": self.ita,
                "why": self.why}


def parse_auto(ref: object) -> AutoRequest | None:
    """An AutoRequest for "auto", "auto:N" or "auto:N:TAG,TAG"; None for any other template reference;
    ConfigError for a malformed auto spec."""
    if not isinstance(ref, str) or not ref.startswith("auto") or (ref != "auto" and not ref.startswith("auto:")):
        return None
    m = AUTO_RE.match(ref)
    if not m:
        raise ConfigError(f"template '{ref}': expected auto, auto:N or auto:N:TAG,TAG (N 1..{MAX_N})")
    n = int(m.group(1)) if m.group(1) else DEFAULT_N
    tags = tuple(t for t in (m.group(2) or "").split(",") if t)
    if not 1 <= n <= MAX_N:
        raise ConfigError(f"template '{ref}': N must be 1..{MAX_N}, got {n}")
    bad = [t for t in tags if not TAG_RE.match(t)]
    if bad:
        raise ConfigError(f"template '{ref}': {bad[0]!r} is not a tag")
    return AutoRequest(n, tags)


def candidates(templates: Iterable[Template], request: AutoRequest) -> list[Template]:
    """The single-face templates with every requested tag and a [measured] table; ConfigError when
    fewer than N are left, naming the tags."""
    found = [t for t in templates if len(t.faces) == 1 and "yaw" in t.measured and set(request.tags) <= set(t.tags)]
    if len(found) < request.n:
        what = f" with tags {', '.join(request.tags)}" if request.tags else ""
        raise ConfigError(f"template '{request.spec}': only {len(found)} single-face template(s){what} "
                          f"(`portrait templates list --tag TAG` shows them)")
    return found


def user_look(yaws: Sequence[float], ita: float, monk: int) -> UserLook:
    return UserLook(float(np.median(yaws)) if len(yaws) else 0.0, float(ita), int(monk))


def choose(user: UserLook, templates: Sequence[Template], n: int, exclude: Iterable[str] = ()) -> list[Choice]:
    """The `n` lowest-cost templates for `user` (module docstring), skipping names in `exclude`."""
    skip = set(exclude)
    scored = []
    for t in templates:
        if t.name in skip:
            continue
        yaw = float(t.measured["yaw"])
        bw = t.measured.get("skin_tone", 0) == 0 or user.monk == 0
        tone_cost = BW_TONE_COST if bw else abs(float(t.measured["ita"]) - user.ita) / ITA_SCALE
        yaw_cost = abs(yaw - user.yaw) / YAW_SCALE
        tone = "no colour to match" if bw else f"skin ITA {t.measured['ita']:.0f} vs yours {user.ita:.0f}"
        why = f"head turn {yaw:.0f} vs yours {user.yaw:.0f}; {tone}"
        scored.append(Choice(t.name, yaw_cost + tone_cost, yaw, None if bw else float(t.measured["ita"]), why))
    scored.sort(key=lambda c: (c.cost, c.template))
    return scored[:n]


@dataclass(frozen=True)
class AutoPick:
    """An auto request checked before any photo is read: its candidates loaded and their faces found;
    the choice among them is made once the user's photos are (`choose`)."""
    request: AutoRequest
    candidates: tuple[Template, ...]

    @property
    def name(self) -> str:
        return self.request.spec
