"""Checks that run before any photo is processed (like diffusers' `check_inputs`): every template the user
named (a name, a folder or an image file), every face slot given another person, every option.

A job that would fail on its third template after preprocessing twenty photos fails here instead, in a
second, naming what is wrong and what is available. `portrait run`, `generate` and `batch` (and the job
layer behind them) call these; they raise typed PortraitErrors (the CLI's exit code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import ConfigError, TemplateError
from .imageio import IMAGE_EXTENSIONS
from .templates import NAME_RE, Template, list_templates, load_template


def available_templates() -> list[str]:
    """Names of the templates on the search path (broken ones left out)."""
    return [t.name for t in list_templates()]


def _available_hint() -> str:
    names = available_templates()
    return (f"available templates: {', '.join(names)}" if names else "no templates are installed") + \
        " (a template can also be a folder with a template.toml, an image file, or auto[:N] for the N that suit" \
        " the photos best; `portrait templates list` shows their tags)"


def is_image_ref(ref: str | Path) -> bool:
    """A template reference naming an image file (rather than a template name or folder)."""
    p = Path(ref)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not (p / "template.toml").is_file()


def template_from_image(path: str | Path, face_analysis=None) -> Template:
    """A one-off template from an image file: its faces detected now (no cache written beside the user's
    image), the leftmost face is slot 0 and is replaced, default prompts and settings."""
    import re

    path = Path(path)
    if not path.is_file():
        raise TemplateError(f"template image {path} does not exist")
    stem = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_") or "image"
    name = stem if NAME_RE.match(stem) else f"image-{stem[:50]}".strip("-")
    t = Template(name=name, directory=path.parent, image_path=path, description=f"image {path.name}",
                 _no_disk_cache=True)  # its faces are kept on the Template only: nothing is written beside the image
    t.detected_faces(face_analysis)  # detected now: TemplateError when none is usable
    return t


def load_template_ref(ref: str | Path | Template, face_analysis=None) -> Template:
    """A Template from a name, a template folder, an image file, or a Template (returned as is)."""
    if isinstance(ref, Template):
        return ref
    if is_image_ref(ref):
        return template_from_image(ref, face_analysis)
    return load_template(ref)


def check_template(t: Template, face_analysis=None) -> Template:
    """The template's image decodes and has a usable face in every slot it replaces (TemplateError)."""
    t.image()
    t.slot_faces(face_analysis)
    return t


def resolve_templates(refs: Iterable[str | Path | Template], face_analysis=None) -> list[Template]:
    """Every reference loaded and checked, in order; one TemplateError naming each bad one (and why) and
    listing the available templates. Duplicates are kept once."""
    found: list[Template] = []
    problems: list[str] = []
    seen: set[str] = set()
    for ref in refs:
        key = str(ref.image_path if isinstance(ref, Template) else ref)
        if key in seen:
            continue
        seen.add(key)
        try:
            found.append(check_template(load_template_ref(ref, face_analysis), face_analysis))
        except TemplateError as exc:
            problems.append(str(exc))
    if problems:
        raise TemplateError(f"{'; '.join(problems)}; {_available_hint()}")
    if not found:
        raise TemplateError(f"no template given; {_available_hint()}")
    return found


def replaced_slots(templates: Sequence[Template]) -> dict[str, tuple[int, ...]]:
    """name → the face slots each template replaces."""
    return {t.name: tuple(t.faces) for t in templates}


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
                             strength: float | None = None) -> None:
    """Each template's two diffusion passes, with the --steps / --strength overrides, leave at least one
    denoising step (ConfigError naming the template and the pass otherwise)."""
    from .generate.template_jobs import job_from_template

    for t in templates:
        job = job_from_template(t, steps=steps, strength=strength, face_analysis=face_analysis)
        for label, settings in (("pass 1", job.pass1), ("pass 2", job.pass2)):
            try:
                settings.check(f"template {t.name} {label}")
            except ConfigError as exc:
                fix = "; raise --steps" if steps is not None else ""
                raise ConfigError(f"{exc}{fix}") from None


def check_photos_folder(path: str | Path, what: str = "photos folder") -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{p}: {what} does not exist" if not p.exists() else f"{p}: {what} is not a folder")
    return p
