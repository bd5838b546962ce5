"""dlib's ResNet identity descriptor (128-d, compare by L2; same person below ~0.6)."""

from __future__ import annotations

import numpy as np

from ..models.manifest import Manifest
from .landmarks_dlib import DlibShapePredictor
from .types import Face


class DlibResnetEmbedder:
    name = "dlib-resnet"
    dim = 128
    metric = "l2"
    same_person_threshold = 0.6

    def __init__(self, manifest: Manifest):
        import dlib

        self._rec = dlib.face_recognition_model_v1(str(manifest.require("dlib-resnet")))
        # The descriptor aligns its 150x150 chip from dlib's own 5-point shape.
        self._sp5 = DlibShapePredictor(manifest, 5)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        shape = self._sp5.full_object(image, face.box)
        return np.asarray(self._rec.compute_face_descriptor(image, shape, 0), dtype=np.float32)
