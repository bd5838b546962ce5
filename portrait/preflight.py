"""Checks that run before any photo is processed (like diffusers' `check_inputs`): every template the user
named (a name, a folder or an image file), every face slot given another person, every option.

A job that would fail on its third template after preprocessing twenty photos fails here instead, in a
second, naming what is wrong and what is available. `portrait run`, `generate` and `batch` (and the job
layer behind them) call these; they raise typed PortraitErrors (the CLI's exit code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .errors import ConfigError
from .templates import Template, replaced_slots


def check_slots(others: Mapping[int, object] | None, templates: Sequence[Template]) -> None:
    """Each slot given another person exists in at least one of the templates (ConfigError otherwise):
    their photos are not preprocessed for nothing."""
    if not others:
        return
    slots = replaced_slots(templates)
    every = {s for v in slots.values() for s in v}
    for n in sorted(others):
        if n not in every:
            listing = "; ".join(f"{name}: {', '.join(map(str, s))}" for name, s in slots.items())
            raise ConfigError(f"--slot {n}: no chosen template has face slot {n} (their slots: {listing}); "
                              "slots are numbered left to right from 0")


def check_diffusion_settings(templates: Sequence[Template], face_analysis=None, *, steps: int | None = None,
                             strength: float | None = None, arch: str = "sd15") -> list:
    """Each template's InpaintJob for an `arch` base, with the --steps / --strength overrides: a job's two
    passes are checked where it is made (InpaintJob), so a pass leaving no denoising step fails here, naming
    the template and the pass, before any photo is read or model loaded. Returns the jobs."""
    from .templates.painting import job_from_template

    try:
        return [job_from_template(t, steps=steps, strength=strength, face_analysis=face_analysis, arch=arch)
                for t in templates]
    except ConfigError as exc:
        fix = "; raise --steps" if steps is not None else ""
        raise ConfigError(f"{exc}{fix}") from None


def check_photos_folder(path: str | Path, what: str = "photos folder") -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{p}: {what} does not exist" if not p.exists() else f"{p}: {what} is not a folder")
    return p
