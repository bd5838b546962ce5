"""Face-region masks from landmarks (uint8, 0 or 255, same H x W as the image).

With MediaPipe's mesh the face follows the mesh's own oval (forehead included, up to where the mesh
ends) and the eyes, brows and lips are the mesh's polygons; with 68 points the masks follow the jaw
line and lifted brows; with 5 points only they are ellipses fitted to the eye/nose/mouth layout.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..faces.landmarks_mediapipe import BROW_LEFT, BROW_RIGHT, EYE_LEFT, EYE_RIGHT, FACE_OVAL, LIPS
from ..faces.types import Face

_JAW = list(range(0, 17))
_BROW_L, _BROW_R = list(range(17, 22)), list(range(22, 27))
_EYE_L, _EYE_R = list(range(36, 42)), list(range(42, 48))
_LIPS = list(range(48, 60))


def _hull(mask: np.ndarray, pts: np.ndarray, value: int = 255) -> None:
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), value)


def _ellipse_from_5(shape_hw: tuple[int, int], lm5: np.ndarray, scale: float = 1.0) -> np.ndarray:
    mask = np.zeros(shape_hw, np.uint8)
    eyes = (lm5[0] + lm5[1]) / 2
    mouth = (lm5[3] + lm5[4]) / 2
    iod = float(np.linalg.norm(lm5[1] - lm5[0]))
    center = eyes + (mouth - eyes) * 0.45
    axes = (int(iod * 1.05 * scale), int(iod * 1.45 * scale))
    angle = float(np.degrees(np.arctan2(lm5[1][1] - lm5[0][1], lm5[1][0] - lm5[0][0])))
    cv2.ellipse(mask, (int(center[0]), int(center[1])), axes, angle, 0, 360, 255, -1)
    return mask


def _oval(face: Face, forehead: float) -> np.ndarray:
    """The mesh's face oval, its points above the brows brought down to at most `forehead` x the
    brow-to-chin height above them (the mesh's own top is about 0.5)."""
    mesh = np.asarray(face.mesh, np.float32)
    oval = mesh[FACE_OVAL].copy()
    brows = mesh[np.concatenate([BROW_LEFT, BROW_RIGHT])].mean(0)
    chin = mesh[152]
    up_vec = brows - chin
    length = float(np.linalg.norm(up_vec)) + 1e-6
    up = up_vec / length
    height = (oval - brows) @ up  # above the brow line: > 0
    cap = forehead * length
    over = height > cap
    oval[over] -= np.outer(height[over] - cap, up)
    return oval


def face_mask(shape_hw: tuple[int, int], face: Face, forehead: float = 0.5) -> np.ndarray:
    """The whole face: the mesh's oval, or the jaw line plus the forehead, up to `forehead` x brow-to-chin
    height above the brows."""
    if face.mesh is not None:
        mask = np.zeros(shape_hw, np.uint8)
        cv2.fillPoly(mask, [np.round(_oval(face, forehead)).astype(np.int32)], 255)
        return mask
    if face.landmarks68 is None:
        return _ellipse_from_5(shape_hw, face.landmarks5)
    lm = face.landmarks68
    jaw = lm[_JAW]
    brows = lm[17:27]
    chin = lm[8]
    up_vec = (brows.mean(0) - chin)
    up = up_vec / (np.linalg.norm(up_vec) + 1e-6)
    lift = np.linalg.norm(up_vec) * forehead
    top = brows + up * lift * np.array([[0.6], [0.8], [0.9], [1.0], [1.0], [1.0], [1.0], [0.9], [0.8], [0.6]])
    mask = np.zeros(shape_hw, np.uint8)
    _hull(mask, np.vstack([jaw, top]))
    return mask


def inner_face_mask(shape_hw: tuple[int, int], face: Face) -> np.ndarray:
    """Brows, eyes, nose and mouth with a margin: the part whose geometry carries identity."""
    if face.landmarks68 is None:
        return _ellipse_from_5(shape_hw, face.landmarks5, scale=0.8)
    lm = face.landmarks68
    mask = np.zeros(shape_hw, np.uint8)
    pts = np.vstack([lm[17:27], lm[1:16]])
    _hull(mask, pts)
    return mask


def features_mask(shape_hw: tuple[int, int], face: Face, grow: float = 0.08) -> np.ndarray:
    """Eyes, brows and lips (grown by `grow` x eye distance): what skin retouch must not touch."""
    mask = np.zeros(shape_hw, np.uint8)
    if face.mesh is not None:
        mesh = np.asarray(face.mesh, np.float32)
        cv2.fillPoly(mask, [np.round(mesh[idx]).astype(np.int32) for idx in (EYE_LEFT, EYE_RIGHT, LIPS)], 255)
        for idx in (BROW_LEFT, BROW_RIGHT):
            _hull(mask, mesh[idx])
    elif face.landmarks68 is None:
        r = max(2, int(face.eye_distance * 0.22))
        for p in face.landmarks5[[0, 1]]:
            cv2.circle(mask, (int(p[0]), int(p[1])), r, 255, -1)
        m = face.landmarks5[3:5]
        cv2.ellipse(mask, (int(m[:, 0].mean()), int(m[:, 1].mean())),
                    (int(np.linalg.norm(m[1] - m[0]) * 0.65) + 1, r), 0, 0, 360, 255, -1)
        return mask
    else:
        for idx in (_EYE_L, _EYE_R, _LIPS, _BROW_L, _BROW_R):
            _hull(mask, face.landmarks68[idx])
    return dilate(mask, max(1, int(face.eye_distance * grow)))


def skin_mask(shape_hw: tuple[int, int], face: Face) -> np.ndarray:
    """Face skin: the face mask minus eyes, brows and lips (DESIGN.md section 6)."""
    return cv2.bitwise_and(face_mask(shape_hw, face), cv2.bitwise_not(features_mask(shape_hw, face)))


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Float32 0..1 alpha with a soft edge `pixels` wide, falling off *inside* the mask."""
    if pixels <= 0:
        return (mask > 0).astype(np.float32)
    eroded = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1,) * 2))
    k = 2 * pixels + 1
    soft = np.clip(cv2.GaussianBlur(eroded.astype(np.float32) / 255.0, (k, k), pixels / 2), 0, 1)
    # The square blur kernel reaches ~0.4 x pixels further along diagonals than the round erosion
    # took away: cut it at the mask so nothing outside the mask is ever touched.
    return soft * (mask > 0)


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the mask's nonzero pixels grown by `pad` and clipped to the image; None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    h, w = mask.shape[:2]
    return (max(0, int(xs.min()) - pad), max(0, int(ys.min()) - pad),
            min(w, int(xs.max()) + 1 + pad), min(h, int(ys.max()) + 1 + pad))


def blend(base: np.ndarray, content: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """base * (1 - alpha) + content * alpha as uint8; pixels where alpha == 0 are `base`'s, bit for bit."""
    a = alpha[..., None].astype(np.float32)
    out = np.clip(base.astype(np.float32) * (1 - a) + content.astype(np.float32) * a + 0.5, 0, 255).astype(np.uint8)
    keep = alpha <= 0
    out[keep] = base[keep]
    return out


def band_blend(base: np.ndarray, content: np.ndarray, mask: np.ndarray, feather_px: int, bands: int = 3) -> np.ndarray:
    """Multi-band blend of `content` into `base` inside `mask` (uint8): each band of detail (a difference
    of Gaussians, finest first) crosses over a band as wide as its own scale, so the colour fades in over
    a wide border and the skin's texture over a narrow one, and no band shows an edge. `feather_px` is the
    middle band's width. Pixels outside `mask` are `base`'s, bit for bit."""
    b, c = base.astype(np.float32), content.astype(np.float32)
    out = b.copy()
    prev_b, prev_c = b, c
    for i in range(bands):
        width = max(1, int(round(feather_px * 2.0 ** (i - (bands - 1)))))
        alpha = feather(mask, width)[..., None]
        if i < bands - 1:
            sigma = max(0.8, width / 2.0)
            low_b, low_c = cv2.GaussianBlur(prev_b, (0, 0), sigma), cv2.GaussianBlur(prev_c, (0, 0), sigma)
            out += alpha * ((prev_c - low_c) - (prev_b - low_b))
            prev_b, prev_c = low_b, low_c
        else:
            out += alpha * (prev_c - prev_b)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)  # every band's alpha is 0 outside the mask: base there
