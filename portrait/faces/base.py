"""The small engine interfaces behind face analysis. One engine per module implements one of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from .types import Face


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    landmarks5: np.ndarray | None = None  # detectors that give keypoints (SCRFD) fill this


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a uint8 RGB image, best first."""


@runtime_checkable
class Landmarker(Protocol):
    name: str
    points: int  # 5 or 68

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(points, 2) float32 landmarks for the face in `box`."""


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    metric: Literal["l2", "cosine"]
    same_person_threshold: float  # distance below which two faces are the same person

    def embed(self, image: np.ndarray, face: "Face") -> np.ndarray:
        """Identity vector of `face` (its box and landmarks5 are set) in `image`."""


def distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """Distance between two identity vectors under the embedder's metric (0 = identical)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if metric == "l2":
        return float(np.linalg.norm(a - b))
    if metric == "cosine":
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            return 1.0
        return float(1.0 - np.dot(a, b) / (na * nb))
    raise ValueError(f"unknown metric {metric!r}")


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0
