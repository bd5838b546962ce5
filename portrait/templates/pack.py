"""The template pack format: a folder with an image and a template.toml, read and validated here.

    templates/studio-grey/
        template.jpg        the portrait whose face slot(s) receive the user's face
        template.toml       settings (below), validated on load
        .faces.json         face boxes and landmarks detected from the image (a cache, never typed;
                            rebuilt when the image's sha256 or the face engines change)

template.toml (every key optional except `name`):

    name = "studio-grey"
    description = "Head and shoulders on a studio-grey backdrop"
    source = "scikit-image data/astronaut.png (NASA photo S114-E-5000)"   # where the image came from
    licence = "public-domain: a work of the US government (NASA)"        # its licence, with the reason
    tags = ["head-and-shoulders", "studio", "colour", "frontal"]         # framing, setting, colour/bw, view
    image = "template.jpg"              # default: the folder's only image file
    prompt = "a studio portrait photo of a person, soft light"
    negative_prompt = "blurry, deformed"
    faces = [0]                         # face slots to replace; slots are numbered left to right
    pins = [[120, 80, 210, 170]]        # optional: boxes (image px) that are slots whatever the detectors say
    seed = 1234
    [inpaint]                           # pass 1: the face
    strength = 0.45
    steps = 30
    guidance_scale = 7.0
    controlnets = { canny = 0.5, openpose = 0.5, color = 0.85 }   # unset: the base's recipe (SD 1.5: these;
    [edge]                              # pass 2: the ring around the face      SDXL: canny 0.5 only)
    strength = 0.3
    steps = 20
    controlnets = { tile = 1.0, canny = 1.0 }                       # unset: SD 1.5 these, SDXL canny 1.0
    [style]
    lora = "styles/film.safetensors"    # a file (relative to the template folder) or a manifest model name
    weight = 0.6
    [output]
    max_side = 1024                     # the template image is resized to this before processing
    upscale = 2.0                       # final super-resolution factor (1 = none)
    [measured]                          # written by `templates add` from face slot faces[0]; never typed
    skin_tone = 4                       # Monk scale 1..10 (0: unknown, e.g. black and white)
    ita = 41.5                          # individual typology angle of the face skin, degrees
    yaw = -3.2                          # head turn, degrees
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..errors import TemplateError
from ..generate.template_inpaint import PassSettings
from ..imageio import image_files
from ..settings import PACK_NAME_RE, PACK_TAG_RE, TomlReader, read_toml
from .model import DEFAULT_EDGE, DEFAULT_INPAINT, TOML_NAME, Template
from .slots import PREVIEW_NAME, parse_pins

NAME_RE = PACK_NAME_RE


class _Reader(TomlReader):
    """template.toml's reader: TomlReader's typed access (TemplateError naming the file and the key) and
    the pass tables."""

    def __init__(self, path: Path, data: dict):
        super().__init__(path, data, TemplateError)

    def pass_settings(self, key: str, default: PassSettings) -> PassSettings:
        """A pass table read into PassSettings: types checked here, limits by PassSettings.problem()."""
        t = self.table(key)
        self.unknown(t, ("strength", "steps", "guidance_scale", "controlnets"), f"{key}.")
        nets = t.get("controlnets", default.controlnets)
        if nets is not None and not isinstance(nets, dict):
            raise self.fail(f"{key}.controlnets", f"must be a table of name = scale, got {type(nets).__name__}")
        settings = PassSettings(
            strength=self.get(t, "strength", f"{key}.strength", float, default.strength),
            steps=self.get(t, "steps", f"{key}.steps", int, default.steps),
            controlnets=None if nets is None else {n: self.get(nets, n, f"{key}.controlnets.{n}", float) for n in nets},
            guidance_scale=self.get(t, "guidance_scale", f"{key}.guidance_scale", float, default.guidance_scale))
        bad = settings.problem()
        if bad is not None:
            raise self.fail(f"{key}.{bad[0]}", bad[1])
        return settings


TOP_KEYS = ("name", "description", "image", "prompt", "negative_prompt", "faces", "pins", "seed", "inpaint", "edge",
            "style", "output", "source", "licence", "tags", "measured")
TAG_RE = PACK_TAG_RE
# The tag vocabulary of the bundled packs, by facet (a user's pack may add its own tags).
TAG_FACETS = {"framing": ("head-and-shoulders", "half-length"), "setting": ("studio", "office", "outdoor", "formal"),
              "colour": ("colour", "bw"), "view": ("frontal", "three-quarter")}
MEASURED_KEYS = {"skin_tone": int, "ita": float, "yaw": float}


def _measured(r: "_Reader") -> dict:
    t = r.table("measured")
    r.unknown(t, MEASURED_KEYS, "measured.")
    return {k: r.get(t, k, f"measured.{k}", kind) for k, kind in MEASURED_KEYS.items() if k in t}


def _find_image(directory: Path, r: _Reader) -> Path:
    named = r.file(r.data, "image", "image", directory)
    if named is not None:
        return named
    found = [p for p in image_files(directory) if p.name != PREVIEW_NAME]
    if len(found) != 1:
        raise r.fail("image", f"is needed: the folder holds {len(found)} image files, set image = \"...\"")
    return found[0]


def parse_template(directory: str | Path) -> Template:
    """Read and validate `directory`/template.toml (no image decoding, no face detection)."""
    directory = Path(directory)
    path = directory / TOML_NAME
    data = read_toml(path, TemplateError, "template")
    r = _Reader(path, data)
    r.unknown(data, TOP_KEYS)
    name = r.name(directory.name)
    faces = data.get("faces", [0])
    if not isinstance(faces, list) or not faces or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 64
                                                           for i in faces) or len(set(faces)) != len(faces):
        raise r.fail("faces", f"must be a non-empty list of distinct face slots (integers 0..63), got {faces!r}")
    style, output = r.table("style"), r.table("output")
    r.unknown(style, ("lora", "weight"), "style.")
    r.unknown(output, ("max_side", "upscale"), "output.")
    return Template(
        name=name,
        directory=directory,
        image_path=_find_image(directory, r),
        description=r.get(data, "description", "description", str, ""),
        prompt=r.get(data, "prompt", "prompt", str, Template.prompt),
        negative_prompt=r.get(data, "negative_prompt", "negative_prompt", str, Template.negative_prompt),
        faces=tuple(faces),
        pins=parse_pins(data.get("pins", []), r.fail),
        seed=r.get(data, "seed", "seed", int, None, lo=0, hi=2**63 - 1),
        inpaint=r.pass_settings("inpaint", DEFAULT_INPAINT),
        edge=r.pass_settings("edge", DEFAULT_EDGE),
        style_lora=r.get(style, "lora", "style.lora", str, None),
        style_weight=r.get(style, "weight", "style.weight", float, 0.6, lo=0.0, hi=2.0),
        max_side=r.get(output, "max_side", "output.max_side", int, 1024, lo=256, hi=8192),
        upscale=r.get(output, "upscale", "output.upscale", float, 2.0, lo=1.0, hi=8.0),
        source=r.get(data, "source", "source", str, ""),
        licence=r.get(data, "licence", "licence", str, ""),
        tags=r.tags(),
        measured=_measured(r),
    )



def measure_template(t: Template, face_analysis=None) -> dict:
    """template.toml's [measured] table, from the first replaced slot's face: its Monk skin tone (0 for a
    black-and-white image), ITA and yaw. (No face shape: dlib5's five points are fitted to a fixed
    geometry, so their ratios are the same for every face.)"""
    from ..post.skin_tone import skin_tone

    face = t.slot_faces(face_analysis)[t.faces[0]]
    tone = skin_tone(t.image(), face)
    return {"skin_tone": tone.monk, "ita": round(tone.ita, 1), "yaw": round(float(face.yaw), 1)}


def write_measured(t: Template, face_analysis=None) -> Template:
    """Measure `t` and write [measured] into its template.toml (other keys kept as they are)."""
    import tomli_w

    doc = tomllib.loads(t.toml_path.read_text(encoding="utf-8"))
    doc["measured"] = measure_template(t, face_analysis)
    t.toml_path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return parse_template(t.directory)
