"""Face fusion: put the user's reference face into a template's face slot.

Engines (`engine=`):
  classic (default, offline): a similarity transform fitted on the inner-face landmarks (brows, eyes,
      nose, mouth) carries the user's face into the template *keeping the user's face geometry*;
      the region blended is the user's face (jaw line and brows, warped) intersected with the
      template's face region (with the mesh: its face oval); by default the user's skin tone is
      carried to the template's visible skin and the template's light to the user's face
      (post/tone.py), joined by a multi-band blend; `skin="template"` instead matches the user's skin
      to the template's in LAB (Reinhard) with a feathered edge. DESIGN.md section 6 has the measurements behind these choices:
      a per-triangle warp onto the template's landmarks keeps the *template's* identity, and
      seamlessClone pulls the template's gradients in, so neither is used.
  onnx: an inswapper-style ONNX swapper (portrait.post.swap_onnx.OnnxSwapper, manifest model
      "inswapper"), given the user's ArcFace embedding.

`paste_5pt` is the 5-point similarity-transform paste of the reference face: the "replaced image"
that feeds the keypoint / openpose control of the diffusion stages.

Outside the (dilated) template face region, the pixels are the template's exactly, except the
template's visible skin that the classic engine's default `skin="user"` moves to the user's tone
(post/tone.py); the result's `mask` marks every pixel that may differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Mapping

import cv2
import numpy as np

from ..errors import ConfigError
from ..faces.align import similarity_transform, transform_points
from ..faces.types import Face
from ..imageio import check_rgb
from . import masks
from . import tone
from .color import lab, reinhard_transfer, rgb
from .skin_tone import ita_of_lab

FusionEngine = Literal["classic", "onnx"]
ENGINES: tuple[str, ...] = FusionEngine.__args__  # type: ignore[attr-defined]

SKINS = ("user", "template")  # whose skin tone the portrait has (fuse's `skin`)
FRINGES = ("keep", "cut")  # a user's fringe: pasted with their face (keep), or left out (cut; fuse's `fringe`)
RELIGHT_SIGMA = 0.8  # the template's light reaches the face at scales above this x the eye distance
BACKDROP = 0.05  # person alpha below this: backdrop, never recoloured
TONE_GAP_ITA = 30.0  # skin="user" carries the user's tone when the two skins' ITA differ by this much (about two Monk tones)
INNER_68 = slice(17, 68)  # brows, nose, eyes, mouth: the points whose layout carries identity


@dataclass
class FusionResult:
    image: np.ndarray  # uint8 RGB, the template's size
    mask: np.ndarray  # uint8 0/255: the pixels that may differ from the template
    engine: str
    details: dict = field(default_factory=dict)


# -- geometry -------------------------------------------------------------------------------------
def transform_face(face: Face, m: np.ndarray) -> Face:
    """`face` with its box and landmarks mapped through the 2x3 similarity `m` (embedding kept)."""
    corners = np.array([[face.box[0], face.box[1]], [face.box[2], face.box[1]],
                        [face.box[0], face.box[3]], [face.box[2], face.box[3]]], np.float32)
    c = transform_points(corners, m)
    box = np.array([c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()], np.float32)
    lm68 = None if face.landmarks68 is None else transform_points(face.landmarks68, m)
    mesh = None if face.mesh is None else transform_points(np.asarray(face.mesh, np.float32), m)
    return replace(face, box=box, landmarks5=transform_points(face.landmarks5, m), landmarks68=lm68, mesh=mesh,
                   extra=dict(face.extra))


def fusion_transform(ref_face: Face, template_face: Face) -> tuple[np.ndarray, str]:
    """2x3 similarity taking the reference image onto the template, and which points fitted it.

    Inner-face 68 points when both faces have them (the user's geometry is kept: only rotation,
    uniform scale and translation), else the 5 points.
    """
    if ref_face.landmarks68 is not None and template_face.landmarks68 is not None:
        return similarity_transform(ref_face.landmarks68[INNER_68], template_face.landmarks68[INNER_68]), "inner68"
    return similarity_transform(ref_face.landmarks5, template_face.landmarks5), "5pt"


def template_region(shape_hw: tuple[int, int], template_face: Face, margin: float = 0.2) -> np.ndarray:
    """The template's face region (face mask dilated by `margin` x eye distance): nothing outside it changes."""
    return masks.dilate(masks.face_mask(shape_hw, template_face), int(round(template_face.eye_distance * margin)))


def _check(template_rgb, template_face, ref_rgb, ref_face) -> None:
    check_rgb(template_rgb, "template_rgb")
    if ref_rgb is not None:
        check_rgb(ref_rgb, "ref_rgb")
    for f, what in ((template_face, "template_face"), (ref_face, "ref_face")):
        if f is not None and (f.landmarks5 is None or np.asarray(f.landmarks5).shape != (5, 2)):
            raise ValueError(f"{what} needs landmarks5 of shape (5, 2)")


def pick_reference(ref_faces: list[Face], template_face: Face) -> int:
    """Index of the reference face whose pose best matches the template face (|yaw| difference, plus
    half the pitch difference): the classic engine keeps the user's geometry, so a reference turned
    like the template fuses with less distortion and keeps more likeness."""
    if not ref_faces:
        raise ValueError("no reference faces to choose from")
    cost = [abs(f.yaw - template_face.yaw) + 0.5 * abs(f.pitch - template_face.pitch) for f in ref_faces]
    return int(np.argmin(cost))


# -- the 5-point paste ----------------------------------------------------------------------------
def paste_5pt(template_rgb: np.ndarray, template_face: Face, ref_rgb: np.ndarray, ref_face: Face,
              feather: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The reference face pasted onto the template by a 5-point similarity transform, no recolouring.

    Returns (rgb, mask): mask (uint8 0/255) is the pasted face region (the reference's face mask,
    warped, within the template's face region). `feather` is the soft edge, x eye distance.
    """
    _check(template_rgb, template_face, ref_rgb, ref_face)
    h, w = template_rgb.shape[:2]
    m = similarity_transform(ref_face.landmarks5, template_face.landmarks5)
    warped_face = transform_face(ref_face, m)
    mask = cv2.bitwise_and(masks.face_mask((h, w), warped_face), template_region((h, w), template_face))
    if not mask.any():
        return template_rgb.copy(), mask
    warped = cv2.warpAffine(ref_rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    alpha = masks.feather(mask, max(1, int(template_face.eye_distance * feather)))
    return masks.blend(template_rgb, warped, alpha), (alpha > 0).astype(np.uint8) * 255


# -- classic fusion -------------------------------------------------------------------------------
def _brows(face: Face, shape_hw: tuple[int, int]) -> np.ndarray:
    """The template's brows with a margin: the user's face must cover them (a user with lower brows would
    otherwise wear two pairs)."""
    out = np.zeros(shape_hw, np.uint8)
    if face.landmarks68 is None:
        return out
    for idx in (slice(17, 22), slice(22, 27)):
        cv2.fillConvexPoly(out, cv2.convexHull(np.round(face.landmarks68[idx]).astype(np.int32)), 255)
    return masks.dilate(out, max(2, int(round(face.eye_distance * 0.15))))


FRINGE_SKIN = 0.35  # above the user's brows, a pixel this unlike their skin is hair (skin_likeness, 0..1)
FRINGE_WIDTH = 0.8  # x eye distance: hair across the forehead this wide is a fringe


def _brow_line(face: Face) -> tuple[np.ndarray, np.ndarray] | None:
    """(points along the brows' lower edge, left to right; the face's unit up vector): from the 68 points'
    brows, or, with five points, the eye line raised by 0.3 eye distances (where brows sit)."""
    if face.landmarks68 is not None:
        lm = face.landmarks68
        up = lm[17:27].mean(0) - lm[8]
        return lm[17:27][np.argsort(lm[17:27, 0])], up / (np.linalg.norm(up) + 1e-6)
    if face.landmarks5 is None:
        return None
    lm = np.asarray(face.landmarks5, np.float32)
    left, right = (lm[0], lm[1]) if lm[0][0] <= lm[1][0] else (lm[1], lm[0])
    across = right - left
    up = np.array([across[1], -across[0]], np.float32)  # perpendicular to the eyes, away from the mouth
    up /= np.linalg.norm(up) + 1e-6
    if np.dot(up, (left + right) / 2 - lm[2]) < 0:
        up = -up
    t = np.linspace(-0.35, 1.35, 9)[:, None]
    return (left + t * across + up * 0.3 * face.eye_distance).astype(np.float32), up


def _fringe(warped_lab: np.ndarray, user: Face, user_mask: np.ndarray) -> np.ndarray:
    """The user's fringe inside their face mask above the brows, as a uint8 mask: left out of the fusion,
    so the template's own forehead (or hair) shows there, not a strip of the user's hair cut off by the
    mask's edge. Hair is told from skin by the user's own skin colour (post/tone.py); `warped_lab` is the
    user's photo in CIELAB, aligned as `user` and `user_mask` are."""
    out = np.zeros(user_mask.shape, np.uint8)
    line = _brow_line(user)
    stats = tone.skin_stats(warped_lab, masks.skin_mask(user_mask.shape, user) & user_mask) if line else None
    if stats is None:
        return out
    brows, up = line
    far = user.eye_distance * 4.0
    lift = user.eye_distance * 0.12  # the brows' own hairs and the skin just above them stay the user's
    above = np.zeros(user_mask.shape, np.uint8)
    cv2.fillPoly(above, [np.round(np.vstack([brows + up * lift, (brows + up * far)[::-1]])).astype(np.int32)], 255)
    hair = (tone.skin_likeness(warped_lab, stats) < FRINGE_SKIN) & (above > 0) & (user_mask > 0)
    k = max(3, int(round(user.eye_distance * 0.06)) | 1)
    hair = cv2.morphologyEx(hair.astype(np.uint8) * 255, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))  # no pores
    hair = cv2.morphologyEx(hair, cv2.MORPH_CLOSE, np.ones((3 * k, 3 * k), np.uint8))  # the shine between strands
    # A fringe hangs from the hair above and across the forehead: only parts that reach the mask's top edge,
    # and only when together they span FRINGE_WIDTH eye distances (a shine, a mole, a shadow or a stray
    # lock stays the user's).
    rim = (user_mask > 0) & (cv2.erode(user_mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8)) == 0) & (above > 0)
    _, labels, boxes, _ = cv2.connectedComponentsWithStats(hair)
    touching = set(np.unique(labels[rim & (hair > 0)]).tolist()) - {0}
    if not touching:
        return out
    # A fringe parted by strands of skin is still one fringe: the span of all its parts counts.
    span = (max(boxes[i, cv2.CC_STAT_LEFT] + boxes[i, cv2.CC_STAT_WIDTH] for i in touching)
            - min(boxes[i, cv2.CC_STAT_LEFT] for i in touching))
    if span < FRINGE_WIDTH * user.eye_distance:
        return out
    return cv2.bitwise_and(masks.dilate(hair, k), above)  # a fringe: so are its loose strands, above the brows


def _carry_user_tone(template_rgb: np.ndarray, template_face: Face, user_median: np.ndarray,
                     strength: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole template with its visible skin in the user's tone (post/tone.py); (uint8 RGB, weight map).
    The skin is looked for on the person (selfie segmentation, shipped) or, without it, near the face."""
    h, w = template_rgb.shape[:2]
    ed = template_face.eye_distance
    where = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = template_face.box
    where[max(0, int(y0 - ed)):, max(0, int(x0 - 3 * ed)):min(w, int(x1 + 3 * ed))] = 1.0
    from . import segmentation  # the shipped MediaPipe model; a missing runtime leaves the window alone

    if segmentation.available():
        where *= segmentation.person_alpha(template_rgb)
        where[where < BACKDROP] = 0.0  # the backdrop stays the template's, bit for bit
    carried, weight = tone.carry_tone(lab(template_rgb), masks.skin_mask((h, w), template_face), user_median,
                                      where, strength)
    out = rgb(carried)
    keep = weight <= 1e-3
    out[keep] = template_rgb[keep]
    weight[keep] = 0.0
    return out, weight


def _template_chroma(face_rgb: np.ndarray, template_lab: np.ndarray, strength: float) -> np.ndarray:
    """The face's lightness in the template's own colour, pixel by pixel: on a black-and-white (or toned)
    template the face is as grey (or as sepia) as the print. Reinhard's bounded gain alone left a dark or
    ruddy face's chroma at two thirds of its spread: a faint colour cast on a grey portrait."""
    face = lab(face_rgb)
    face[..., 1:] += (template_lab[..., 1:] - face[..., 1:]) * float(strength)
    return rgb(face)


def _fuse_classic(template_rgb: np.ndarray, template_face: Face, ref_rgb: np.ndarray, ref_face: Face, *,
                  blend: float, color_strength: float, feather: float, forehead: float,
                  margin: float, skin: str = "user", fringe: str = "keep") -> FusionResult:
    h, w = template_rgb.shape[:2]
    region = template_region((h, w), template_face, margin)
    x0, y0, x1, y1 = masks.bounding_box(region, pad=4)
    # Work inside the face's bounding box only: large templates cost no more than small ones.
    m, fitted_on = fusion_transform(ref_face, template_face)
    m_roi = m.copy()
    m_roi[:, 2] -= (x0, y0)
    tpl = template_rgb[y0:y1, x0:x1]
    rh, rw = tpl.shape[:2]
    warped = cv2.warpAffine(ref_rgb, m_roi, (rw, rh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    shift = np.array([[1, 0, -x0], [0, 1, -y0]], np.float64)
    user = transform_face(ref_face, m_roi)
    tface = transform_face(template_face, shift)
    warped_lab, tpl_lab = lab(warped), lab(tpl)
    user_mask = masks.face_mask((rh, rw), user, forehead=forehead)
    if fringe == "cut":
        user_mask = user_mask & ~_fringe(warped_lab, user, user_mask)
    user_mask = user_mask | _brows(tface, (rh, rw))
    mask = cv2.bitwise_and(user_mask, region[y0:y1, x0:x1])
    if mask.sum() < 255 * 64:
        raise ValueError("the reference face and the template face do not overlap after alignment")
    src_skin = cv2.bitwise_and(masks.skin_mask((rh, rw), user), mask)
    ref_skin = masks.skin_mask((rh, rw), tface)
    feather_px = max(1, int(round(template_face.eye_distance * feather)))
    enough = np.count_nonzero(src_skin) >= 64 and np.count_nonzero(ref_skin) >= 64
    out = template_rgb.copy()
    changed = np.zeros((h, w), np.uint8)
    carried_px = 0
    # skin="user": the user's tone is carried only across a real difference of tone (ITA TONE_GAP_ITA apart);
    # skins of one tone group, and a black-and-white template (no tone to carry), keep the Reinhard match
    # below, which looks most natural there (the template's own light and colour).
    carry = None
    t_stats = tone.skin_stats(tpl_lab, ref_skin) if enough else None
    grey = t_stats is not None and tone.is_grey(t_stats)
    if skin == "user" and color_strength > 0 and enough and not grey:
        u_stats = tone.skin_stats(warped_lab, src_skin)
        if (t_stats is not None and u_stats is not None
                and abs(ita_of_lab(u_stats[0]) - ita_of_lab(t_stats[0])) >= TONE_GAP_ITA):
            carry = u_stats[0]
    if carry is not None:
        # The user's tone on all the template's skin, the template's light on the user's face (post/tone.py).
        base, weight = _carry_user_tone(template_rgb, template_face, carry, color_strength)
        sigma = RELIGHT_SIGMA * template_face.eye_distance
        face = rgb(tone.relight(warped_lab, src_skin, lab(base[y0:y1, x0:x1]), ref_skin, sigma))
        content = face if blend >= 1 else masks.blend(base[y0:y1, x0:x1], face, np.full(mask.shape, blend, np.float32))
        out = base
        out[y0:y1, x0:x1] = masks.band_blend(base[y0:y1, x0:x1], content, mask, feather_px)
        changed[weight > 0] = 255
        carried_px = int(np.count_nonzero(weight))
    else:
        if color_strength > 0 and enough:
            warped = reinhard_transfer(warped, tpl, src_skin, ref_skin, strength=color_strength)
        if grey and color_strength > 0:
            warped = _template_chroma(warped, tpl_lab, color_strength)
        alpha = masks.feather(mask, feather_px) * float(blend)
        out[y0:y1, x0:x1] = masks.blend(tpl, warped, alpha)
    roi_changed = np.any(out[y0:y1, x0:x1] != template_rgb[y0:y1, x0:x1], axis=-1) & (mask > 0)
    changed[y0:y1, x0:x1][roi_changed] = 255
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    details = {"fitted_on": fitted_on, "scale": round(scale, 4),
               "rotation_deg": round(float(np.degrees(np.arctan2(m[1, 0], m[0, 0]))), 2),
               "mask_pixels": int(np.count_nonzero(changed)), "blend": blend, "color_strength": color_strength,
               "skin": skin, "fringe": fringe, "tone_carried_pixels": carried_px}
    return FusionResult(out, changed, "classic", details)


# -- ONNX swapper ---------------------------------------------------------------------------------
_SWAPPERS: dict[tuple, object] = {}


def _swapper(manifest, device: str):
    from .swap_onnx import OnnxSwapper

    key = (str(manifest.path("inswapper")), device)
    if key not in _SWAPPERS:
        _SWAPPERS[key] = OnnxSwapper(manifest, device)
    return _SWAPPERS[key]


def _fuse_onnx(template_rgb: np.ndarray, template_face: Face, source_embedding, manifest, device: str,
               margin: float, feather: float, blend: float = 1.0) -> FusionResult:
    if source_embedding is None:
        raise ConfigError("engine 'onnx' needs source_embedding (the user's ArcFace embedding)")
    if manifest is None:
        from ..models.manifest import get_manifest

        manifest = get_manifest()
    swapped = _swapper(manifest, device).swap(template_rgb, template_face, np.asarray(source_embedding))
    check_rgb(swapped, "swapper output")
    h, w = template_rgb.shape[:2]
    region = template_region((h, w), template_face, margin)
    # `blend` is the swapped face's opacity, as for the classic engine (EasyPhoto scales its fusion mask by the
    # before / after face-fusion ratios the same way).
    alpha = masks.feather(region, max(1, int(round(template_face.eye_distance * feather)))) * float(blend)
    out = masks.blend(template_rgb, swapped, alpha)
    return FusionResult(out, (alpha > 0).astype(np.uint8) * 255, "onnx", {"device": device})


def fuse(template_rgb: np.ndarray, template_face: Face, ref_rgb: np.ndarray | None, ref_face: Face | None,
         engine: str = "classic", manifest=None, source_embedding: np.ndarray | None = None, *,
         blend: float = 1.0, color_strength: float = 1.0, feather: float = 0.08, forehead: float = 0.3,
         margin: float = 0.2, device: str = "cpu", skin: str = "user", fringe: str = "keep") -> FusionResult:
    """Put the reference face (`ref_rgb`, `ref_face`) into `template_face` of `template_rgb`.

    blend: 0..1 opacity of the user's face; skin (classic): "user" carries the user's skin tone to the
    template's visible skin (neck, ears, hands) and gives the face the template's light, joined by a
    multi-band blend; "template" recolours the face to the template's skin (Reinhard) with a feathered
    edge, the only change inside the face region (and what a black-and-white template always gets); color_strength: 0..1 how far either colour step goes;
    feather: soft edge width x eye distance; forehead: how far above the brows the user's face
    reaches (x brow-to-chin height); margin: the template face region's dilation x eye distance
    (nothing outside it changes); fringe (classic): "keep" pastes a user's fringe with their face, "cut"
    leaves it out so the template's forehead shows (it costs likeness: README, "Seams").
    Faces without 68 landmarks use the 5-point fit and ellipse masks.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown fusion engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if skin not in SKINS:
        raise ConfigError(f"unknown skin {skin!r}; choose one of {', '.join(SKINS)}")
    if fringe not in FRINGES:
        raise ConfigError(f"unknown fringe {fringe!r}; choose one of {', '.join(FRINGES)}")
    if not 0.0 <= blend <= 1.0:
        raise ConfigError(f"blend must be in 0..1, got {blend}")
    _check(template_rgb, template_face, ref_rgb if engine == "classic" else None,
           ref_face if engine == "classic" else None)
    if engine == "onnx":
        return _fuse_onnx(template_rgb, template_face, source_embedding, manifest, device, margin, feather, blend)
    if ref_rgb is None or ref_face is None:
        raise ValueError("engine 'classic' needs ref_rgb and ref_face")
    return _fuse_classic(template_rgb, template_face, ref_rgb, ref_face, blend=blend, color_strength=color_strength,
                         feather=feather, forehead=forehead, margin=margin, skin=skin, fringe=fringe)


def fuse_slots(template_rgb: np.ndarray, template_faces: list[Face], identities: Mapping[int, tuple],
               engine: str = "classic", **kwargs) -> FusionResult:
    """Multi-face templates: `identities` maps a face slot (index into `template_faces`) to that
    slot's identity, a tuple (ref_rgb, ref_face[, source_embedding]). Slots are fused in turn; the
    result's mask is the union and `details["slots"]` holds each slot's details."""
    out = template_rgb
    changed = np.zeros(template_rgb.shape[:2], np.uint8)
    details: dict = {"slots": {}}
    for slot, ident in sorted(identities.items()):
        if not 0 <= slot < len(template_faces):
            raise ConfigError(f"face slot {slot} does not exist: the template has {len(template_faces)} face(s)")
        ref_rgb, ref_face, *emb = ident
        res = fuse(out, template_faces[slot], ref_rgb, ref_face, engine=engine,
                   source_embedding=emb[0] if emb else None, **kwargs)
        out = res.image
        changed |= res.mask
        details["slots"][slot] = res.details
    return FusionResult(out, changed, engine, details)
