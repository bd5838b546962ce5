"""Result types of face analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# The 5-point convention used everywhere (insightface / ArcFace order, image coordinates):
# 0 eye on the image's left, 1 eye on the image's right, 2 nose tip, 3 mouth corner left, 4 right.
# ArcFace's reference positions of those points in a 112x112 aligned crop.
ARCFACE_5PT_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


@dataclass
class Face:
    """One detected face, in the coordinates of the image it was found in."""

    box: np.ndarray  # (4,) float32: x0, y0, x1, y1
    score: float  # detector confidence (engine-specific scale)
    landmarks5: np.ndarray  # (5, 2) float32, ARCFACE order above
    landmarks68: Optional[np.ndarray] = None  # (68, 2) float32 (iBUG 300-W order) when the engine gives them
    embedding: Optional[np.ndarray] = None  # identity vector; compare with the engine's distance()
    yaw: float = 0.0  # degrees, + = face turned towards the image's right
    pitch: float = 0.0  # degrees, + = looking up
    roll: float = 0.0  # degrees, + = clockwise in the image
    mesh: Optional[np.ndarray] = None  # (468, 2) float32 MediaPipe Face Mesh points, with --landmarks mediapipe
    extra: dict = field(default_factory=dict)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """sqrt(area) of the box: a face-size measure independent of aspect."""
        return float(np.sqrt(max(self.width, 0.0) * max(self.height, 0.0)))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], dtype=np.float32)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks5[1] - self.landmarks5[0]))

    def scaled(self, s: float) -> "Face":
        """The same face in an image scaled by `s` (coordinates only; embedding and pose kept)."""
        return Face(
            box=self.box * s,
            score=self.score,
            landmarks5=self.landmarks5 * s,
            landmarks68=None if self.landmarks68 is None else self.landmarks68 * s,
            mesh=None if self.mesh is None else self.mesh * s,
            embedding=self.embedding,
            yaw=self.yaw,
            pitch=self.pitch,
            roll=self.roll,
            extra=dict(self.extra),
        )

    def to_dict(self) -> dict:
        """The report.json form (DESIGN.md section 5)."""
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks5": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks5],
            "yaw": round(float(self.yaw), 1),
            "pitch": round(float(self.pitch), 1),
            "roll": round(float(self.roll), 1),
            "score": round(float(self.score), 3),
        }
