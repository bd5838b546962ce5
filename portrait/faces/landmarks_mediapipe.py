"""MediaPipe Face Mesh: 468 points per face from Google's `face_landmark.tflite` (Apache-2.0, shipped in
portrait/faces/mediapipe_models/ with its LICENSE and NOTICE), run on the LiteRT runtime
(`ai-edge-litert`), not on mediapipe itself: mediapipe 0.10.21, the last wheel with these files, pins
numpy<2 and drags in opencv-contrib, jax and more.

The model wants a 192 x 192 crop of the face, upright and with margin. The crop comes from the face
detector's box (any detector), then again from the first pass's own points, turned so the eyes are
level, as MediaPipe's own tracking does. Points come back in image pixels, with a depth column.

Beside the 468 points: the 68-point iBUG subset that masks and fusion use (MESH_TO_68), the ArcFace
five (via that subset) and the dlib five that dlib's ResNet descriptor aligns on (MESH_TO_DLIB5).
"""

from __future__ import annotations

import math

import numpy as np

from ..models.manifest import Manifest

INPUT = 192
# The iBUG 300-W 68 points as Face Mesh vertices: jaw (image left to right), brows, nose bridge and
# base, eyes (from the outer corner, clockwise), outer and inner lips.
MESH_TO_68 = np.array([
    234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 1, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91, 78, 81, 13, 311, 308, 402, 14, 178,
])
# dlib's 5-point order: the image-right eye's outer and inner corner, the image-left eye's, the nose base.
MESH_TO_DLIB5 = np.array([263, 362, 33, 133, 2])
# Six points for head pose (nose tip, chin, eye outer corners, mouth corners), the order of pose._MODEL_3D.
MESH_POSE = np.array([1, 152, 33, 263, 61, 291])
# Face oval (clockwise from the top of the forehead), eye, brow and lip outlines, for masks.
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                      152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109])
EYE_RIGHT = np.array([33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7])
EYE_LEFT = np.array([362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382])
BROW_RIGHT = np.array([70, 63, 105, 66, 107, 55, 65, 52, 53, 46])
BROW_LEFT = np.array([336, 296, 334, 293, 300, 276, 283, 282, 295, 285])
LIPS = np.array([61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146])


def _crop_matrix(center: np.ndarray, side: float, angle_deg: float) -> np.ndarray:
    """The 2 x 3 affine taking the rotated square (center, side, angle) onto the INPUT x INPUT crop."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    half = side / 2
    # The crop's corners in the image: top-left, top-right, bottom-left of the turned square.
    ux, uy = np.array([c, s]) * half, np.array([-s, c]) * half
    src = np.float32([center - ux - uy, center + ux - uy, center - ux + uy])
    dst = np.float32([[0, 0], [INPUT, 0], [0, INPUT]])
    import cv2

    return cv2.getAffineTransform(src, dst)


class MeshLandmarker:
    """468 Face Mesh points for a face box; `points` = 68 for the iBUG subset (what FaceAnalysis asks)."""

    name = "mediapipe-mesh"
    points = 468

    def __init__(self, manifest: Manifest):
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError as exc:  # a core dependency: only a broken install lacks it
            from ..errors import ModelError

            raise ModelError("--landmarks mediapipe needs the LiteRT runtime: pip install ai-edge-litert") from exc
        from ..models.litert import load_interpreter

        self._it = load_interpreter(str(manifest.require("mediapipe-face-mesh")))
        self._in = self._it.get_input_details()[0]["index"]
        outs = self._it.get_output_details()
        self._pts = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1404)
        self._flag = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1)

    def _run(self, image: np.ndarray, center: np.ndarray, side: float, angle: float) -> tuple[np.ndarray, float]:
        import cv2

        m = _crop_matrix(center, side, angle)
        crop = cv2.warpAffine(image, m, (INPUT, INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self._it.set_tensor(self._in, (crop.astype(np.float32) / 255.0)[None])
        self._it.invoke()
        pts = self._it.get_tensor(self._pts).reshape(468, 3).astype(np.float64)
        presence = 1.0 / (1.0 + math.exp(-float(self._it.get_tensor(self._flag).ravel()[0])))
        inv = cv2.invertAffineTransform(m)
        xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
        z = pts[:, 2:] * (side / INPUT)
        return np.hstack([xy, z]).astype(np.float32), presence

    def mesh(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        """(468 x 3 points in image pixels with depth, face presence 0..1) for the face in `box`."""
        x0, y0, x1, y1 = (float(v) for v in box)
        w, h = x1 - x0, y1 - y0
        # A detector's box is tight around brows to chin: widen it and lift it to take in the forehead.
        pts, presence = self._run(image, np.array([(x0 + x1) / 2, (y0 + y1) / 2 - 0.1 * h]), 1.9 * max(w, h), 0.0)
        for _ in range(2):  # twice: a tilted face's first, upright crop places the eyes only roughly
            angle = math.degrees(math.atan2(pts[263, 1] - pts[33, 1], pts[263, 0] - pts[33, 0]))
            lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
            pts, presence = self._run(image, (lo + hi) / 2, 1.5 * float(max(hi - lo)), angle)
        return pts, presence

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 68-point iBUG subset (68 x 2)."""
        return self.mesh(image, box)[0][MESH_TO_68, :2]


def dlib5_from_mesh(mesh: np.ndarray) -> np.ndarray:
    return np.asarray(mesh, np.float32)[MESH_TO_DLIB5, :2]
