"""dlib shape predictors: 5 points (commercial-friendly) and 68 points (non-commercial licence)."""

from __future__ import annotations

import numpy as np

from ..models.manifest import Manifest
from .types import ARCFACE_5PT_112


def dlib_rect(box: np.ndarray):
    import dlib

    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


class DlibShapePredictor:
    def __init__(self, manifest: Manifest, points: int):
        import dlib

        if points not in (5, 68):
            raise ValueError("dlib shape predictors have 5 or 68 points")
        self.points = points
        self.name = f"dlib-{points}pt"
        self._sp = dlib.shape_predictor(str(manifest.require(self.name)))

    def full_object(self, image: np.ndarray, box: np.ndarray):
        return self._sp(image, dlib_rect(box))

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        shape = self.full_object(image, box)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def five_from_68(lm68: np.ndarray) -> np.ndarray:
    """ArcFace-order 5 points from iBUG 68: eye centres, nose tip, mouth corners."""
    a = lm68[36:42].mean(axis=0)
    b = lm68[42:48].mean(axis=0)
    left, right = (a, b) if a[0] <= b[0] else (b, a)
    m1, m2 = lm68[48], lm68[54]
    ml, mr = (m1, m2) if m1[0] <= m2[0] else (m2, m1)
    return np.stack([left, right, lm68[30], ml, mr]).astype(np.float32)


def five_from_dlib5(lm5: np.ndarray) -> np.ndarray:
    """ArcFace-order 5 points from dlib's 5 (two corners per eye, nose base).

    dlib's 5-point model has no mouth: eye centres and nose are fitted to ArcFace's reference
    geometry with a similarity transform, and the mouth corners are taken from that fit.
    """
    import cv2

    e1 = lm5[0:2].mean(axis=0)
    e2 = lm5[2:4].mean(axis=0)
    left, right = (e1, e2) if e1[0] <= e2[0] else (e2, e1)
    # dlib's point 4 is the nose base (subnasale); ArcFace's nose point sits a little above it.
    src = ARCFACE_5PT_112[:3].copy()
    src[2, 1] += 6.0
    dst = np.stack([left, right, lm5[4]]).astype(np.float32)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None:
        m = cv2.getAffineTransform(np.vstack([src[:2], src[:2].mean(0) + [0, 20]]).astype(np.float32),
                                   np.vstack([dst[:2], dst[:2].mean(0) + [0, 20]]).astype(np.float32))
    mouth = (np.hstack([ARCFACE_5PT_112[3:], np.ones((2, 1), np.float32)]) @ m.T).astype(np.float32)
    nose = (np.array([*ARCFACE_5PT_112[2], 1.0], np.float32) @ m.T).astype(np.float32)
    return np.stack([left, right, nose, mouth[0], mouth[1]]).astype(np.float32)
