"""Super-resolution.

Engines (`engine=`):
  classic (default, offline): Lanczos resampling, then detail enhancement: an unsharp mask whose
      added detail is clamped (no halos around strong edges).
  esrgan: an RRDB / Real-ESRGAN network (manifest model "realesrgan-x4", loaded through spandrel),
      run tile by tile with an overlap so memory stays bounded on large images; when the requested
      scale differs from the network's, its output is resampled (Lanczos / area) to the target.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from ..errors import ConfigError
from ..imageio import check_rgb
from ..progress import ProgressCallback, report

UpscaleEngine = Literal["classic", "esrgan"]
ENGINES: tuple[str, ...] = UpscaleEngine.__args__  # type: ignore[attr-defined]


def _target(rgb: np.ndarray, scale: float) -> tuple[int, int]:
    h, w = rgb.shape[:2]
    return max(1, round(w * scale)), max(1, round(h * scale))


def classic_upscale(rgb: np.ndarray, scale: float = 2, amount: float = 0.6, clamp: float = 10.0) -> np.ndarray:
    """Lanczos to `scale`, then unsharp masking (sigma grows with the scale) with detail clamped to ±`clamp`."""
    up = cv2.resize(rgb, _target(rgb, scale), interpolation=cv2.INTER_LANCZOS4 if scale >= 1 else cv2.INTER_AREA)
    if amount <= 0:
        return up
    f = up.astype(np.float32)
    detail = f - cv2.GaussianBlur(f, (0, 0), max(0.8, 0.5 * scale))
    return np.clip(f + amount * np.clip(detail, -clamp, clamp) + 0.5, 0, 255).astype(np.uint8)


def tiled_inference(rgb: np.ndarray, desc, tile: int = 256, overlap: int = 16,
                    progress: ProgressCallback | None = None) -> np.ndarray:
    """Run an image model over `rgb` in tiles of `tile` px with `overlap` px of context on each side.

    Each tile's output keeps only its core (the part without the overlap), so the result matches
    an untiled run wherever the network's receptive field fits in the overlap. tile <= 0: one pass.
    """
    import torch

    from .spandrel_models import to_rgb, to_tensor

    h, w = rgb.shape[:2]
    s = int(desc.scale)
    if tile <= 0 or (h <= tile and w <= tile):
        tile = max(h, w)
    ny, nx = math.ceil(h / tile), math.ceil(w / tile)
    out = np.empty((h * s, w * s, 3), np.uint8)
    done = 0
    with torch.inference_mode():
        for iy in range(ny):
            for ix in range(nx):
                y0, x0 = iy * tile, ix * tile
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                py0, px0 = max(0, y0 - overlap), max(0, x0 - overlap)
                py1, px1 = min(h, y1 + overlap), min(w, x1 + overlap)
                res = to_rgb(desc(to_tensor(rgb[py0:py1, px0:px1], desc)))
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[y0 * s:y1 * s, x0 * s:x1 * s] = res[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
                done += 1
                report(progress, "upscale", done, ny * nx)
    return out


def upscale(rgb: np.ndarray, scale: float = 2, engine: str = "classic", manifest=None, device: str = "cpu",
            tile: int = 256, progress: ProgressCallback | None = None, *, overlap: int = 16,
            model: str = "realesrgan-x4", dtype: str = "float32") -> np.ndarray:
    """`rgb` (uint8 RGB) enlarged by `scale` (> 0; 1 returns a copy)."""
    check_rgb(rgb)
    if engine not in ENGINES:
        raise ConfigError(f"unknown upscale engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not 0 < scale <= 8:
        raise ConfigError(f"scale must be in (0, 8], got {scale}")
    if scale == 1:
        return rgb.copy()
    if engine == "classic":
        report(progress, "upscale", 0, 1)
        out = classic_upscale(rgb, scale)
        report(progress, "upscale", 1, 1)
        return out
    from .spandrel_models import load_image_model

    if manifest is None:
        from ..models.manifest import get_manifest

        manifest = get_manifest()
    desc = load_image_model(manifest.require(model), device, dtype)
    out = tiled_inference(rgb, desc, tile=tile, overlap=overlap, progress=progress)
    size = _target(rgb, scale)
    if (out.shape[1], out.shape[0]) != size:
        shrink = size[0] < out.shape[1]
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    return out
