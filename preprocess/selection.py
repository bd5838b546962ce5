"""Selection: verdicts with reason codes, the top-k training photos and the reference face."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .config import REASONS, PreprocessConfig
from .types import PhotoResult

# Reasons that end a photo's analysis: nothing else about it can be judged.
HARD_REASONS = frozenset({"unreadable", "unsupported_format", "too_large", "too_small", "no_face", "multiple_faces"})


def order_reasons(reasons: Sequence[str]) -> list[str]:
    """Unique reasons in the stable order of REASONS."""
    seen = set(reasons)
    unknown = seen.difference(REASONS)
    if unknown:
        raise ValueError(f"unknown reason codes {sorted(unknown)}")
    return [r for r in REASONS if r in seen]


def blur_limit(sharpness: Sequence[float], config: PreprocessConfig) -> float:
    """The sharpness a face needs: the absolute floor, or blur_relative x the set's median when the set
    has 3 or more faces to take a median of."""
    vals = sorted(float(v) for v in sharpness if v is not None)
    if len(vals) < 3:
        return config.blur_floor
    return max(config.blur_floor, config.blur_relative * float(np.median(vals)))


def face_reasons(scores: dict, face_px: float, face_fraction: float, yaw: float, pitch: float, roll: float,
                 identity_distance: Optional[float], identity_threshold: float, config: PreprocessConfig,
                 sharpness_raw: Optional[float] = None, sharp_limit: Optional[float] = None) -> list[str]:
    """Reasons for a photo with one dominant face. `different_person` stands alone: the quality of a
    photo of someone else does not matter. `sharpness_raw` is judged against `sharp_limit` (blur_limit)."""
    if identity_distance is not None and identity_distance > identity_threshold:
        return ["different_person"]
    out = []
    if face_px < config.min_face_px or face_fraction < config.min_face_fraction:
        out.append("face_too_small")
    limit = config.blur_floor if sharp_limit is None else sharp_limit
    if sharpness_raw is not None and sharpness_raw < limit:
        out.append("blurry")
    if scores["exposure"] is not None and scores["exposure"] < config.exposure_threshold:
        out.append("bad_exposure")
    if abs(yaw) > config.max_yaw or abs(pitch) > config.max_pitch or abs(roll) > config.max_roll:
        out.append("extreme_pose")
    return out


def select_top_k(photos: Sequence[PhotoResult], k: int) -> list[PhotoResult]:
    """The accepted photos with the highest total score (ties: the earlier file), best first."""
    accepted = [p for p in photos if p.accepted]
    order = sorted(range(len(accepted)), key=lambda i: (-float(accepted[i].scores["total"] or 0.0), i))
    return [accepted[i] for i in order[:k]]


def reference_score(p: PhotoResult) -> float:
    """Frontal, sharp and central to the identity: what a fusion source and a likeness target need."""
    s = p.scores
    return 0.4 * float(s["identity"] or 0) + 0.3 * float(s["pose"] or 0) + 0.2 * float(s["sharpness"] or 0) \
        + 0.1 * float(s["face_size"] or 0)


def choose_reference(selected: Sequence[PhotoResult]) -> Optional[PhotoResult]:
    if not selected:
        return None
    return max(enumerate(selected), key=lambda t: (reference_score(t[1]), -t[0]))[1]
