"""dlib's ResNet identity descriptor (128-d, compare by L2; same person below ~0.6)."""

from __future__ import annotations

import numpy as np

from ..models.manifest import Manifest
from .landmarks_dlib import DlibShapePredictor, dlib_rect
from .types import Face


class DlibResnetEmbedder:
    name = "dlib-resnet"
    dim = 128
    metric = "l2"
    same_person_threshold = 0.6

    def __init__(self, manifest: Manifest):
        import dlib

        self._rec = dlib.face_recognition_model_v1(str(manifest.require("dlib-resnet")))
        self._manifest = manifest
        self._sp5: DlibShapePredictor | None = None  # loaded only for a face without a mesh

    def _shape(self, image: np.ndarray, face: Face):
        """The descriptor aligns its 150x150 chip on dlib's 5-point layout: the mesh's own eye corners and
        nose base where the face has a mesh (no dlib landmark model), else dlib's 5-point model."""
        import dlib

        if face.mesh is not None:
            from .landmarks_mediapipe import dlib5_from_mesh

            pts = [dlib.point(int(round(float(x))), int(round(float(y)))) for x, y in dlib5_from_mesh(face.mesh)]
            return dlib.full_object_detection(dlib_rect(face.box), pts)
        if self._sp5 is None:
            self._sp5 = DlibShapePredictor(self._manifest, 5)
        return self._sp5.full_object(image, face.box)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        shape = self._shape(image, face)
        return np.asarray(self._rec.compute_face_descriptor(image, shape, 0), dtype=np.float32)
