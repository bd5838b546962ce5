"""How visible the seam around a painted face is (issue 17 item 5's measure; bench/template_choice.py
reports it): the colour step (CIELAB, 1976) from the face's border ring, just inside the template
slot's face mask, to the skin just outside it, less the step the template itself has there.

A face's edge is not the colour of the neck even untouched (the jaw's shadow, a lit forehead), so the
step is measured in the template too and the seam is the length of the difference of the two steps:
0 for the template itself, growing as the painted face's edge departs from the template's own.
Outside the mask lie skin (neck, ears, forehead), hair, collar and backdrop: only the outer pixels
whose *template* colour is within SKIN_DELTA of the template face's own skin count, so skin meets
skin. Lower is better; under about 3 a person sees no edge, above 10 the face reads as pasted.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..faces.types import Face
from .masks import dilate, face_mask, skin_mask
from .skin_tone import to_lab

SKIN_DELTA = 18.0   # outer pixels farther than this from the template's face skin are not skin
MIN_PX = 50         # fewer ring pixels than this on either side: no measure (nan)


def seam_delta_e(output: np.ndarray, template: np.ndarray, face: Face, ring: float = 0.12) -> float:
    """The seam's delta E (module docstring) of `output`, painted on `template` at `face`; `ring` sets the
    band width as a fraction of the eye distance. nan where either band is too small."""
    if output.shape != template.shape:
        raise ValueError(f"output {output.shape} and template {template.shape} differ in size")
    hw = template.shape[:2]
    band = max(2, int(round(face.eye_distance * ring * 4)))
    mask = face_mask(hw, face)
    inner = (mask > 0) & (cv2.erode(mask, np.ones((band, band), np.uint8)) == 0)
    outer = (dilate(mask, band) > 0) & (mask == 0)
    tpl_skin = to_lab(template[skin_mask(hw, face) > 0])
    if len(tpl_skin) < MIN_PX:
        return float("nan")
    ref = np.median(tpl_skin, axis=0)
    out_lab = to_lab(template[outer])
    skin_like = np.linalg.norm(out_lab - ref, axis=1) < SKIN_DELTA
    if skin_like.sum() < MIN_PX or inner.sum() < MIN_PX:
        return float("nan")
    def step(img: np.ndarray) -> np.ndarray:
        return np.median(to_lab(img[inner]), axis=0) - np.median(to_lab(img[outer][skin_like]), axis=0)

    return float(np.linalg.norm(step(output) - step(template)))
