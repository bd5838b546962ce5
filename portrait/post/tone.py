"""One person's skin in one light: the classic path's colour stage (issue 17 item 5).

A pasted face shows in two ways: its tone is not the neck's (a dark-skinned user's face on a template's
light neck and ears), and its light is not the template's (the user's window light on a studio's soft
box). The classic fusion therefore
1. carries the *user's* skin tone to the template's visible skin (`carry_tone`): every template pixel
   whose colour is near the template face's own skin (neck, ears, hands, the forehead left uncovered)
   takes the user's median skin: lightness by the ratio of the two medians (shade multiplies, so a
   shadowed neck stays as much darker than the face as it was) and chroma by the ratio of the two skins'
   chroma, the hue staying the template's; a lit skin taken lighter rolls off short of white
   (`shoulder`) and its chroma is cut where it would leave sRGB (`color.fit_gamut`); nothing on a
   black-and-white template, which has no tone to carry;
2. gives the user's face the template's light (`relight`): the face's low frequencies (a gain map on
   lightness, offsets on a* b*, from normalised Gaussian blurs over each face's skin, features left
   out) are swapped for those of the carried template, while everything finer than about the eye
   distance (the features, the skin's texture: what carries identity) stays the user's.
A black-and-white template has no tone to carry (and no colour to tell skin from a grey suit): the
fusion keeps its Reinhard match there.
At the face's border both sides then have the same low frequencies, and `masks.band_blend` joins them.

Arrays are float32 CIELAB (L 0..100, a*/b* signed), from `color.lab` and back to uint8 RGB with `color.rgb`.
"""

from __future__ import annotations

import cv2
import numpy as np

from .color import fit_gamut
from .skin_tone import GREY_CHROMA  # the skin's median chroma below this: black and white

MIN_SKIN = 64  # skin pixels needed on each side, else the stage leaves the image as it is


def skin_stats(lab_img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(median, robust spread) of the Lab pixels under `mask`; None with fewer than MIN_SKIN of them."""
    sel = lab_img[mask > 0]
    if len(sel) < MIN_SKIN:
        return None
    med = np.median(sel, axis=0)
    spread = 1.4826 * np.median(np.abs(sel - med), axis=0)
    # Bounded both ways: a lit and a shadowed cheek would otherwise spread it far enough to take in hair.
    return med.astype(np.float32), np.clip(spread, (3.0, 2.0, 2.0), (6.0, 4.0, 4.0)).astype(np.float32)


LIGHTNESS_SLACK = 1.5  # shade darkens skin (a neck under the jaw): lightness may stray this many times further


def skin_likeness(lab_img: np.ndarray, stats: tuple[np.ndarray, np.ndarray],
                  lightness_slack: float = LIGHTNESS_SLACK) -> np.ndarray:
    """Float32 0..1: 1 where a pixel's colour is within 2.5 spreads of the skin's median, 0 beyond 4;
    lightness counts `lightness_slack` times less than hue, so skin in shadow is still skin."""
    med, spread = stats
    scale = spread * np.array([lightness_slack, 1.0, 1.0], np.float32)
    d = np.sqrt((((lab_img - med) / scale) ** 2).sum(-1))
    return np.clip((4.0 - d) / 1.5, 0.0, 1.0).astype(np.float32)


def is_grey(stats: tuple[np.ndarray, np.ndarray]) -> bool:
    return bool(np.hypot(stats[0][1], stats[0][2]) < GREY_CHROMA)


def carry_tone(template_lab: np.ndarray, template_skin: np.ndarray, user_skin_median: np.ndarray,
               where: np.ndarray, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The template with its skin moved to the user's tone; (new Lab, the weight map 0..1 it used).

    `template_skin` (uint8) selects the template face's own skin, the colour reference for what counts
    as skin elsewhere; `where` (float 0..1) bounds the search (the person, near the face)."""
    stats = skin_stats(template_lab, template_skin)
    if stats is None or strength <= 0 or is_grey(stats):  # black and white: no tone to carry
        return template_lab, np.zeros(template_lab.shape[:2], np.float32)
    target = np.asarray(user_skin_median, np.float32)
    gain = float(np.clip(target[0] / max(stats[0][0], 1.0), 0.25, 4.0))  # shade multiplies: keep its ratios
    # Chroma the same way, by the ratio of the two skins' chroma; the hue stays the template's, its light's
    # colour. (An added a* b* offset pushed a shadowed neck, with less chroma, through grey into green, and
    # a turn towards the user's hue carried their photo's colour cast onto the template.)
    chroma_t, chroma_u = float(np.hypot(*stats[0][1:])), float(np.hypot(*target[1:]))
    c_gain = float(np.clip(chroma_u / max(chroma_t, 1.0), 0.4, 2.5))
    weight = cv2.GaussianBlur(skin_likeness(template_lab, stats), (0, 0), 1.5) * where  # no speckle at the edge
    k = weight * float(strength)
    out = template_lab.copy()
    lightness = template_lab[..., 0]
    out[..., 0] = lightness + k * (shoulder(lightness * gain) - lightness)
    out[..., 1:] *= (1.0 + k * (c_gain - 1.0))[..., None]
    # A lit forehead taken lighter leaves sRGB: its chroma is cut until no channel clips (color.fit_gamut).
    # Clipped, the red channel stopped first and the skin turned orange: 10-32% of a light user's carried
    # skin on 12 of the 30 single-face templates (4-7% on three more).
    return fit_gamut(out, k > 0), weight


KNEE_L = 90.0  # L* above which a lightened skin rolls off towards white instead of passing it


def shoulder(lightness: np.ndarray) -> np.ndarray:
    """L* unchanged up to KNEE_L, then rolled off smoothly (slope 1 at the knee) towards 100, never past
    it: a lit forehead taken much lighter stays short of white (past 100 it was white: 11% of the carried
    skin on flag-elder-suit)."""
    room = 100.0 - KNEE_L
    over = np.maximum(lightness - KNEE_L, 0.0)
    return np.where(lightness <= KNEE_L, lightness, KNEE_L + room * (1.0 - np.exp(-over / room))).astype(np.float32)


def lowpass(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The Gaussian low-pass of `img` from the pixels under `mask` only (normalised convolution), defined
    everywhere the blurred mask reaches (elsewhere: the masked mean)."""
    m = (mask > 0).astype(np.float32)
    num = cv2.GaussianBlur(img * m[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
    mean = (img[m > 0].mean(0) if m.any() else img.reshape(-1, img.shape[-1]).mean(0)).astype(np.float32)
    w = np.clip(den / 0.05, 0.0, 1.0)
    return np.where(den > 1e-4, num / np.maximum(den, 1e-4), mean) * w + mean * (1 - w)


def relight(user_lab: np.ndarray, user_skin: np.ndarray, target_lab: np.ndarray, target_skin: np.ndarray,
            sigma: float, max_gain: float = 1.6) -> np.ndarray:
    """`user_lab` with its low frequencies (scale `sigma`) replaced by `target_lab`'s: lightness by a
    gain map (bounded to 1/max_gain..max_gain), a* b* by an offset map."""
    lu, lt = lowpass(user_lab, user_skin, sigma), lowpass(target_lab, target_skin, sigma)
    out = user_lab.copy()
    gain = np.clip(lt[..., 0] / np.maximum(lu[..., 0], 1.0), 1.0 / max_gain, max_gain)
    out[..., 0] = user_lab[..., 0] * gain
    out[..., 1:] = user_lab[..., 1:] + (lt[..., 1:] - lu[..., 1:])
    return out
