"""Training crops: face-centred, eyes level, at the training resolution (portrait.faces.align).

The face's 5 points are mapped by a similarity transform onto ArcFace's layout scaled into the
central `face_fraction` of the crop. When that framing would reach past the photo's edge the crop
is tightened a little (up to 1.6x) before falling back to mirrored borders, so few crops show
mirrored edges.
"""

from __future__ import annotations

import numpy as np

from portrait.faces import Face
from portrait.faces.align import align_face, align_matrix, invert, transform_points

from .config import PreprocessConfig


def _inside(image_shape: tuple[int, ...], landmarks5: np.ndarray, size: int, fraction: float) -> bool:
    h, w = image_shape[:2]
    m = align_matrix(landmarks5, size, fraction)
    corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32), invert(m))
    return bool((corners[:, 0] >= -1).all() and (corners[:, 0] <= w + 1).all()
                and (corners[:, 1] >= -1).all() and (corners[:, 1] <= h + 1).all())


def crop_fraction(image_shape: tuple[int, ...], landmarks5: np.ndarray, size: int, fraction: float) -> float:
    """`fraction`, or the smallest tighter one (up to 1.6x) whose crop stays inside the photo."""
    for f in np.linspace(fraction, min(1.0, fraction * 1.6), 13):
        if _inside(image_shape, landmarks5, size, float(f)):
            return float(f)
    return fraction


def make_crop(image: np.ndarray, face: Face, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """The aligned training crop (uint8 RGB, resolution²) and its 2x3 matrix (image → crop).

    `face` must be in `image`'s coordinates."""
    size = config.resolution
    fraction = crop_fraction(image.shape, face.landmarks5, size, config.face_fraction)
    return align_face(image, face.landmarks5, size, fraction, border="reflect")


def face_in_crop(face: Face, m: np.ndarray) -> Face:
    """`face` mapped into the crop by the 2x3 matrix `m` (box becomes the bounding box of the mapped one)."""
    lm5 = transform_points(face.landmarks5, m)
    lm68 = None if face.landmarks68 is None else transform_points(face.landmarks68, m)
    x0, y0, x1, y1 = face.box
    corners = transform_points(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float32), m)
    box = np.array([*corners.min(0), *corners.max(0)], np.float32)
    return Face(box=box, score=face.score, landmarks5=lm5, landmarks68=lm68, embedding=face.embedding,
                yaw=face.yaw, pitch=face.pitch, roll=0.0, extra=dict(face.extra))
