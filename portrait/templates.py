"""Templates: a folder with an image and a template.toml.

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

Search path: the repository's `templates/` folder, then the user's folder ($PORTRAIT_TEMPLATES_DIR,
default ~/.local/share/portrait/templates), where `portrait templates add` writes. A user template
with the same name as a bundled one overrides it.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


from .errors import ImageError, TemplateError
from .faces.types import Face
from .generate.template_inpaint import PASS1, PASS2, PassSettings
from .imageio import DecodedImage, decode_image, image_files, save_image
from .models.manifest import sha256_file
from .paths import bundled_folder, user_folder
from .settings import PACK_NAME_RE, PACK_TAG_RE, TomlReader, find_packs, read_toml
from .template_slots import CONFIRMER, PREVIEW_NAME, choose_slots, parse_pins, slot_faces_of

TOML_NAME = "template.toml"
FACE_CACHE = ".faces.json"  # for the default face engines; other engines: face_cache_name()
DEFAULT_FACE_ENGINES = {"detector": "dlib-hog", "landmarks": "dlib5", "embedder": "dlib-resnet"}


def face_cache_name(engines: dict) -> str:
    """`.faces.json` for the default engines, else `.faces.DETECTOR.LANDMARKS.EMBEDDER.json`: one cache per
    engine set, so runs under another set (dlib68 landmarks, say) never overwrite each other."""
    core = {k: engines.get(k) for k in DEFAULT_FACE_ENGINES}
    if core == DEFAULT_FACE_ENGINES:
        return FACE_CACHE
    return f".faces.{core['detector']}.{core['landmarks']}.{core['embedder']}.json"
MIN_FACE_PX = 64  # a template face smaller than this (sqrt of box area) is too small to receive a face
NAME_RE = PACK_NAME_RE
CACHE_VERSION = 3  # 2: slots chosen by portrait.template_slots (score, size, MMOD confirmation, pins); 3: dlib5 pose from its own points


# template.toml's [inpaint] / [edge] defaults; ControlNets None: the base architecture's recipe (SD 1.5: PASS1 /
# PASS2; SDXL: canny only, template_inpaint.RECIPES), resolved when a job is made for a loaded base.
DEFAULT_INPAINT, DEFAULT_EDGE = replace(PASS1, controlnets=None), replace(PASS2, controlnets=None)


@dataclass
class Template:
    name: str
    directory: Path
    image_path: Path
    description: str = ""
    prompt: str = "a studio portrait photo of a person, high quality, detailed skin"
    negative_prompt: str = "blurry, deformed, lowres, bad anatomy, watermark"
    faces: tuple[int, ...] = (0,)
    pins: tuple[tuple[float, float, float, float], ...] = ()
    seed: int | None = None
    inpaint: PassSettings = DEFAULT_INPAINT
    edge: PassSettings = DEFAULT_EDGE
    style_lora: str | None = None
    style_weight: float = 0.6
    max_side: int = 1024
    upscale: float = 2.0
    source: str = ""
    licence: str = ""
    tags: tuple[str, ...] = ()
    measured: dict = field(default_factory=dict)
    _faces: dict = field(default_factory=dict, repr=False, compare=False)  # face engines -> faces
    _no_disk_cache: bool = field(default=False, repr=False, compare=False)  # a user's image: nothing written beside it
    _decoded_image: DecodedImage | None = field(default=None, repr=False, compare=False)

    @property
    def toml_path(self) -> Path:
        return self.directory / TOML_NAME

    def _decoded(self) -> DecodedImage:
        """Decoded once per Template; the pixels are read-only (every stage returns new images)."""
        if self._decoded_image is None:
            try:
                decoded = decode_image(self.image_path, max_side=self.max_side)
            except ImageError as exc:
                raise TemplateError(f"{self.image_path}: template image is unusable: {exc.reason}") from exc
            decoded.pixels.flags.writeable = False
            self._decoded_image = decoded
        return self._decoded_image

    def image(self) -> np.ndarray:
        """The template image, uint8 RGB (read-only), its longer side at most `output.max_side`
        (TemplateError when it cannot be decoded)."""
        return self._decoded().pixels

    def detected_faces(self, face_analysis=None) -> list[Face]:
        """Every face in image() coordinates, left to right (slot order), from the cache or detected now."""
        if face_analysis is None:
            from .faces import get_face_analysis

            face_analysis = get_face_analysis()
        key = tuple(sorted(face_analysis.engines().items()))  # faces found by other engines are other faces
        if key not in self._faces:
            if self._no_disk_cache:
                self._faces[key] = detect_template_faces(self.image(), face_analysis, self.image_path)
            else:
                faces = template_faces(self.image_path, face_analysis, self.pins)  # the cache: full-size coordinates
                scale = self._decoded().scale
                self._faces[key] = faces if scale == 1.0 else [f.scaled(scale) for f in faces]
        return self._faces[key]

    def slot_faces(self, face_analysis=None) -> dict[int, Face]:
        """The faces to replace, by slot; TemplateError if `faces` names a slot the image lacks."""
        found = self.detected_faces(face_analysis)
        missing = [i for i in self.faces if i >= len(found)]
        if missing:
            raise TemplateError(f"{self.toml_path}: key 'faces' names slot(s) {missing} but the image has "
                                f"{len(found)} usable face(s)")
        return {i: found[i] for i in self.faces}

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d.update(directory=str(self.directory), image_path=str(self.image_path), faces=list(self.faces),
                 pins=[list(b) for b in self.pins], tags=list(self.tags))
        return d


# -- search path ----------------------------------------------------------------------------------
def bundled_dir() -> Path:
    """The bundled packs: `portrait/bundled_templates/` in an installed wheel, else the checkout's `templates/`."""
    return bundled_folder("bundled_templates", "templates")


def user_dir() -> Path:
    return user_folder("PORTRAIT_TEMPLATES_DIR", "templates")


def template_dirs() -> list[Path]:
    """Folders searched for templates, highest priority first: the user's, then the bundled ones."""
    return [user_dir(), bundled_dir()]


# -- validation -----------------------------------------------------------------------------------
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


# -- faces ----------------------------------------------------------------------------------------
def _face_to_json(f: Face) -> dict:
    return {"box": [float(v) for v in f.box], "score": float(f.score),
            "landmarks5": np.asarray(f.landmarks5, float).round(2).tolist(),
            "landmarks68": None if f.landmarks68 is None else np.asarray(f.landmarks68, float).round(2).tolist(),
            "yaw": float(f.yaw), "pitch": float(f.pitch), "roll": float(f.roll),
            **({} if f.mesh is None else {"mesh": np.asarray(f.mesh, float).round(1).tolist()})}


def _face_from_json(d: dict) -> Face:
    return Face(box=np.asarray(d["box"], np.float32), score=float(d["score"]),
                landmarks5=np.asarray(d["landmarks5"], np.float32),
                landmarks68=None if d.get("landmarks68") is None else np.asarray(d["landmarks68"], np.float32),
                yaw=float(d["yaw"]), pitch=float(d["pitch"]), roll=float(d["roll"]),
                mesh=None if d.get("mesh") is None else np.asarray(d["mesh"], np.float32))


def template_decisions(rgb: np.ndarray, face_analysis=None, pins=()) -> list:
    """Every detection in a template image with its slot verdict (portrait.template_slots)."""
    if face_analysis is None:
        from .faces import get_face_analysis

        face_analysis = get_face_analysis()
    return choose_slots(rgb, face_analysis.analyze(rgb, embed=False), pins=pins, min_px=MIN_FACE_PX,
                        face_analysis=face_analysis)


def detect_template_faces(rgb: np.ndarray, face_analysis=None, label: str | Path = "template image",
                          pins=(), decisions: list | None = None) -> list[Face]:
    """The face slots of a template image, left to right; TemplateError when there is none."""
    decisions = template_decisions(rgb, face_analysis, pins) if decisions is None else decisions
    usable = slot_faces_of(decisions)
    if not usable:
        faces = [d.face for d in decisions]
        why = (f"no face holds up as a slot ({'; '.join(d.why for d in decisions)})" if faces
               else "no face was found in it")
        raise TemplateError(f"{label}: cannot be a template: {why}")
    return usable


def template_faces(image_path: Path, face_analysis=None, pins=()) -> list[Face]:
    """The image's faces from `.faces.json` beside it when its sha256 and engines match, else detected
    and cached (the cache is skipped silently where the folder is read-only)."""
    if face_analysis is None:
        from .faces import get_face_analysis

        face_analysis = get_face_analysis()
    cache = image_path.parent / face_cache_name(face_analysis.engines())
    sha = sha256_file(image_path)
    key = {"version": CACHE_VERSION, "image": image_path.name, "image_sha256": sha,
           "engines": dict(face_analysis.engines(), confirm=CONFIRMER), "pins": [list(map(float, b)) for b in pins]}
    try:
        data = json.loads(cache.read_text())
        if all(data.get(k) == v for k, v in key.items()):
            return [_face_from_json(d) for d in data["faces"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        rgb = decode_image(image_path).pixels
    except ImageError as exc:
        raise TemplateError(f"{image_path}: template image is unusable: {exc.reason}") from exc
    decisions = template_decisions(rgb, face_analysis, pins)
    faces = detect_template_faces(rgb, face_analysis, image_path, pins, decisions)
    rejected = [{"box": [round(float(v), 1) for v in d.face.box], "score": round(float(d.face.score), 3), "why": d.why}
                for d in decisions if not d.slot]
    try:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({**key, "faces": [_face_to_json(f) for f in faces], "rejected": rejected}, indent=1))
        tmp.replace(cache)
    except OSError:
        pass
    return faces


# -- lookup ---------------------------------------------------------------------------------------
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


def measure_template(t: Template, face_analysis=None) -> dict:
    """template.toml's [measured] table, from the first replaced slot's face: its Monk skin tone (0 for a
    black-and-white image), ITA and yaw. (No face shape: dlib5's five points are fitted to a fixed
    geometry, so their ratios are the same for every face.)"""
    from .post.skin_tone import skin_tone

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

    from .template_slots import draw_preview

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
