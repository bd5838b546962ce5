"""A template reference as a user writes one: a template name, a template folder, an image file (a one-off
template), or a Template; each loaded and checked before any photo is processed, one TemplateError naming
every bad one and what is available."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import TemplateError
from ..imageio import IMAGE_EXTENSIONS
from .library import list_templates, load_template
from .model import Template
from .pack import NAME_RE


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
