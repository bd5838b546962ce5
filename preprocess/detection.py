"""Finding the faces of one photo with as little work as possible: a coarse pass, one finer pass only
when it could change the answer, an upsampled pass before saying `no_face`."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from portrait.faces import Face, get_face_analysis
from portrait.faces.analysis import FaceAnalysis

from .config import PreprocessConfig

DETECTABLE_PX = 80  # smallest face (px) the default detector finds without upsampling


def keep_faces(faces: list[Face], min_score: float) -> list[Face]:
    """Faces above the detector's floor, largest first. A weak detection (below 0.5, and below half the
    best one's score) is dropped when a confident face is present: HOG's false positives on clothing
    and backgrounds score about 0.3, real faces about 1 (turned or blurred ones still about 0.45)."""
    kept = [f for f in faces if f.score >= min_score]
    best = max((f.score for f in kept), default=0.0)
    kept = [f for f in kept if f.score >= 0.5 or f.score >= 0.5 * best]
    return sorted(kept, key=lambda f: -f.size)


def detect_at(fa: FaceAnalysis, image: np.ndarray, side: int, min_score: float) -> list[Face]:
    """Faces found on a copy of `image` whose longer side is `side`, in `image` coordinates."""
    h, w = image.shape[:2]
    s = min(1.0, side / max(h, w))
    if s >= 1.0:
        return keep_faces(fa.analyze(image, embed=False), min_score)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return [f.scaled(1.0 / s) for f in keep_faces(fa.analyze(small, embed=False), min_score)]


def detect_faces(fa: FaceAnalysis, image: np.ndarray, config: PreprocessConfig) -> list[Face]:
    """Faces (largest first, no embeddings) in `image` coordinates, with as little work as possible.

    The coarse pass (`coarse_side`) is enough when its largest face is so big that every face that
    could compete with it (>= dominance_ratio x its size) is detectable at that scale too. Otherwise
    one more pass at the smallest scale where such a competitor would be detectable (at most the
    analysis image), and when no face was found at all, one upsampled pass, so that small faces are
    reported as `face_too_small` rather than `no_face`."""
    h, w = image.shape[:2]
    long_side = max(h, w)
    min_score = config.detection_score()
    coarse = min(config.coarse_side, long_side)
    faces = detect_at(fa, image, coarse, min_score)
    if faces:
        s = coarse / long_side
        competitor = faces[0].size * s * config.dominance_ratio  # px at the coarse scale
        if competitor >= DETECTABLE_PX or coarse >= long_side:
            return faces
        side = min(long_side, int(np.ceil(coarse * DETECTABLE_PX / competitor)))
        return detect_at(fa, image, side, min_score) or faces
    if coarse < long_side:
        faces = detect_at(fa, image, long_side, min_score)
    if faces or not config.face.detector.startswith("dlib"):
        return faces
    fine = replace(config.face, upsample=config.face.upsample + 1,
                   detect_max_side=max(config.face.detect_max_side, long_side))
    return keep_faces(get_face_analysis(fine).analyze(image, embed=False), min_score)
