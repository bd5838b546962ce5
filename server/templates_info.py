"""The template and style lists of `GET /api/v1/templates`, `/styles` and the web form, with cached JPEG thumbnails."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flask import url_for
from PIL import Image

from portrait.templates import list_templates, load_template

from .errors import NotFound

THUMB_SIDE = 320


def template_list(tags=()) -> list[dict]:
    """Every template on the search path with all of `tags`: name, description, slots, tags, provenance,
    measured skin tone and yaw, and its thumbnail's URL."""
    return [{"name": t.name, "description": t.description, "faces": list(t.faces), "tags": list(t.tags),
             "source": t.source, "licence": t.licence, "measured": dict(t.measured),
             "thumbnail_url": url_for("api.thumbnail", name=t.name, _external=True)}
            for t in list_templates() if set(tags) <= set(t.tags)]


def style_list(tags=()) -> list[dict]:
    """Every style pack on the search path with all of `tags`: name, description, aspect, pose, provenance."""
    from portrait.styles import list_styles

    return [{"name": st.name, "description": st.description, "aspect": f"{st.aspect[0]}:{st.aspect[1]}",
             "pose": st.pose.control if st.pose else None, "tags": list(st.tags), "source": st.source,
             "licence": st.licence} for st in list_styles() if set(tags) <= set(st.tags)]


def thumbnail_path(name: str, data_dir: Path) -> Path:
    """A square-cropped JPEG of the template's image, made once per image content (data dir cache)."""
    known = {t.name: t for t in list_templates()}
    if name not in known:  # only names from the list: never a path from the URL
        raise NotFound(f"template '{name}' not found (GET /api/v1/templates lists them)")
    template = load_template(known[name].directory)
    digest = hashlib.sha256(template.image_path.read_bytes()).hexdigest()[:16]
    out = Path(data_dir) / "thumbnails" / f"{digest}.jpg"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(template.image_path) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, max(0, (im.height - side) // 3)
            im = im.crop((left, top, left + side, top + side)).resize((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
            tmp = out.with_suffix(f".{os.getpid()}.tmp")
            im.save(tmp, "JPEG", quality=85)
            os.replace(tmp, out)
    return out
