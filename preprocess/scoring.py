"""Per-photo scores in 0..1 (1 = best): identity, sharpness, exposure, face size, pose, and totals.

- identity: distance of the photo's identity vector to a robust centroid of all photos' faces (the
  medoid, then the mean of the faces within the same-person threshold of it), mapped so that 1 is
  the centroid itself and 0.5 the same-person threshold.
- sharpness: variance of the Laplacian of the face, aligned to a fixed 128 px layout (so the
  measure does not depend on the photo's resolution), divided by the face's grey-level variance (so
  it does not depend on exposure or contrast), on a log scale.
- exposure: the face's mean luminance inside a comfortable band, minus clipped shadows/highlights.
- face_size: the face's size in original pixels against what a training crop needs.
- pose: how frontal the head is (yaw, pitch, roll against the configured limits).
- quality: geometric mean of sharpness, exposure and face_size; total: 0.4 identity + 0.4 quality +
  0.2 pose.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from portrait.faces import Face
from portrait.faces.align import align_face
from portrait.faces.base import distance

from .config import PreprocessConfig

SHARP_LO, SHARP_HI = 0.05, 1.5  # normalised Laplacian variance mapped to 0 and 1 (log scale)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def face_chip(image: np.ndarray, face: Face, size: int = 128) -> np.ndarray:
    """The face aligned on its 5 points into a `size` square (ArcFace layout), greyscale float32."""
    chip, _ = align_face(image, face.landmarks5, size, 1.0, border="replicate")
    return cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY).astype(np.float32)


def sharpness_raw(chip: np.ndarray) -> float:
    """Variance of the Laplacian over the central face, relative to the grey-level variance."""
    c = chip[16:-16, 16:-16]
    lap = cv2.Laplacian(c, cv2.CV_32F, ksize=3)
    return float(lap.var() / max(float(c.var()), 1.0))


def frame_sharpness(image: np.ndarray, side: int = 256) -> float:
    """sharpness_raw of the whole photo at a fixed scale (longer side `side`): for a photo whose face cannot
    be found, whether it is far more blurred than the set's other photos."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=3).var() / max(float(grey.var()), 1.0))


def sharpness_score(raw: float) -> float:
    if raw <= 0:
        return 0.0
    return _clip01((math.log10(raw) - math.log10(SHARP_LO)) / (math.log10(SHARP_HI) - math.log10(SHARP_LO)))


def exposure_score(image: np.ndarray, face: Face) -> float:
    """1 when the face's mean luminance is in [0.3, 0.75] with little clipping; falls off outside."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = [int(round(v)) for v in face.box]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    region = image[y0:y1, x0:x1]
    lum = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    mean = float(lum.mean())
    lo, hi, fall = 0.3, 0.75, 0.2
    s = 1.0 - max(0.0, lo - mean, mean - hi) / fall
    clipped = float(((lum < 0.02) | (lum > 0.98)).mean())
    s -= max(0.0, clipped - 0.05) * 2.0
    return _clip01(s)


def needed_face_px(config: PreprocessConfig) -> float:
    """Face box size (px) that fills the training crop at 1:1 scale (no upscaling)."""
    # Eye distance in the ArcFace layout is ~0.315 of the crop; a dlib/SCRFD box is ~2.3 eye distances.
    return 0.315 * config.face_fraction * config.resolution * 2.3


def face_size_score(face_px: float, config: PreprocessConfig) -> float:
    """1 when the face needs no upscaling for the training crop; 0 at the face_too_small limit."""
    need, lo = needed_face_px(config), float(config.min_face_px)
    if face_px >= need:
        return 1.0
    return _clip01((face_px - lo) / max(need - lo, 1.0))


def pose_score(face: Face, config: PreprocessConfig) -> float:
    worst = max(abs(face.yaw) / config.max_yaw, abs(face.pitch) / config.max_pitch, abs(face.roll) / config.max_roll)
    return _clip01(1.0 - 0.5 * worst)  # 0.5 at the limit, 1 when frontal


def identity_score(dist: float, threshold: float) -> float:
    return _clip01(1.0 - 0.5 * dist / threshold)


def quality_score(sharpness: float, exposure: float, face_size: float) -> float:
    return float((max(sharpness, 1e-3) * max(exposure, 1e-3) * max(face_size, 1e-3)) ** (1 / 3))


def total_score(identity: float, quality: float, pose: float) -> float:
    return 0.4 * identity + 0.4 * quality + 0.2 * pose


def robust_centroid(embeddings: list[np.ndarray], metric: str, threshold: float) -> np.ndarray | None:
    """Medoid of the embeddings, refined to the mean of those within `threshold` of it.

    The medoid is the vector with the smallest summed distance to all others, so a minority of other
    people's photos cannot pull it away from the majority's identity the way a plain mean would.
    """
    if not embeddings:
        return None
    e = np.stack([np.asarray(v, dtype=np.float64) for v in embeddings])
    n = len(e)
    d = np.array([[distance(e[i], e[j], metric) for j in range(n)] for i in range(n)])
    medoid = e[int(np.argmin(d.sum(1)))]
    close = [e[i] for i in range(n) if distance(e[i], medoid, metric) <= threshold]
    c = np.mean(close, axis=0) if close else medoid
    if metric == "cosine":
        c = c / (np.linalg.norm(c) or 1.0)
    return c.astype(np.float32)
