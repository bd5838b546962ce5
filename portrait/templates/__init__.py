"""Templates: packs of a portrait whose face slots receive the user's face.

One package for the idea, one module per concern, each importing only those above it here:

    slots        which detected faces are slots (score, size, MMOD confirmation, pins), previews
    face_cache   a template image's slots, detected once and cached in .faces.json beside it
    model        the Template: settings, its image decoded once, its faces
    pack         the template.toml format, read and validated; [measured] written
    library      the search path (bundled, then the user's folder), lookup, `templates add`
    refs         what a user names (a name, a folder, an image file), resolved and checked up front
    choice       `--template auto[:N[:tags]]`: the templates that suit a user's photos
    painting     a template as the two-pass recipe's InpaintJobs (imports torch: import it by name)

The names below are the package's API; `portrait.templates.choice` and `portrait.templates.painting` are
imported by their own names (painting loads the diffusion stack).
"""

from .face_cache import CACHE_VERSION, DEFAULT_FACE_ENGINES, FACE_CACHE, MIN_FACE_PX, detect_template_faces, face_cache_name, template_faces
from .library import add_template, bundled_dir, bundled_names, list_templates, load_template, template_dirs, user_dir
from .model import DEFAULT_EDGE, DEFAULT_INPAINT, TOML_NAME, Template
from .pack import MEASURED_KEYS, NAME_RE, TAG_FACETS, TAG_RE, TOP_KEYS, measure_template, parse_template, write_measured
from .refs import (available_templates, check_template, is_image_ref, load_template_ref, replaced_slots,
                   resolve_templates, template_from_image)
from .slots import PREVIEW_NAME

__all__ = [
    "CACHE_VERSION", "DEFAULT_EDGE", "DEFAULT_FACE_ENGINES", "DEFAULT_INPAINT", "FACE_CACHE", "MEASURED_KEYS", "MIN_FACE_PX", "NAME_RE",
    "PREVIEW_NAME", "TAG_FACETS", "TAG_RE", "TOML_NAME", "TOP_KEYS", "Template", "add_template", "available_templates",
    "bundled_dir", "bundled_names", "check_template", "detect_template_faces", "face_cache_name", "is_image_ref",
    "list_templates", "load_template", "load_template_ref", "measure_template", "parse_template", "replaced_slots",
    "resolve_templates", "template_dirs", "template_faces", "template_from_image", "user_dir", "write_measured",
]
