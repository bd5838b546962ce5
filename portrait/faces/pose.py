"""Head pose (yaw, pitch, roll in degrees) from landmarks.

With 68 points: cv2.solvePnP against a generic 3-D face; yaw and roll are reliable, pitch carries an
offset from the generic model (see PITCH_OFFSET below). With dlib's own 5 points (two corners per eye and the
nose base, `pose_from_dlib5`): yaw from the nose base's sideways offset and the far eye's foreshortening, roll
from the eyes, a rough pitch. With ArcFace-order points from a detector (`pose_from_5`): a geometric estimate
from the nose's offset to the eye/mouth frame.
Sign conventions: yaw > 0 when the face turns towards the image's right; roll > 0 clockwise.
"""

from __future__ import annotations

import math

import numpy as np

# Generic face, millimetre-ish units: nose tip, chin, eye outer corners, mouth corners.
_MODEL_3D = np.array(
    [[0.0, 0.0, 0.0], [0.0, -330.0, -65.0], [-225.0, 170.0, -135.0], [225.0, 170.0, -135.0],
     [-150.0, -150.0, -125.0], [150.0, -150.0, -125.0]],
    dtype=np.float64,
)
_IDX_68 = [30, 8, 36, 45, 48, 54]
# Pitch from the generic model varied -6..-25 degrees on frontal public-domain portraits (astronaut
# -25, Grace Hopper -6, Tom Hanks -12): no single offset fits, so selection relies on yaw and roll
# and uses pitch only with a wide bound.
PITCH_OFFSET = 0.0


def roll_from_eyes(lm5: np.ndarray) -> float:
    d = lm5[1] - lm5[0]
    return math.degrees(math.atan2(float(d[1]), float(d[0])))


def _eye_level(points: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[float, np.ndarray]:
    """The roll of the eye line, and `points` about the eye midpoint turned so that line is level."""
    roll = roll_from_eyes(np.stack([left, right]))
    c, s = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    return roll, (points - (left + right) / 2) @ np.array([[c, -s], [s, c]]).T


def pose_from_5(lm5: np.ndarray) -> tuple[float, float, float]:
    """Geometric yaw/pitch/roll from the 5 ArcFace-order points."""
    roll, p = _eye_level(lm5, lm5[0], lm5[1])
    iod = max(float(p[1, 0] - p[0, 0]), 1e-6)
    mouth_mid = (p[3] + p[4]) / 2
    # Nose tip's horizontal offset from the eye/mouth centre line, relative to half the eye distance.
    axis_x = (0.0 + float(mouth_mid[0])) / 2
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, (float(p[2, 0]) - axis_x) / (0.5 * iod) * 0.85))))
    # Nose height between eye line (0) and mouth line; ~0.45 on a frontal face.
    span = max(float(mouth_mid[1]), 1e-6)
    ratio = float(p[2, 1]) / span
    pitch = (0.45 - ratio) * 150.0
    return yaw, pitch, roll


def pose_from_68(lm68: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
    """solvePnP yaw/pitch/roll from 68 landmarks; image_size is (width, height)."""
    import cv2

    w, h = image_size
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
    pts = lm68[_IDX_68].astype(np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL_3D, pts, cam, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP failed")
    yaw, pitch = _yaw_pitch(rvec)
    return yaw, pitch, roll_from_eyes(
        np.stack([lm68[36:42].mean(0), lm68[42:48].mean(0)]) if lm68[36, 0] < lm68[45, 0]
        else np.stack([lm68[42:48].mean(0), lm68[36:42].mean(0)])
    )


def pose_from_mesh(mesh: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float] | None:
    """Yaw/pitch/roll from Face Mesh points [1, 152, 33, 263, 61, 291] and the generic face, by SQPNP (the
    iterative solver flipped a 56-degree face to -69 on the issue's ladder); roll from the eye corners.
    None when the solver fails."""
    import cv2

    from .landmarks_mediapipe import MESH_POSE

    w, h = image_size
    pts = np.ascontiguousarray(np.asarray(mesh, np.float64)[MESH_POSE, :2])
    # The optical centre on the face itself: the turn is measured against the line of sight to the face,
    # so a face off to one side reads the same as its mirror image.
    cx, cy = pts.mean(axis=0)
    cam = np.array([[w, 0, cx], [0, w, cy], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL_3D, pts, cam, np.zeros(4), flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return None
    yaw, pitch = _yaw_pitch(rvec)
    m = np.asarray(mesh, np.float64)
    return yaw, pitch, roll_from_eyes(np.stack([m[33, :2], m[263, :2]]))


def _yaw_pitch(rvec: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch (image conventions, module docstring) from a solvePnP rotation of the generic face."""
    import cv2

    rmat, _ = cv2.Rodrigues(rvec)
    sy = math.hypot(rmat[0, 0], rmat[1, 0])
    pitch = math.degrees(math.atan2(rmat[2, 1], rmat[2, 2]))
    yaw = math.degrees(math.atan2(-rmat[2, 0], sy))
    if pitch > 90:  # the generic model's up axis points to -y in the image: fold pitch into (-90, 90]
        pitch -= 180
    elif pitch < -90:
        pitch += 180
    return -yaw, -(pitch - PITCH_OFFSET)


# Yaw from dlib's 5 points, calibrated against the 68-point solvePnP yaw on 79 faces (insightface's and
# face_recognition's example photos, 3DDFA's samples, the astronaut, Grace Hopper; each also mirrored):
# score = nose offset / eye distance - 0.5 * ln(near eye width / far eye width), yaw = atan(score / 0.3).
# Mean absolute difference to the 68-point yaw 10 degrees (the 68-point yaw itself is a generic-model fit).
DLIB5_YAW_SCALE = 0.3
DLIB5_EYE_WEIGHT = 0.5
# The nose base sits about 0.8 eye distances below the eye line on a level frontal face.
DLIB5_NOSE_DROP = 0.8


def pose_from_dlib5(points: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch and roll from dlib's 5-point model as it marks them: points 0-1 and 2-3 the outer and
    inner corners of the two eyes, point 4 the nose base (subnasale)."""
    e1, e2 = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
    w1, w2 = float(np.linalg.norm(points[0] - points[1])), float(np.linalg.norm(points[2] - points[3]))
    (left, w_left), (right, w_right) = sorted([(e1, w1), (e2, w2)], key=lambda t: float(t[0][0]))
    iod = max(float(np.linalg.norm(right - left)), 1e-6)
    roll, levelled = _eye_level(points, left, right)
    nose = levelled[4]
    # A face turned towards the image's right shows its nose base right of the eye midpoint and its
    # right-hand (far) eye narrower than the left.
    eyes = math.log(max(w_right, 1e-6) / max(w_left, 1e-6))
    score = float(nose[0]) / iod - DLIB5_EYE_WEIGHT * eyes
    yaw = math.degrees(math.atan(score / DLIB5_YAW_SCALE))
    # Rough: the nose base's drop below the eye line shrinks when the head tips back, grows when it bows.
    pitch = (DLIB5_NOSE_DROP - float(nose[1]) / iod) / DLIB5_NOSE_DROP * 60.0
    return yaw, pitch, roll
