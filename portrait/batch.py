"""A studio's batch: a CSV of customers (photos, templates, name), one output folder each.

The CSV is the studio's, but its names end up as folder names, so they are treated as untrusted: each
row's name is reduced to a safe folder name (no separators, no `..`, no NUL or control characters, no
hidden names), made unique, and its folder is checked to lie inside the output folder. A row's status
tells the truth: `done` (every template gave a portrait), `partial` (some did), `failed` (none did, or the
row could not start). The exit code sums the batch up: EXIT_ALL_DONE, EXIT_SOME_FAILED, EXIT_NONE_DONE.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ConfigError

EXIT_ALL_DONE = 0  # every row done
EXIT_SOME_FAILED = 1  # some rows failed or were partial, at least one gave portraits
EXIT_NONE_DONE = 2  # no row gave a portrait (or the batch could not start: a usage error)

MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class BatchRow:
    index: int  # 1-based data row number (the CSV line is index + 1)
    name: str  # a safe folder name, unique in the batch
    given_name: str  # the CSV's name as written ("" when the column is empty or missing)
    photos: Path
    templates: tuple[str, ...] = field(default_factory=tuple)  # empty: every installed template
    styles: tuple[str, ...] = field(default_factory=tuple)  # set: a `create` row (new scenes, no templates)


def safe_name(raw: str, index: int) -> str:
    """A folder name for a row: letters, digits, '.', '_' and '-' only (anything else, including path
    separators, NUL and control characters, becomes '_'), no leading dots, at most MAX_NAME characters;
    `rowNNN` when nothing usable is left."""
    text = unicodedata.normalize("NFKC", raw or "")
    text = _UNSAFE.sub("_", text).strip("._-")[:MAX_NAME].strip("._-")
    return text or f"row{index:03d}"


def unique_names(names: Iterable[str]) -> list[str]:
    """`names` with repeats suffixed -2, -3, ... (case-insensitively: two customers never share a folder,
    also on case-insensitive file systems)."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name[:MAX_NAME - len(str(n)) - 1]}-{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def row_dir(out_dir: str | Path, name: str) -> Path:
    """out_dir/name, refusing any name that would leave out_dir (defence in depth behind safe_name)."""
    base = Path(out_dir).absolute()
    target = (base / name).absolute()
    if target.parent != base or name in ("", ".", "..") or "\x00" in name:
        raise ConfigError(f"batch row name {name!r} is not a plain folder name inside {base}")
    return target


def read_manifest(path: str | Path) -> list[BatchRow]:
    """The rows of a batch CSV (header: photos[,templates][,styles][,name]); photos paths relative to the
    CSV's folder; templates and styles separated by ';' (a row with styles makes new scenes: `create`). ConfigError naming the file for an unreadable or headerless CSV."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
        rows = list(csv.DictReader(text.splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read batch manifest ({exc})") from exc
    if not rows or "photos" not in rows[0]:
        raise ConfigError(f"{path}: needs a header with at least a 'photos' column "
                          "(optional: 'templates' or 'styles' separated by ';', 'name') and one row per customer")
    names = unique_names(safe_name((r.get("name") or "").strip(), i) for i, r in enumerate(rows, 1))
    out = []
    for i, (r, name) in enumerate(zip(rows, names), 1):
        photos = Path((r.get("photos") or "").strip()).expanduser()
        if not photos.is_absolute():
            photos = path.parent / photos
        templates = tuple(t.strip() for t in (r.get("templates") or "").split(";") if t.strip())
        styles = tuple(t.strip() for t in (r.get("styles") or "").split(";") if t.strip())
        out.append(BatchRow(i, name, (r.get("name") or "").strip(), photos.absolute(), templates, styles))
    return out


def row_status(outputs: int, failures: int) -> str:
    """done: every template gave a portrait; partial: some did; failed: none did."""
    if outputs == 0:
        return "failed"
    return "partial" if failures else "done"


def exit_code(statuses: Sequence[str]) -> int:
    """EXIT_ALL_DONE when every row is done, EXIT_NONE_DONE when none gave a portrait, else EXIT_SOME_FAILED."""
    if statuses and all(s == "done" for s in statuses):
        return EXIT_ALL_DONE
    if all(s == "failed" for s in statuses):
        return EXIT_NONE_DONE
    return EXIT_SOME_FAILED
