"""Colour transfer between image regions: Reinhard's mean/std matching in CIE LAB.

Pure numpy/cv2, no histograms. Statistics are taken only inside the masks, so a face's skin can be
matched to another face's skin without the backgrounds, hair or clothes pulling the result.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..imageio import check_rgb


def lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 CIELAB (L 0..100, a*/b* signed), unquantised."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def rgb(lab_img: np.ndarray) -> np.ndarray:
    """float CIELAB -> uint8 RGB, out-of-gamut values clipped."""
    out = lab_img.astype(np.float32).copy()
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    out[..., 1:] = np.clip(out[..., 1:], -127, 127)
    return np.clip(cv2.cvtColor(out, cv2.COLOR_LAB2RGB) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def fit_gamut(lab_img: np.ndarray, where: np.ndarray | None = None, steps: int = 7) -> np.ndarray:
    """`lab_img` with the chroma of each pixel (under `where`, bool) that sRGB would clip cut just enough
    that no channel reaches white, lightness and hue kept: a light, saturated colour (a lit forehead taken
    lighter) fades towards white as a real highlight does, instead of turning the hue of the channel that
    clipped first."""
    out = lab_img.astype(np.float32).copy()
    sel = np.ones(out.shape[:2], bool) if where is None else where.copy()
    sel &= out[..., 0] < 99.5  # white itself has no chroma to cut

    def clips(px: np.ndarray) -> np.ndarray:  # at 0.99 (252 of 255), rounding stays short of 255
        return cv2.cvtColor(px.reshape(-1, 1, 3), cv2.COLOR_LAB2RGB).reshape(-1, 3).max(-1) >= 0.99

    px = out[sel]
    if not len(px):  # nothing to fit (a template whose skin the carry did not reach)
        return out
    bad = clips(px)
    if not bad.any():
        return out
    px_bad = px[bad]
    lo, hi = np.zeros(len(px_bad), np.float32), np.ones(len(px_bad), np.float32)
    for _ in range(steps):  # bisection on the chroma's scale
        mid = (lo + hi) / 2
        trial = px_bad.copy()
        trial[:, 1:] *= mid[:, None]
        over = clips(trial)
        hi = np.where(over, mid, hi)
        lo = np.where(over, lo, mid)
    px_bad[:, 1:] *= lo[:, None]
    px[bad] = px_bad
    out[sel] = px
    return out


def _stats(lab: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    sel = lab.reshape(-1, 3) if mask is None else lab[mask > 0]
    if len(sel) < 16:
        raise ValueError("colour transfer mask selects fewer than 16 pixels")
    return sel.mean(0), sel.std(0) + 1e-3


def reinhard_transfer(src_rgb: np.ndarray, ref_rgb: np.ndarray, src_mask: np.ndarray | None = None,
                      ref_mask: np.ndarray | None = None, strength: float = 1.0,
                      max_gain: float = 1.5) -> np.ndarray:
    """`src_rgb` recoloured so that its LAB mean/std inside `src_mask` match `ref_rgb`'s inside `ref_mask`.

    The whole source image is transformed (callers blend it through their own mask); `strength` in
    0..1 interpolates between the source (0) and the full transfer (1). `max_gain` bounds the std
    ratio of each channel to [1/max_gain, max_gain]: skin statistics of a wrinkled or ruddy template
    would otherwise blow up the spread of features that lie outside the skin (lips turned magenta
    in the demo). Masks are uint8, nonzero =
    selected; None selects the whole image. Returns uint8 RGB of the source's size.
    """
    check_rgb(src_rgb, "src_rgb")
    check_rgb(ref_rgb, "ref_rgb")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in 0..1, got {strength}")
    src_lab, ref_lab = lab(src_rgb), lab(ref_rgb)
    mu_s, sd_s = _stats(src_lab, src_mask)
    mu_r, sd_r = _stats(ref_lab, ref_mask)
    if max_gain < 1.0:
        raise ValueError(f"max_gain must be >= 1, got {max_gain}")
    gain = np.clip(sd_r / sd_s, 1.0 / max_gain, max_gain)
    out = (src_lab - mu_s) * gain + mu_r
    return rgb(src_lab + (out - src_lab) * strength)
