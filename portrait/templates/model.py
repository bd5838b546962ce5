"""The Template: a pack's settings (read by portrait.templates.pack), its image decoded once, and its faces
from the face cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import ImageError, TemplateError
from ..faces.types import Face
from ..generate.template_inpaint import PASS1, PASS2, PassSettings
from ..imageio import DecodedImage, decode_image
from .face_cache import detect_template_faces, template_faces

TOML_NAME = "template.toml"


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
            from ..faces import get_face_analysis

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

