"""The template library: where packs are found and added.

Search path: the bundled packs (the checkout's `templates/`, or `portrait/bundled_templates/` in an installed
wheel), then the user's folder ($PORTRAIT_TEMPLATES_DIR, default ~/.local/share/portrait/templates), where
`portrait templates add` writes. A user template with the same name as a bundled one overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ImageError, TemplateError
from ..imageio import decode_image, save_image
from ..paths import bundled_folder, user_folder
from ..settings import find_packs
from .model import TOML_NAME, Template
from .pack import NAME_RE, parse_template, write_measured
from .slots import PREVIEW_NAME, draw_preview


def bundled_dir() -> Path:
    """The bundled packs: `portrait/bundled_templates/` in an installed wheel, else the checkout's `templates/`."""
    return bundled_folder("bundled_templates", "templates")


def user_dir() -> Path:
    return user_folder("PORTRAIT_TEMPLATES_DIR", "templates")


def template_dirs() -> list[Path]:
    """Folders searched for templates, highest priority first: the user's, then the bundled ones."""
    return [user_dir(), bundled_dir()]


def list_templates(dirs: Iterable[str | Path] | None = None,
                   on_error: Callable[[Path, TemplateError], None] | None = None) -> list[Template]:
    """Every template in `dirs` (default: the search path), sorted by name; a name found in an earlier
    folder hides later ones. Broken templates are skipped and passed to `on_error`."""
    return find_packs(template_dirs() if dirs is None else dirs, TOML_NAME, parse_template, TemplateError, on_error)


def load_template(name_or_dir: str | Path, dirs: Iterable[str | Path] | None = None) -> Template:
    """A template by folder path, or by name on the search path (TemplateError naming what was searched).

    A bare name means a folder of the current directory only when that folder holds a template.toml:
    `portrait run ... --template duo --out duo` must not take its own output folder for the template."""
    p = Path(name_or_dir)
    as_path = isinstance(name_or_dir, Path) or "/" in str(name_or_dir) or os.sep in str(name_or_dir)
    if (p / TOML_NAME).is_file() or (as_path and p.is_dir()):
        return parse_template(p)
    searched = template_dirs() if dirs is None else [Path(x) for x in dirs]
    for d in searched:
        if (d / str(name_or_dir) / TOML_NAME).is_file():
            return parse_template(d / str(name_or_dir))
    for t in list_templates(searched):
        if t.name == str(name_or_dir):
            return t
    raise TemplateError(f"template '{name_or_dir}' not found; searched {', '.join(str(d) for d in searched)} "
                        "(`portrait templates list` shows what is there)")


def bundled_names() -> set[str]:
    """Names of the templates that ship with portrait."""
    return {t.name for t in list_templates([bundled_dir()])}



def add_template(image_path: str | Path, name: str, dest_dir: str | Path | None = None, *, face_analysis=None,
                 overwrite: bool = False, force: bool = False, quality: int = 95, **fields) -> Template:
    """Create `dest_dir`/`name`/ from an image: validates that the image decodes and holds at least one
    face slot, writes the image, a template.toml (`fields` are its keys, e.g. prompt=..., faces=[0],
    pins=[[x0, y0, x1, y1]], inpaint={...}), the face cache and preview.jpg. Returns the loaded template.

    Atomic: the folder is built under a temporary name beside its destination and renamed into place
    only when everything checked out, so a failed add leaves nothing behind. A name that shadows a
    bundled template is refused unless `force`."""
    import shutil
    import tempfile

    import tomli_w


    if not NAME_RE.match(name):
        raise TemplateError(f"template name must be lower-case letters, digits, '-' or '_' (max 64), got {name!r}")
    dest = Path(dest_dir) if dest_dir is not None else user_dir()
    folder = dest / name
    if folder.exists() and not overwrite:
        raise TemplateError(f"{folder}: a template named '{name}' already exists (choose another name)")
    if not force and dest.resolve() != bundled_dir().resolve() and name in bundled_names():
        raise TemplateError(f"template name '{name}' would hide the bundled template of that name "
                            "(choose another name, or --force to override it)")
    try:
        rgb = decode_image(image_path).pixels
    except ImageError as exc:
        raise TemplateError(f"{image_path}: cannot be a template: {exc.reason}") from exc
    doc = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
    doc.setdefault("faces", [0])
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest))
    try:
        suffix = ".png" if Path(image_path).suffix.lower() == ".png" else ".jpg"
        img = save_image(rgb, tmp / f"template{suffix}", quality=quality)
        doc["image"] = img.name
        (tmp / TOML_NAME).write_text(tomli_w.dumps(doc), encoding="utf-8")
        t = parse_template(tmp)
        try:
            t.slot_faces(face_analysis)  # detects, checks the slots named in `faces`, writes the face cache
        except TemplateError as exc:
            raise TemplateError(str(exc).replace(str(tmp / TOML_NAME), f"{image_path}").replace(str(tmp), str(folder))) \
                from exc
        t = write_measured(t, face_analysis)
        draw_preview(t.image(), t.detected_faces(face_analysis), t.faces, tmp / PREVIEW_NAME)
        if folder.exists():  # overwrite: swap the old folder out only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=dest))
            folder.rename(old / name)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return parse_template(folder)
