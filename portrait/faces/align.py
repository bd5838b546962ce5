"""5-point alignment: similarity transforms between a face's landmarks and a canonical layout."""

from __future__ import annotations

import numpy as np

from .types import ARCFACE_5PT_112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src→dst; 2x3 float64.

    Umeyama's closed form; exact for 2 points, least-squares for more.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var if var > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def template_points(size: int, face_fraction: float = 1.0) -> np.ndarray:
    """ArcFace's 5 reference points scaled to a `size` square crop.

    face_fraction < 1 zooms out (more context around the face): 0.5 puts the ArcFace 112 crop in the
    central half of the output, which suits training crops (hair, neck, shoulders visible).
    """
    pts = ARCFACE_5PT_112 / 112.0
    pts = (pts - 0.5) * face_fraction + 0.5
    return (pts * size).astype(np.float32)


def align_matrix(landmarks5: np.ndarray, size: int, face_fraction: float = 1.0) -> np.ndarray:
    """2x3 matrix taking image coordinates to the aligned `size` crop."""
    return similarity_transform(landmarks5, template_points(size, face_fraction))


def align_face(image: np.ndarray, landmarks5: np.ndarray, size: int = 112, face_fraction: float = 1.0,
               border: str = "reflect", interpolation: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The aligned square crop and its 2x3 matrix (image → crop). Eyes level, face centred.

    border "constant" fills with black (insightface's norm_crop); interpolation "linear" is its bilinear
    warp, "auto" cubic above 160 px and area below.
    """
    import cv2

    m = align_matrix(landmarks5, size, face_fraction)
    mode = {"reflect": cv2.BORDER_REFLECT101, "constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}[border]
    flags = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
             "auto": cv2.INTER_CUBIC if size > 160 else cv2.INTER_AREA}[interpolation]
    crop = cv2.warpAffine(image, m, (size, size), flags=flags, borderMode=mode, borderValue=(0, 0, 0))
    return crop, m


def invert(m: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return (np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(m).T).astype(np.float32)
