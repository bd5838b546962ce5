"""Paths as a user reads them: relative paths (from the environment or the command line) are taken
against the current directory once, when they enter the program, and are absolute from then on.

A relative path resolved a second time against another folder is how `PORTRAIT_MODELS_DIR=tiny`
became `tiny/tiny/sd15`; an absolute one can be joined, printed and handed to another process safely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

# The environment variables that name folders or files.
PATH_VARIABLES = ("PORTRAIT_MODELS_DIR", "PORTRAIT_MODELS_CONFIG", "PORTRAIT_TEMPLATES_DIR", "PORTRAIT_STYLES_DIR")


def absolute(path: str | Path) -> Path:
    """`path` with `~` expanded and, when relative, joined to the current directory (no symlinks resolved:
    the path the user typed stays recognisable)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def resolve_env_paths(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Make every PATH_VARIABLES entry of `environ` (default os.environ) absolute, in place; returns the
    ones changed (name → new value). Called once at start-up by the CLI (and any long-running service)."""
    env = os.environ if environ is None else environ
    changed = {}
    for name in PATH_VARIABLES:
        value = env.get(name)
        if value:
            new = str(absolute(value))
            if new != value:
                env[name] = changed[name] = new
    return changed


def bundled_folder(shipped: str, checkout: str) -> Path:
    """A folder of packs that ships with portrait: `portrait/<shipped>/` in an installed wheel (setup.py
    ships the top-level `<checkout>/` there), else the checkout's `<checkout>/` beside the package (an
    editable install)."""
    package = Path(__file__).resolve().parent
    inside = package / shipped
    return inside if inside.is_dir() else package.parent / checkout


def user_folder(variable: str, kind: str) -> Path:
    """The user's own folder of `kind` packs: $`variable`, else $XDG_DATA_HOME/portrait/<kind>
    (default ~/.local/share/portrait/<kind>)."""
    env = os.environ.get(variable)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "portrait" / kind


TRAIN_DIR = "train"  # a preprocess output's training crops (preprocess.dataset writes it)


def train_folder(root: str | Path) -> Path:
    """The folder holding a training set's crops: ROOT/train for a preprocess output, else ROOT itself."""
    root = Path(root)
    return root / TRAIN_DIR if (root / TRAIN_DIR).is_dir() else root
