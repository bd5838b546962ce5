"""Control images, inpaint masks and face crops for the diffusion stages: pure numpy / OpenCV.

Every function takes and returns uint8 RGB (H, W, 3) images or uint8 masks (0 / 255), so each can
be inspected alone. Nothing here imports torch.

Controls (what each ControlNet sees):
  canny      edges of the fused image (shape of the face to keep)
  openpose   face keypoints drawn by our own code on black: 68 points as white dots (openpose-face
             style) or, with 5 points only, coloured keypoints joined to the nose (InstantID style)
  color      a coarse mosaic of the image (where the colours are, not the details)
  tile       the image itself, blurred by down- and up-scaling (the low frequencies to keep)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ..errors import ConfigError
from ..faces.types import Face
from ..post import masks as _masks

ControlName = Literal["canny", "openpose", "color", "tile"]
CONTROL_NAMES: tuple[str, ...] = ControlName.__args__  # type: ignore[attr-defined]

# InstantID-style 5-keypoint colours (eye, eye, nose, mouth, mouth) and limbs joining them to the nose.
_KPS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
_KPS_LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))


def _rgb3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def canny(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edges as a 3-channel white-on-black image."""
    return _rgb3(cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high))


def face_keypoints(shape_hw: tuple[int, int], faces: Face | list[Face], style: str = "auto") -> np.ndarray:
    """Face keypoints drawn on black. style: 'openpose' (68 white dots), 'kps' (5 coloured points), 'auto'."""
    h, w = shape_hw
    canvas = np.zeros((h, w, 3), np.uint8)
    for face in [faces] if isinstance(faces, Face) else faces:
        use68 = face.landmarks68 is not None and style in ("auto", "openpose")
        if use68:
            r = max(1, round(face.eye_distance / 20))
            for x, y in face.landmarks68:
                cv2.circle(canvas, (int(round(x)), int(round(y))), r, (255, 255, 255), -1, cv2.LINE_AA)
            continue
        kps = face.landmarks5
        thick = max(2, round(face.eye_distance / 8))
        for a, b in _KPS_LIMBS:
            layer = canvas.copy()
            (x0, y0), (x1, y1) = kps[a], kps[b]
            length = float(np.hypot(x1 - x0, y1 - y0))
            angle = float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))
            centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
            cv2.ellipse(layer, centre, (max(1, int(length / 2)), thick), angle, 0, 360, _KPS_COLORS[a], -1)
            canvas = cv2.addWeighted(canvas, 0.4, layer, 0.6, 0)
        for (x, y), color in zip(kps, _KPS_COLORS):
            cv2.circle(canvas, (int(round(x)), int(round(y))), thick + 2, color, -1)
    return canvas


def color_map(rgb: np.ndarray, cells: int = 16) -> np.ndarray:
    """A mosaic of about `cells` blocks along the short side: colour layout without detail."""
    h, w = rgb.shape[:2]
    s = cells / min(h, w)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def tile(rgb: np.ndarray, factor: int = 4) -> np.ndarray:
    """The image blurred by a `factor` x down- and up-scale (the tile ControlNet's usual input)."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_controls(names: list[str] | tuple[str, ...], *, fused: np.ndarray, replaced: np.ndarray,
                  faces: Face | list[Face]) -> list[np.ndarray]:
    """The control images for `names`, in order: canny and tile from `fused`, colour and keypoints from `replaced`."""
    out = []
    for name in names:
        if name == "canny":
            out.append(canny(fused))
        elif name == "openpose":
            out.append(face_keypoints(replaced.shape[:2], faces))
        elif name == "color":
            out.append(color_map(replaced))
        elif name == "tile":
            out.append(tile(fused))
        else:
            raise ConfigError(f"unknown control {name!r}; choose from {', '.join(CONTROL_NAMES)}")
    return out


# -- masks ---------------------------------------------------------------------------------------

def inpaint_mask(shape_hw: tuple[int, int], face: Face, grow: float = 0.08) -> np.ndarray:
    """Pass 1: the face mask grown by `grow` x face size (covers the seam of the paste)."""
    return _masks.dilate(_masks.face_mask(shape_hw, face), max(1, round(face.size * grow)))


def edge_ring(mask: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Pass 2: a ring `inner` px inside to `outer` px outside the edge of `mask`."""
    k = 2 * max(1, inner) + 1
    eroded = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return cv2.subtract(_masks.dilate(mask, outer), eroded)


# -- crop around the face and paste back ---------------------------------------------------------

@dataclass(frozen=True)
class FaceCrop:
    """A square region of the template around a face, resized to `size` for the diffusion passes."""

    x0: int
    y0: int
    side: int  # the region's side in template pixels
    size: int  # the working resolution (multiple of 8)

    @property
    def scale(self) -> float:
        return self.size / self.side

    def crop(self, image: np.ndarray) -> np.ndarray:
        region = image[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side]
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        return cv2.resize(region, (self.size, self.size), interpolation=interp)

    def face(self, face: Face) -> Face:
        """`face` in crop coordinates."""
        moved = Face(box=face.box - np.array([self.x0, self.y0, self.x0, self.y0], np.float32),
                     score=face.score, landmarks5=face.landmarks5 - np.array([self.x0, self.y0], np.float32),
                     landmarks68=None if face.landmarks68 is None
                     else face.landmarks68 - np.array([self.x0, self.y0], np.float32),
                     embedding=face.embedding, yaw=face.yaw, pitch=face.pitch, roll=face.roll, extra=dict(face.extra))
        return moved.scaled(self.scale)

    def paste(self, template: np.ndarray, result: np.ndarray, mask: np.ndarray, feather_px: int = 0) -> np.ndarray:
        """`result` (crop-sized) pasted into a copy of `template` through `mask` (crop-sized, 0/255).

        Pixels where the resized mask is 0 are the template's, bit for bit.
        """
        if result.shape[:2] != (self.size, self.size) or mask.shape[:2] != (self.size, self.size):
            raise ValueError(f"result and mask must be {self.size}x{self.size}")
        interp = cv2.INTER_CUBIC if self.side > self.size else cv2.INTER_AREA
        back = cv2.resize(result, (self.side, self.side), interpolation=interp)
        m = cv2.resize(mask, (self.side, self.side), interpolation=cv2.INTER_NEAREST)
        alpha = (m > 0).astype(np.float32)
        if feather_px > 0:  # the feather's square blur kernel reaches past the mask's corners: clip it
            alpha *= _masks.feather(m, feather_px)
        out = template.copy()
        region = out[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side]
        a = alpha[:, :, None]
        blended = np.clip(region.astype(np.float32) * (1 - a) + back.astype(np.float32) * a + 0.5, 0, 255)
        inside = alpha > 0
        region[inside] = blended.astype(np.uint8)[inside]
        return out

    def full_mask(self, template_hw: tuple[int, int], mask: np.ndarray) -> np.ndarray:
        """A crop-sized mask in template coordinates (0 outside the crop)."""
        full = np.zeros(template_hw, np.uint8)
        full[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side] = cv2.resize(
            mask, (self.side, self.side), interpolation=cv2.INTER_NEAREST)
        return full


def face_crop(image_hw: tuple[int, int], face: Face, size: int = 512, expand: float = 3.0) -> FaceCrop:
    """The square region `expand` x the face box around the face, kept inside the image.

    `size` (the working resolution: 512 for SD 1.5, 1024 for SDXL) is rounded down to a multiple of 8.
    """
    if size < 8:
        raise ConfigError(f"crop size must be at least 8, got {size}")
    h, w = image_hw
    side = int(round(max(face.width, face.height) * expand))
    side = max(8, min(side, h, w))
    cx, cy = face.center
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return FaceCrop(x0, y0, side, size // 8 * 8)
