"""Training crops: face-centred, eyes level, at the training resolution (portrait.faces.align).

The face's 5 points are mapped by a similarity transform onto ArcFace's layout scaled into the
central `face_fraction` of the crop. A crop is never filled by reflection (a LoRA learns the mirrored
ghost face that reflection draws beside a face near the edge). Instead, in this order:
1. the framing is tightened a little (up to 1.6x) until the crop fits inside the photo;
2. the crop is shifted (the face moves off-centre by up to `MAX_SHIFT` of the crop) to fit inside;
3. what still lies outside the photo is padded with the flat colour of the photo's nearby edge,
   blurred into the picture; the padded fraction is recorded (report.json's `crop_padding`) and a
   photo whose crop needs more than `max_crop_padding` scores lower.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from portrait.faces import Face
from portrait.faces.align import align_matrix, invert, transform_points

from .config import PreprocessConfig

MAX_SHIFT = 0.18  # the face centre may move this fraction of the crop side away from the centre
_GRID = 48  # the padded fraction is measured on a grid of this many points a side


@dataclass(frozen=True)
class CropPlan:
    matrix: np.ndarray  # 2x3, image -> crop
    size: int
    padding: float  # fraction of the crop's area outside the photo (0 = none)


def _outside_fraction(image_shape: tuple[int, ...], m: np.ndarray, size: int) -> float:
    h, w = image_shape[:2]
    g = (np.arange(_GRID) + 0.5) * size / _GRID
    xx, yy = np.meshgrid(g, g)
    pts = transform_points(np.stack([xx.ravel(), yy.ravel()], 1), invert(m))
    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= w) & (pts[:, 1] >= 0) & (pts[:, 1] <= h)
    return float(1.0 - inside.mean())


def _corners(m: np.ndarray, size: int) -> np.ndarray:
    return transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32), invert(m))


def _shifted(image_shape: tuple[int, ...], m: np.ndarray, size: int) -> np.ndarray:
    """`m` with its crop moved (in image space) towards the inside of the photo, by at most MAX_SHIFT."""
    h, w = image_shape[:2]
    c = _corners(m, size)
    lo, hi = c.min(0), c.max(0)
    shift = np.zeros(2)
    for axis, limit in ((0, w), (1, h)):
        if hi[axis] - lo[axis] >= limit:  # wider than the photo: centre it on the photo
            shift[axis] = limit / 2 - (lo[axis] + hi[axis]) / 2
        elif lo[axis] < 0:
            shift[axis] = -lo[axis]
        elif hi[axis] > limit:
            shift[axis] = limit - hi[axis]
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    most = MAX_SHIFT * size / scale  # in image pixels
    norm = float(np.linalg.norm(shift))
    if norm > most:
        shift *= most / norm
    out = np.array(m, dtype=np.float64)
    out[:, 2] -= out[:, :2] @ shift  # crop(x + shift) = crop(x) - A·shift: the window moves by +shift
    return out


def plan_crop(image_shape: tuple[int, ...], landmarks5: np.ndarray, size: int, fraction: float) -> CropPlan:
    """The crop's matrix: tightened (up to 1.6x), then shifted, to fit inside the photo where it can."""
    best = None
    fractions = np.linspace(fraction, min(1.0, fraction * 1.6), 13)
    for shift in (False, True):  # centred first: shift only when no tightening alone fits
        for f in fractions:
            m = align_matrix(landmarks5, size, float(f))
            cand = _shifted(image_shape, m, size) if shift else m
            pad = _outside_fraction(image_shape, cand, size)
            if best is None or pad < best.padding - 1e-6:
                best = CropPlan(cand, size, pad)
            if pad <= 0.0:
                return best
    return best


def _pad_flat(crop: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill the crop's invalid (outside-the-photo) pixels with the flat colour of the photo's edge next
    to them, and blur that fill softly into the picture. Never mirrors anything."""
    size = crop.shape[0]
    invalid = valid < 0.5
    if not invalid.any():
        return crop
    band = cv2.dilate(invalid.astype(np.uint8), np.ones((9, 9), np.uint8), iterations=max(1, size // 128)) > 0
    edge = band & ~invalid
    colour = np.median(crop[edge], axis=0) if edge.any() else np.array([255, 255, 255], np.float32)
    filled = crop.astype(np.float32)
    filled[invalid] = colour
    k = max(3, size // 24) | 1
    soft = cv2.GaussianBlur(filled, (k, k), 0)
    near = cv2.GaussianBlur(invalid.astype(np.float32), (k, k), 0)[..., None]
    a = np.clip(near * 2.0, 0.0, 1.0)  # 1 inside the padding, falling off just inside the photo
    a[invalid] = 1.0
    out = filled * (1 - a) + soft * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_crop_with_padding(image: np.ndarray, face: Face, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """The aligned training crop (uint8 RGB, resolution²), its 2x3 matrix (image → crop) and the
    fraction of it that had to be padded. `face` must be in `image`'s coordinates."""
    size = config.resolution
    plan = plan_crop(image.shape, face.landmarks5, size, config.face_fraction)
    flags = cv2.INTER_CUBIC if size > 160 else cv2.INTER_AREA
    crop = cv2.warpAffine(image, plan.matrix, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
    if plan.padding > 0:
        valid = cv2.warpAffine(np.ones(image.shape[:2], np.float32), plan.matrix, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        crop = _pad_flat(crop, valid)
    return crop, plan.matrix, plan.padding


def make_crop(image: np.ndarray, face: Face, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """The aligned training crop (uint8 RGB, resolution²) and its 2x3 matrix (image → crop)."""
    crop, m, _ = make_crop_with_padding(image, face, config)
    return crop, m


def crop_padding(image_shape: tuple[int, ...], face: Face, config: PreprocessConfig) -> float:
    """The fraction of `face`'s training crop that lies outside a photo of `image_shape` (the face in
    that photo's coordinates): the same at any decode scale."""
    return plan_crop(image_shape, face.landmarks5, config.resolution, config.face_fraction).padding


def face_in_crop(face: Face, m: np.ndarray) -> Face:
    """`face` mapped into the crop by the 2x3 matrix `m` (box becomes the bounding box of the mapped one)."""
    lm5 = transform_points(face.landmarks5, m)
    lm68 = None if face.landmarks68 is None else transform_points(face.landmarks68, m)
    x0, y0, x1, y1 = face.box
    corners = transform_points(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float32), m)
    box = np.array([*corners.min(0), *corners.max(0)], np.float32)
    return Face(box=box, score=face.score, landmarks5=lm5, landmarks68=lm68, embedding=face.embedding,
                yaw=face.yaw, pitch=face.pitch, roll=0.0, extra=dict(face.extra))
