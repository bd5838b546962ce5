"""Control images, inpaint masks and face crops for the diffusion stages: pure numpy / OpenCV.

Every function takes and returns uint8 RGB (H, W, 3) images or uint8 masks (0 / 255), so each can
be inspected alone. Nothing here imports torch.

Controls (what each ControlNet sees):
  canny      edges of the fused image (shape of the face to keep)
  openpose   an OpenPose "openpose_full" rendering of the face on black, what control_v11p_sd15_openpose
             was trained on: the body skeleton's head (nose and eyes as coloured keypoints, the nose-eye
             limbs as coloured sticks at 0.6, with OpenPose's colours) and the face keypoints as white
             dots of radius 3 (all 68 where there are 68, the 5 points otherwise)
  kps        InstantID's IdentityNet input, drawn as InstantX's `draw_kps`: the 5 keypoints joined to
             the nose by sticks of half-width 4 in the first point's colour, dimmed to 0.6, then the
             points as full-colour discs of radius 10
  color      EasyPhoto's colour-ControlNet input: the image at 1024 px on its short side, shrunk 24x
             (cubic), blown up again with nearest neighbours (a mosaic of ~43 cells) and resized back
  tile       the image itself, blurred by down- and up-scaling (the low frequencies to keep)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ..errors import ConfigError
from ..faces.types import Face
from ..post import masks as _masks

ControlName = Literal["canny", "openpose", "color", "tile"]
CONTROL_NAMES: tuple[str, ...] = ControlName.__args__  # type: ignore[attr-defined]

# InstantX's draw_kps: keypoint colours (eye, eye, nose, mouth, mouth) and the limbs joining them to the nose.
_KPS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
_KPS_LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))
KPS_STICK, KPS_RADIUS = 4, 10
# OpenPose's 18 body-keypoint colours; the head: nose 0, right eye 14, left eye 15, right ear 16, left ear 17,
# joined nose-eye by limbs 13 and 15 and eye-ear by limbs 14 and 16 (limb i drawn in colour i).
_POSE_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
                (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
                (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
_POSE_HEAD_LIMBS = ((0, 14, 13), (14, 16, 14), (0, 15, 15), (15, 17, 16))  # (from, to, colour index)
POSE_STICK, POSE_RADIUS, POSE_FACE_RADIUS = 4, 4, 3


def _rgb3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def canny(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edges as a 3-channel white-on-black image."""
    return _rgb3(cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high))


def _stick(canvas: np.ndarray, a, b, half_width: int, color) -> None:
    """An OpenPose / draw_kps limb: a filled ellipse from a to b, `half_width` thick (integer geometry)."""
    (x0, y0), (x1, y1) = a, b
    length = float(np.hypot(x0 - x1, y0 - y1))
    angle = int(np.degrees(np.arctan2(y0 - y1, x0 - x1)))
    centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
    cv2.fillConvexPoly(canvas, cv2.ellipse2Poly(centre, (int(length / 2), half_width), angle, 0, 360, 1), color)


def instantid_keypoints(shape_hw: tuple[int, int], faces: Face | list[Face]) -> np.ndarray:
    """InstantID's IdentityNet control image: InstantX's draw_kps of each face's 5 points."""
    h, w = shape_hw
    limbs = np.zeros((h, w, 3), np.uint8)
    faces = [faces] if isinstance(faces, Face) else faces
    for face in faces:
        kps = face.landmarks5
        for a, b in _KPS_LIMBS:
            _stick(limbs, kps[a], kps[b], KPS_STICK, _KPS_COLORS[a])
    canvas = (limbs * 0.6).astype(np.uint8)
    for face in faces:
        for (x, y), color in zip(face.landmarks5, _KPS_COLORS):
            cv2.circle(canvas, (int(x), int(y)), KPS_RADIUS, color, -1)
    return canvas


def _pose_head(face: Face) -> dict[int, np.ndarray]:
    """OpenPose body keypoints of the head that a face's landmarks give: nose (0), right eye (14, the one on
    the image's left in a frontal photo), left eye (15) and, with 68 points, the ears (16, 17) at the jaw's ends."""
    lm5 = face.landmarks5
    points = {0: lm5[2], 14: lm5[0], 15: lm5[1]}
    if face.landmarks68 is not None:
        lm = face.landmarks68
        points.update({0: lm[30], 14: lm[36:42].mean(0), 15: lm[42:48].mean(0), 16: lm[0], 17: lm[16]})
    return points


def openpose_face(shape_hw: tuple[int, int], faces: Face | list[Face]) -> np.ndarray:
    """OpenPose's "openpose_full" rendering of the faces (see the module docstring)."""
    h, w = shape_hw
    canvas = np.zeros((h, w, 3), np.uint8)
    faces = [faces] if isinstance(faces, Face) else faces
    heads = [_pose_head(f) for f in faces]
    for head in heads:
        for a, b, c in _POSE_HEAD_LIMBS:
            if a in head and b in head:
                layer = canvas.copy()
                _stick(layer, head[a], head[b], POSE_STICK, _POSE_COLORS[c])
                canvas = cv2.addWeighted(canvas, 0.4, layer, 0.6, 0)
    for head in heads:
        for i, (x, y) in head.items():
            cv2.circle(canvas, (int(x), int(y)), POSE_RADIUS, _POSE_COLORS[i], -1)
    for face in faces:
        points = face.landmarks68 if face.landmarks68 is not None else face.landmarks5
        for x, y in points:
            cv2.circle(canvas, (int(x), int(y)), POSE_FACE_RADIUS, (255, 255, 255), -1)
    return canvas


def face_keypoints(shape_hw: tuple[int, int], faces: Face | list[Face], style: str = "openpose") -> np.ndarray:
    """Face keypoints drawn on black: style 'openpose' (openpose_face) or 'kps' (instantid_keypoints)."""
    if style == "kps":
        return instantid_keypoints(shape_hw, faces)
    if style in ("openpose", "auto"):
        return openpose_face(shape_hw, faces)
    raise ValueError(f"unknown keypoint style {style!r}; choose 'openpose' or 'kps'")


def color_map(rgb: np.ndarray, ratio: int = 24, working: int = 1024) -> np.ndarray:
    """EasyPhoto's colour control image (see the module docstring): colour layout without detail."""
    h, w = rgb.shape[:2]
    k = working / min(h, w)
    wh = (max(64, int(round(w * k / 64)) * 64), max(64, int(round(h * k / 64)) * 64))
    big = cv2.resize(rgb, wh, interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)
    small = cv2.resize(big, (max(1, wh[0] // ratio), max(1, wh[1] // ratio)), interpolation=cv2.INTER_CUBIC)
    mosaic = cv2.resize(small, wh, interpolation=cv2.INTER_NEAREST)
    return cv2.resize(mosaic, (w, h), interpolation=cv2.INTER_CUBIC)


def tile(rgb: np.ndarray, factor: int = 4) -> np.ndarray:
    """The image blurred by a `factor` x down- and up-scale (the tile ControlNet's usual input)."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_controls(names: list[str] | tuple[str, ...], *, fused: np.ndarray, replaced: np.ndarray,
                  faces: Face | list[Face]) -> list[np.ndarray]:
    """The control images for `names`, in order: canny, colour and tile from `fused` (EasyPhoto's pass 1 feeds
    canny and colour the fused image), the OpenPose face from `faces` (the user's landmarks on `replaced`)."""
    out = []
    for name in names:
        if name == "canny":
            out.append(canny(fused))
        elif name == "openpose":
            out.append(face_keypoints(replaced.shape[:2], faces))
        elif name == "color":
            out.append(color_map(fused))
        elif name == "tile":
            out.append(tile(fused))
        else:
            raise ConfigError(f"unknown control {name!r}; choose from {', '.join(CONTROL_NAMES)}")
    return out


# -- masks ---------------------------------------------------------------------------------------

def inpaint_mask(shape_hw: tuple[int, int], face: Face, grow: float = 0.08) -> np.ndarray:
    """Pass 1: the face mask grown by `grow` x face size (covers the seam of the paste)."""
    return _masks.dilate(_masks.face_mask(shape_hw, face), max(1, round(face.size * grow)))


def edge_ring(mask: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Pass 2: a ring `inner` px inside to `outer` px outside the edge of `mask`."""
    k = 2 * max(1, inner) + 1
    eroded = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return cv2.subtract(_masks.dilate(mask, outer), eroded)


# -- crop around the face and paste back ---------------------------------------------------------

@dataclass(frozen=True)
class FaceCrop:
    """A square region of the template around a face, resized to `size` for the diffusion passes."""

    x0: int
    y0: int
    side: int  # the region's side in template pixels
    size: int  # the working resolution (multiple of 8)

    @property
    def scale(self) -> float:
        return self.size / self.side

    def crop(self, image: np.ndarray) -> np.ndarray:
        region = image[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side]
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        return cv2.resize(region, (self.size, self.size), interpolation=interp)

    def face(self, face: Face) -> Face:
        """`face` in crop coordinates."""
        moved = Face(box=face.box - np.array([self.x0, self.y0, self.x0, self.y0], np.float32),
                     score=face.score, landmarks5=face.landmarks5 - np.array([self.x0, self.y0], np.float32),
                     landmarks68=None if face.landmarks68 is None
                     else face.landmarks68 - np.array([self.x0, self.y0], np.float32),
                     embedding=face.embedding, yaw=face.yaw, pitch=face.pitch, roll=face.roll, extra=dict(face.extra))
        return moved.scaled(self.scale)

    def paste(self, template: np.ndarray, result: np.ndarray, mask: np.ndarray, feather_px: int = 0) -> np.ndarray:
        """`result` (crop-sized) pasted into a copy of `template` through `mask` (crop-sized, 0/255).

        Pixels where the resized mask is 0 are the template's, bit for bit.
        """
        if result.shape[:2] != (self.size, self.size) or mask.shape[:2] != (self.size, self.size):
            raise ValueError(f"result and mask must be {self.size}x{self.size}")
        interp = cv2.INTER_CUBIC if self.side > self.size else cv2.INTER_AREA
        back = cv2.resize(result, (self.side, self.side), interpolation=interp)
        m = cv2.resize(mask, (self.side, self.side), interpolation=cv2.INTER_NEAREST)
        alpha = (m > 0).astype(np.float32)
        if feather_px > 0:  # the feather's square blur kernel reaches past the mask's corners: clip it
            alpha *= _masks.feather(m, feather_px)
        out = template.copy()
        region = out[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side]
        a = alpha[:, :, None]
        blended = np.clip(region.astype(np.float32) * (1 - a) + back.astype(np.float32) * a + 0.5, 0, 255)
        inside = alpha > 0
        region[inside] = blended.astype(np.uint8)[inside]
        return out

    def full_mask(self, template_hw: tuple[int, int], mask: np.ndarray) -> np.ndarray:
        """A crop-sized mask in template coordinates (0 outside the crop)."""
        full = np.zeros(template_hw, np.uint8)
        full[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side] = cv2.resize(
            mask, (self.side, self.side), interpolation=cv2.INTER_NEAREST)
        return full


def face_crop(image_hw: tuple[int, int], face: Face, size: int = 512, expand: float = 3.0) -> FaceCrop:
    """The square region `expand` x the face box around the face, kept inside the image.

    `size` (the working resolution: 512 for SD 1.5, 1024 for SDXL) is rounded down to a multiple of 8.
    """
    if size < 8:
        raise ConfigError(f"crop size must be at least 8, got {size}")
    h, w = image_hw
    side = int(round(max(face.width, face.height) * expand))
    side = max(8, min(side, h, w))
    cx, cy = face.center
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return FaceCrop(x0, y0, side, size // 8 * 8)
