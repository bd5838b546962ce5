"""Style packs: what `portrait create` paints the user into when there is no template photo (FaceChain's
style mode, EasyPhoto's text-to-photo, InstantID's and PhotoMaker's prompt-and-face use).

    styles/vintage-film/
        style.toml          the prompt and its settings (below), validated on load
        pose.png            optional: a control image (an OpenPose drawing or a canny map) for ControlNet
        preview.jpg         optional: shown by `styles show` (the bundled packs': tiny random models, stamped)

style.toml (every key optional except `prompt`):

    name = "vintage-film"
    description = "A 1940s studio film still"
    prompt = "a 1940s black and white film still of {subject}, studio lighting"   # {subject}: the identity
    negative_prompt = "blurry, deformed, cartoon"
    aspect = "3:4"                      # width:height of the picture
    source = "written for portrait"     # where the pack's text and images came from
    licence = "CC0-1.0"                 # their licence, with the reason
    tags = ["bw", "vintage", "half-length"]
    [style]                             # an optional style LoRA: a file in the pack or a manifest name
    lora = "film.safetensors"
    weight = 0.6
    [pose]                              # optional composition for ControlNet
    control = "openpose"                # openpose | canny: the ControlNet that reads it
    scale = 0.8
    image = "pose.png"                  # a drawing in the pack, or (without image) an OpenPose head:
    head = [0.5, 0.36, 0.22]            #   centre x, centre y and face width, as fractions of the picture
    [detail]                            # the face-detail pass: the face crop inpainted again at full size
    strength = 0.35
    [sd15]                              # per base model: sampler, steps, guidance, working size
    sampler = "dpm++2m"                 # (samplers: generate.pipelines.SAMPLERS)
    steps = 30
    guidance_scale = 6.0
    size = 512                          # the picture's area is size x size (rounded to 64 px sides)
    [sdxl]
    steps = 30
    guidance_scale = 5.0
    size = 1024

`{subject}` is the identity's slot: "ohwx person" (the LoRA's trigger and class words, as training
captioned them) for an identity LoRA, "a person" for a face embedding, whose likeness comes through the
adapter instead. Search path: the user's folder ($PORTRAIT_STYLES_DIR, default
~/.local/share/portrait/styles, where `portrait styles add` writes), then the bundled `styles/`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import StyleError
from .generate.pipelines import SAMPLERS
from .generate.text_to_image import CONTROLS, SceneSettings, scene_size
from .paths import bundled_folder, user_folder
from .settings import TomlReader, find_packs, read_toml

TOML_NAME = "style.toml"
PREVIEW_NAME = "preview.jpg"  # optional; the bundled packs' are made on tiny random models and stamped so
SUBJECT = "{subject}"
TOP_KEYS = ("name", "description", "prompt", "negative_prompt", "aspect", "source", "licence", "tags", "style",
            "pose", "detail", "sd15", "sdxl")
BASE_KEYS = ("sampler", "steps", "guidance_scale", "size")
DEFAULT_BASE = {"sd15": SceneSettings(), "sdxl": SceneSettings(guidance_scale=5.0, size=1024)}
MAX_ASPECT = 3.0  # a picture at most 3 times as wide as high, or as high as wide


@dataclass(frozen=True)
class Pose:
    control: str  # the ControlNet that reads it: openpose | canny
    scale: float
    image: Path | None = None  # a control image in the pack
    head: tuple[float, float, float] | None = None  # without an image: OpenPose head (cx, cy, face width) fractions


@dataclass(frozen=True)
class Style:
    name: str
    directory: Path
    prompt: str
    description: str = ""
    negative_prompt: str = "blurry, deformed, lowres, bad anatomy, watermark, text"
    aspect: tuple[int, int] = (3, 4)
    lora: str | None = None
    lora_weight: float = 0.6
    pose: Pose | None = None
    detail_strength: float = 0.35
    bases: dict = field(default_factory=lambda: dict(DEFAULT_BASE))  # arch -> SceneSettings
    source: str = ""
    licence: str = ""
    tags: tuple[str, ...] = ()

    @property
    def toml_path(self) -> Path:
        return self.directory / TOML_NAME

    @property
    def preview(self) -> Path | None:
        p = self.directory / PREVIEW_NAME
        return p if p.is_file() else None

    def settings(self, arch: str) -> SceneSettings:
        """Sampler, steps, guidance and working size for a base architecture (SD 1.5's for an unknown one)."""
        return self.bases.get(arch, self.bases["sd15"])

    def size(self, arch: str) -> tuple[int, int]:
        """(width, height) of the picture on this base."""
        return scene_size(self.settings(arch).size, self.aspect)

    def prompt_for(self, subject: str) -> str:
        return self.prompt.replace(SUBJECT, subject)

    def lora_path(self, manifest=None) -> Path | None:
        """The style LoRA's file: one in the pack, else a manifest model of that name (its missing-model
        error says how to get it)."""
        if not self.lora:
            return None
        inside = self.directory / self.lora
        if inside.is_file():
            return inside
        if manifest is not None and self.lora in manifest.specs:
            return manifest.require(self.lora)
        raise StyleError(f"{self.toml_path}: key 'style.lora' names {self.lora!r}, neither a file in {self.directory} "
                         "nor a model in the models manifest (`portrait models list`)")

    def to_dict(self) -> dict:
        return {"name": self.name, "directory": str(self.directory), "description": self.description,
                "prompt": self.prompt, "negative_prompt": self.negative_prompt,
                "aspect": f"{self.aspect[0]}:{self.aspect[1]}",
                "style": {"lora": self.lora, "weight": self.lora_weight} if self.lora else None,
                "pose": None if self.pose is None else {
                    "control": self.pose.control, "scale": self.pose.scale,
                    "image": str(self.pose.image) if self.pose.image else None,
                    "head": list(self.pose.head) if self.pose.head else None},
                "detail": {"strength": self.detail_strength},
                "bases": {arch: {"sampler": s.sampler, "steps": s.steps, "guidance_scale": s.guidance_scale,
                                 "size": list(self.size(arch))} for arch, s in self.bases.items()},
                "source": self.source, "licence": self.licence, "tags": list(self.tags),
                "preview": str(self.preview) if self.preview else None}


# -- reading ------------------------------------------------------------------------------------------
def _aspect(r: TomlReader) -> tuple[int, int]:
    text = r.get(r.data, "aspect", "aspect", str, "3:4")
    try:
        w, h = (int(x) for x in text.split(":"))
    except ValueError:
        w = h = 0
    if w < 1 or h < 1 or max(w / h, h / w) > MAX_ASPECT:
        raise r.fail("aspect", f"must be WIDTH:HEIGHT in whole numbers, at most {MAX_ASPECT:g}:1 either way, "
                               f"got {text!r}")
    return w, h


def _pose(r: TomlReader, directory: Path) -> Pose | None:
    if "pose" not in r.data:
        return None
    t = r.table("pose")
    r.unknown(t, ("control", "scale", "image", "head"), "pose.")
    control = r.get(t, "control", "pose.control", str, "openpose")
    if control not in CONTROLS:
        raise r.fail("pose.control", f"must be one of {', '.join(CONTROLS)}, got {control!r}")
    image = r.file(t, "image", "pose.image", directory)
    head = t.get("head")
    if head is not None:
        if (not isinstance(head, list) or len(head) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in head)):
            raise r.fail("pose.head", f"must be [centre x, centre y, face width], fractions in (0, 1), got {head!r}")
        head = tuple(float(v) for v in head)
    if image is None and head is None:
        raise r.fail("pose", "needs an image (a control drawing in the pack) or a head [x, y, width]")
    if control != "openpose" and image is None:
        raise r.fail("pose.image", f"is needed for the {control} control (a head is drawn for openpose only)")
    return Pose(control, r.get(t, "scale", "pose.scale", float, 0.8, lo=0.0, hi=2.0), image, head)


def _bases(r: TomlReader) -> dict:
    bases = {}
    for arch, default in DEFAULT_BASE.items():
        t = r.table(arch)
        r.unknown(t, BASE_KEYS, f"{arch}.")
        sampler = r.get(t, "sampler", f"{arch}.sampler", str, default.sampler)
        if sampler not in SAMPLERS:
            raise r.fail(f"{arch}.sampler", f"must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        bases[arch] = SceneSettings(
            sampler=sampler, steps=r.get(t, "steps", f"{arch}.steps", int, default.steps, lo=1, hi=500),
            guidance_scale=r.get(t, "guidance_scale", f"{arch}.guidance_scale", float, default.guidance_scale,
                                 lo=0.0, hi=50.0),
            size=r.get(t, "size", f"{arch}.size", int, default.size, lo=64, hi=2048))
    return bases


def parse_style(directory: str | Path) -> Style:
    """Read and validate `directory`/style.toml: StyleError naming the file and the key."""
    directory = Path(directory)
    path = directory / TOML_NAME
    data = read_toml(path, StyleError, "style")
    r = TomlReader(path, data, StyleError)
    r.unknown(data, TOP_KEYS)
    prompt = r.get(data, "prompt", "prompt", str)
    if not prompt or not prompt.strip():
        raise r.fail("prompt", "is needed: the picture's description, with {subject} where the person goes")
    if SUBJECT not in prompt:
        raise r.fail("prompt", f"must hold {SUBJECT}, where the identity goes, got {prompt!r}")
    style, detail = r.table("style"), r.table("detail")
    r.unknown(style, ("lora", "weight"), "style.")
    r.unknown(detail, ("strength",), "detail.")
    return Style(
        name=r.name(directory.name), directory=directory, prompt=prompt.strip(),
        description=r.get(data, "description", "description", str, ""),
        negative_prompt=r.get(data, "negative_prompt", "negative_prompt", str, Style.negative_prompt),
        aspect=_aspect(r), lora=r.get(style, "lora", "style.lora", str, None),
        lora_weight=r.get(style, "weight", "style.weight", float, 0.6, lo=0.0, hi=2.0),
        pose=_pose(r, directory),
        detail_strength=r.get(detail, "strength", "detail.strength", float, 0.35, lo=0.0, hi=1.0),
        bases=_bases(r), source=r.get(data, "source", "source", str, ""),
        licence=r.get(data, "licence", "licence", str, ""), tags=r.tags())


# -- the library --------------------------------------------------------------------------------------
def bundled_dir() -> Path:
    """The bundled styles: `portrait/bundled_styles/` in an installed wheel, else the checkout's `styles/`."""
    return bundled_folder("bundled_styles", "styles")


def user_dir() -> Path:
    return user_folder("PORTRAIT_STYLES_DIR", "styles")


def style_dirs() -> list[Path]:
    """Folders searched for styles, highest priority first: the user's, then the bundled ones."""
    return [user_dir(), bundled_dir()]


def list_styles(dirs: Iterable[str | Path] | None = None,
                on_error: Callable[[Path, StyleError], None] | None = None) -> list[Style]:
    """Every style in `dirs` (default: the search path), by name; a name in an earlier folder hides later
    ones. Broken packs are skipped and passed to `on_error`."""
    return find_packs(style_dirs() if dirs is None else dirs, TOML_NAME, parse_style, StyleError, on_error)


def load_style(name_or_dir: str | Path, dirs: Iterable[str | Path] | None = None) -> Style:
    """A style by folder path (one holding style.toml), or by name on the search path."""
    p = Path(name_or_dir)
    if (p / TOML_NAME).is_file():
        return parse_style(p)
    searched = style_dirs() if dirs is None else [Path(x) for x in dirs]
    for s in list_styles(searched):
        if s.name == str(name_or_dir):
            return s
    known = ", ".join(s.name for s in list_styles(searched)) or "none"
    raise StyleError(f"style '{name_or_dir}' not found; searched {', '.join(str(d) for d in searched)} "
                     f"(styles there: {known}; `portrait styles list` shows them)")


def add_style(source: str | Path, name: str | None = None, dest_dir: str | Path | None = None, *,
              force: bool = False) -> Style:
    """Copy the style pack folder `source` (validated first) into the user's styles folder, as `name`
    (default: its own). A name of a bundled style needs `force` (the user's pack would hide it)."""
    import tomli_w

    src = parse_style(source)
    name = name or src.name
    TomlReader(src.toml_path, {"name": name}, StyleError).name(name)
    dest = Path(dest_dir) if dest_dir else user_dir()
    folder = dest / name
    if folder.exists() and not force:
        raise StyleError(f"{folder} already exists: choose another name, or --force to replace it")
    if not force and name in {s.name for s in list_styles([bundled_dir()])}:
        raise StyleError(f"style name '{name}' would hide the bundled style of that name "
                         "(choose another name, or --force to override it)")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest))
    try:
        shutil.copytree(src.directory, tmp, dirs_exist_ok=True)
        doc = read_toml(tmp / TOML_NAME, StyleError, "style")
        doc["name"] = name
        (tmp / TOML_NAME).write_text(tomli_w.dumps(doc), encoding="utf-8")
        parse_style(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return parse_style(folder)
