"""Restoring training crops of small faces (EasyPhoto and FaceChain do the same; a plain resize does not).

When a photo's face is smaller than the training resolution asks for (`scoring.needed_face_px`), its
crop is cut at the face's native resolution and enlarged by the upscale stage's engine
(`portrait.post.upscale`: classic offline — Lanczos plus clamped detail enhancement — or Real-ESRGAN
through spandrel when the manifest's `realesrgan-x4` file is present), rather than interpolated up
by the crop's warp. An optional light skin retouch (`retouch_crops`) uses the retouch stage's engine.
report.json says, per photo, which crops were restored and by what (`restored`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from portrait.faces import Face
from portrait.models.manifest import Manifest

from . import scoring
from .config import PreprocessConfig
from .crops import face_in_crop, make_crop_with_padding

RETOUCH_STRENGTH = 0.35  # the same light touch as `portrait run`'s default retouch


def restore_engine(config: PreprocessConfig, manifest: Manifest) -> str:
    """`esrgan` when asked for, or (auto) when its model file and spandrel are present; else `classic`."""
    if config.restore_engine != "auto":
        return config.restore_engine
    import importlib.util

    # The file first and spandrel only looked up, not imported: importing it brings torch into every
    # analysis run that has no use for it.
    present = manifest.available("realesrgan-x4") and manifest.path("realesrgan-x4").is_file()
    return "esrgan" if present and importlib.util.find_spec("spandrel") is not None else "classic"


def needs_restoring(face_px: float, config: PreprocessConfig) -> bool:
    """True when the face (original pixels) is smaller than the training crop needs at 1:1."""
    return config.restore_crops and face_px < scoring.needed_face_px(config) / 1.05


def restored_crop(image: np.ndarray, face: Face, config: PreprocessConfig, engine: str, manifest: Manifest,
                  device: str = "cpu") -> tuple[np.ndarray, np.ndarray, float]:
    """The training crop of a small face: cut at the face's native scale, then enlarged by `engine`.
    Returns the crop, its 2x3 matrix (image → crop) and the padded fraction. `face` is in `image`'s
    coordinates, `image` at full resolution."""
    from dataclasses import replace

    from portrait.post.upscale import upscale

    need = scoring.needed_face_px(config)
    native = max(64, int(math.ceil(config.resolution * face.size / need / 8.0)) * 8)
    small, m, padding = make_crop_with_padding(image, face, replace(config, resolution=native))
    factor = config.resolution / native
    crop = upscale(small, factor, engine=engine, manifest=manifest, device=device)
    if crop.shape[:2] != (config.resolution, config.resolution):
        crop = cv2.resize(crop, (config.resolution, config.resolution), interpolation=cv2.INTER_LANCZOS4)
    return crop, np.asarray(m, np.float64) * factor, padding


def retouched(crop: np.ndarray, crop_face: Face, manifest: Manifest, device: str = "cpu") -> tuple[np.ndarray, str]:
    """A light skin retouch of the crop: the restorer (GFPGAN-type) when present, else classic."""
    from portrait.post.retouch import retouch

    engine = "restore" if manifest.available("gfpgan") and manifest.path("gfpgan").is_file() else "classic"
    return retouch(crop, crop_face, engine=engine, strength=RETOUCH_STRENGTH, manifest=manifest, device=device), engine


__all__ = ["face_in_crop", "needs_restoring", "restore_engine", "restored_crop", "retouched"]
