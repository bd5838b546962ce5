"""A face's skin tone, measured from its pixels: the median CIELAB colour of the face skin (the face
mask less eyes, brows and lips), its individual typology angle (ITA) and the nearest tone of the Monk
Skin Tone scale (1 lightest .. 10 darkest).

Used to describe templates (`template.toml [measured] skin_tone`) and to pick templates whose visible
skin is close to the user's (`--template auto`). A measure of pixels, not of a person: lighting and a
black-and-white image move it, so an image with no colour reports `monk = 0` (unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..faces.types import Face
from .masks import skin_mask

# The ten Monk Skin Tone scale swatches (sRGB hex, as published with the scale), lightest first.
MONK_HEX = ("f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96", "a07e56", "825c43", "604134", "3a312a", "292420")
MIN_SKIN_PX = 200  # fewer skin pixels than this: no measure
GREY_CHROMA = 4.0  # median chroma (a*, b*) below this: a black-and-white image, tone unknown


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (N x 3 or H x W x 3) -> float CIELAB (L 0..100, a/b signed)."""
    f = cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3)
    f = f.astype(np.float32)
    return np.stack([f[:, 0] * 100.0 / 255.0, f[:, 1] - 128.0, f[:, 2] - 128.0], axis=1)


MONK_LAB = to_lab(np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in MONK_HEX], np.uint8))


@dataclass(frozen=True)
class SkinTone:
    lab: tuple[float, float, float]  # median CIELAB of the face skin
    ita: float                       # individual typology angle, degrees (higher: lighter)
    monk: int                        # nearest Monk scale tone 1..10; 0 when unknown (no colour, too few pixels)
    pixels: int                      # skin pixels measured

    def to_dict(self) -> dict:
        return {"lab": [round(v, 1) for v in self.lab], "ita": round(self.ita, 1), "monk": self.monk,
                "pixels": self.pixels}


def ita_of_lab(lab) -> float:
    """Individual typology angle: atan((L - 50) / b), degrees; above 55 very light, below -30 dark."""
    return float(np.degrees(np.arctan2(float(lab[0]) - 50.0, max(float(lab[2]), 1e-3))))


MONK_ITA = np.array([ita_of_lab(c) for c in MONK_LAB])


def monk_of_lab(lab) -> int:
    """The Monk tone (1..10) whose swatch's ITA is nearest to this colour's. ITA rather than distance in
    CIELAB: shading lowers a photographed face's lightness and its yellowness together, so the angle
    holds where the lightness alone reads every face some tones darker than the swatches."""
    return int(np.argmin(np.abs(MONK_ITA - ita_of_lab(lab)))) + 1


def skin_tone(rgb: np.ndarray, face: Face) -> SkinTone:
    """The face's skin tone in `rgb` (uint8 RGB H x W x 3). Highlights and shadows (the brightest and
    darkest 10 % of skin pixels by lightness) are left out before the median."""
    mask = skin_mask(rgb.shape[:2], face) > 0
    px = rgb[mask]
    if len(px) < MIN_SKIN_PX:
        return SkinTone((0.0, 0.0, 0.0), 0.0, 0, int(len(px)))
    lab = to_lab(px)
    lo, hi = np.percentile(lab[:, 0], [10, 90])
    core = lab[(lab[:, 0] >= lo) & (lab[:, 0] <= hi)]
    med = np.median(core if len(core) else lab, axis=0)
    ita = ita_of_lab(med)
    grey = float(np.hypot(med[1], med[2])) < GREY_CHROMA
    return SkinTone((float(med[0]), float(med[1]), float(med[2])), ita, 0 if grey else monk_of_lab(med), int(len(px)))
