"""Skin retouch.

Engines (`engine=`):
  classic (default, offline): frequency separation on the landmark skin mask. The low frequencies
      (tone, blotches) are replaced by an edge-preserving (bilateral) smoothing of the skin; a share
      of the finest detail (pores, grain) is added back so the skin does not look plastic. The blend
      follows the skin mask with a soft edge that falls off inside it, so eyes, brows, lips, hair and
      everything outside the face keep their exact pixels.
  restore: a face-restoration network (GFPGAN or RestoreFormer, manifest model "gfpgan", loaded
      through spandrel; CodeFormer is not offered: spandrel keeps it in spandrel_extra_arches, and its
      weights' S-Lab licence is non-commercial) run on the 512 px aligned face crop and pasted back with a
      feathered face mask; `strength` is the opacity of the restored face.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from ..errors import ConfigError
from ..faces.align import similarity_transform
from ..faces.types import Face
from ..imageio import check_rgb
from . import masks

RetouchEngine = Literal["classic", "restore"]
ENGINES: tuple[str, ...] = RetouchEngine.__args__  # type: ignore[attr-defined]

# FFHQ's 5-point layout in a 512 crop: what GFPGAN / RestoreFormer were trained on.
FFHQ_5PT_512 = np.array([[192.98138, 239.94708], [318.90277, 240.19366], [256.63416, 314.01935],
                         [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)


def smooth_skin(rgb: np.ndarray, face: Face, strength: float = 0.5, texture: float = 0.25) -> np.ndarray:
    """Classic retouch (see module doc). `texture` is the share of fine detail kept on smoothed skin."""
    h, w = rgb.shape[:2]
    skin = masks.skin_mask((h, w), face)
    iod = max(face.eye_distance, 8.0)
    box = masks.bounding_box(skin, pad=int(iod * 0.3))
    if box is None or strength <= 0:
        return rgb.copy()
    x0, y0, x1, y1 = box
    roi = rgb[y0:y1, x0:x1]
    f = roi.astype(np.float32)
    # Edge-preserving base: bilateral filter with a spatial reach ~ 1/10 of the eye distance.
    sigma_s = max(2.0, iod * 0.12)
    base = cv2.bilateralFilter(f, d=int(sigma_s * 2) | 1, sigmaColor=20.0 + 30.0 * strength, sigmaSpace=sigma_s)
    # Finest detail (pores): what a ~1 px Gaussian removes.
    fine = f - cv2.GaussianBlur(f, (0, 0), max(0.8, iod * 0.012))
    smoothed = base + fine * texture
    alpha = masks.feather(skin[y0:y1, x0:x1], max(1, int(iod * 0.06))) * float(strength)
    out = rgb.copy()
    out[y0:y1, x0:x1] = masks.blend(roi, np.clip(smoothed, 0, 255), alpha)
    return out


def restore_face(rgb: np.ndarray, face: Face, manifest=None, device: str = "cpu", strength: float = 1.0,
                 model: str = "gfpgan", size: int = 512) -> np.ndarray:
    """Face restoration on the aligned crop, pasted back with a feathered face mask."""
    from .spandrel_models import load_image_model

    if manifest is None:
        from ..models.manifest import get_manifest

        manifest = get_manifest()
    desc = load_image_model(manifest.require(model), device)
    h, w = rgb.shape[:2]
    m = similarity_transform(face.landmarks5, FFHQ_5PT_512 * (size / 512.0))
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    restored = _run_restorer(desc, crop)
    if restored.shape[:2] != (size, size):
        restored = cv2.resize(restored, (size, size), interpolation=cv2.INTER_AREA)
    back = cv2.warpAffine(restored, cv2.invertAffineTransform(m), (w, h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT101)
    region = masks.face_mask((h, w), face)
    alpha = masks.feather(region, max(1, int(face.eye_distance * 0.15))) * float(strength)
    return masks.blend(rgb, back, alpha)


def _run_restorer(desc, crop: np.ndarray) -> np.ndarray:
    """Face restorers (spandrel purpose "FaceSR") work in [-1, 1] and return (image, extras);
    other image models take and give [0, 1] through the descriptor's own call."""
    import torch

    from .spandrel_models import to_rgb, to_tensor

    x = to_tensor(crop, desc)
    with torch.inference_mode():
        if desc.purpose == "FaceSR":
            out = desc.model(x * 2 - 1)
            out = (out[0] if isinstance(out, (tuple, list)) else out).add(1).div(2)
        else:
            out = desc(x)
    return to_rgb(out)


def retouch(rgb: np.ndarray, face: Face, engine: str = "classic", strength: float = 0.5, manifest=None,
            device: str = "cpu") -> np.ndarray:
    """Retouch the skin of `face` in `rgb` (uint8 RGB); strength 0..1 (0 returns a copy)."""
    check_rgb(rgb)
    if engine not in ENGINES:
        raise ConfigError(f"unknown retouch engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"strength must be in 0..1, got {strength}")
    if strength == 0:
        return rgb.copy()
    if engine == "restore":
        return restore_face(rgb, face, manifest=manifest, device=device, strength=strength)
    return smooth_skin(rgb, face, strength)
