"""Photos whose face is not upright: turned by a quarter without an EXIF tag, or a strongly tilted head.

When no face is found on a photo as stored, it is looked for again on the photo turned by 90°, 270°
and 180° (a phone photo saved on its side, no EXIF orientation). A face found that way turns the
photo upright for everything that follows, and its message says so. Failing that, the photo is
rotated by ±45°: a face found there belongs to a head tilted past what the detector takes (about
40°), which is judged `extreme_pose` rather than lost as `no_face`.

Only the coarse detection pass runs here (cheap: these photos are rare and a face that needs the
fine passes on a turned photo is too small to train on anyway).
"""

from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np

from portrait.faces import Face
from portrait.faces.align import invert, transform_points

from .config import PreprocessConfig
from .detection import detect_at

_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
TILTS = (45.0, -45.0)


def turn_upright(pixels: np.ndarray, degrees: int) -> np.ndarray:
    """`pixels` turned clockwise by `degrees` (0, 90, 180 or 270)."""
    return pixels if not degrees else cv2.rotate(np.ascontiguousarray(pixels), _ROTATE[int(degrees) % 360])


def turn_text(degrees: int) -> str:
    return (f"turned {degrees}° clockwise to stand upright (the file has no EXIF orientation saying so)"
            if degrees else "")


def _coarse(fa, image: np.ndarray, config: PreprocessConfig) -> list[Face]:
    return detect_at(fa, image, min(config.coarse_side, max(image.shape[:2])), config.detection_score())


def find_turned(fa, image: np.ndarray, config: PreprocessConfig) -> Optional[tuple[int, np.ndarray, list[Face]]]:
    """(degrees clockwise, the upright pixels, their faces) for the first quarter turn that shows a face."""
    for deg in (90, 270, 180):
        turned = turn_upright(image, deg)
        faces = _coarse(fa, turned, config)
        if faces:
            return deg, turned, faces
    return None


def _rotation(shape: tuple[int, ...], angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The matrix rotating an image by `angle` (degrees, counter-clockwise as OpenCV counts) onto a canvas
    that holds all of it, and that canvas' size."""
    h, w = shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(round(h * s + w * c)), int(round(h * c + w * s))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return m, (nw, nh)


def rotated(image: np.ndarray, degrees: float, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """The whole photo rotated clockwise by `degrees` on a canvas that holds it all (edges replicated)."""
    m, size = _rotation(image.shape, -degrees)
    return cv2.warpAffine(image, m, size, flags=interpolation, borderMode=cv2.BORDER_REPLICATE)


def map_face(face: Face, m: np.ndarray, roll_offset: float) -> Face:
    """`face` moved by the 2x3 matrix `m` (box: bounding box of the moved corners), its roll offset."""
    x0, y0, x1, y1 = face.box
    corners = transform_points(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float32), m)
    return Face(box=np.array([*corners.min(0), *corners.max(0)], np.float32), score=face.score,
                landmarks5=transform_points(face.landmarks5, m),
                landmarks68=None if face.landmarks68 is None else transform_points(face.landmarks68, m),
                embedding=face.embedding, yaw=face.yaw, pitch=face.pitch, roll=face.roll + roll_offset,
                extra=dict(face.extra))


def find_tilted(fa, image: np.ndarray, config: PreprocessConfig
                ) -> Optional[tuple[float, np.ndarray, list[Face], Callable[[Face], Face]]]:
    """(tilt in degrees, the rotated pixels, their faces, a function mapping a face back onto `image`)
    for a head tilted so far that only a rotated copy shows it."""
    for angle in TILTS:
        m, size = _rotation(image.shape, angle)
        rotated = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        faces = _coarse(fa, rotated, config)
        if faces:
            back = invert(m)
            # OpenCV's positive angle turns the picture counter-clockwise, which uprights a face that was
            # tilted clockwise (positive roll): the face's roll on the photo is its roll here + angle.
            return angle, rotated, faces, (lambda f, back=back, angle=angle: map_face(f, back, angle))
    return None


ROLL_REFINE_FROM = 8.0  # degrees: a face estimated at least this tilted gets its roll measured again upright


def refine_roll(fa, image: np.ndarray, face: Face, rounds: int = 3) -> float:
    """The face's roll measured again on copies turned to undo the tilt found so far.

    dlib's shape predictor fits a tilted face poorly from an upright detection box: a head tilted by
    30° reads as 13°, one by 38° as 5°. Turning the face upright by the first estimate and measuring
    the remainder, until it is small, recovers the tilt (30° → 29°)."""
    total = float(face.roll)
    if abs(total) < ROLL_REFINE_FROM:
        return total
    cx, cy = (float(v) for v in face.center)
    half = 1.6 * max(face.size, 40.0)
    h, w = image.shape[:2]
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    centre = (cx - x0, cy - y0)
    for _ in range(rounds):
        m = cv2.getRotationMatrix2D(centre, total, 1.0)  # counter-clockwise by the clockwise tilt: upright
        upright = cv2.warpAffine(region, m, (region.shape[1], region.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        faces = fa.analyze(upright, embed=False)
        if not faces:
            break
        near = min(faces, key=lambda f: float(np.linalg.norm(f.center - np.asarray(centre))))
        total += float(near.roll)
        if abs(near.roll) < 2.0:
            break
    return total
