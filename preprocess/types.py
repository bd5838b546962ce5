"""Result types of preprocessing (plain dataclasses; `report.json` is built from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from portrait.faces import Face

SCORE_KEYS = ("identity", "quality", "sharpness", "exposure", "face_size", "pose", "total")


@dataclass
class PhotoResult:
    """One photo's verdict. `face` is in the original photo's pixel coordinates (after EXIF rotation)."""

    file: str
    accepted: bool = False
    reasons: list[str] = field(default_factory=list)
    face: Optional[Face] = None
    scores: dict = field(default_factory=lambda: {k: None for k in SCORE_KEYS})
    message: str = ""  # the human detail behind the first reason
    path: Optional[Path] = None
    crop: Optional[str] = None  # the crop's file name in train/ when selected
    facts: dict = field(default_factory=dict)  # format, mode, original_size, exif_rotated, bytes, faces

    def image(self, max_pixels: int = 1 << 62, max_bytes: int = 1 << 62) -> np.ndarray:
        """The photo at full resolution, upright as judged (EXIF orientation applied, and turned when no
        face showed until it was): the pixels `face`'s coordinates refer to."""
        from portrait.imageio import decode_image

        from .orientation import turn_upright

        return turn_upright(decode_image(self.path, max_pixels=max_pixels, max_bytes=max_bytes).pixels,
                            int(self.facts.get("turned", 0)))

    def to_dict(self) -> dict:
        extra = {k: self.facts[k] for k in ("turned", "crop_padding", "restored", "retouched") if k in self.facts}
        return {
            "file": self.file,
            "accepted": self.accepted,
            "reasons": list(self.reasons),
            "face": None if self.face is None else self.face.to_dict(),
            "scores": {k: (None if self.scores.get(k) is None else round(float(self.scores[k]), 4))
                       for k in SCORE_KEYS},
            "message": self.message,
            "crop": self.crop,
            **extra,
        }


@dataclass
class PreprocessedPhotos:
    photos: list[PhotoResult]
    selected: list[str]
    reference: Optional[str]
    reference_face: Optional[Face]  # full-resolution coordinates of the reference photo
    reference_path: Optional[Path]
    embeddings: dict[str, np.ndarray]  # identity vectors of the accepted photos
    centroid: Optional[np.ndarray]
    report: dict
    accepted_count: int
    train_dir: Optional[Path]
    engines: dict
    timings: dict = field(default_factory=dict)  # seconds per stage
    decode_limits: dict = field(default_factory=dict, repr=False)  # max_pixels / max_bytes for the lazy decode
    _reference_image: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def reference_image(self) -> Optional[np.ndarray]:
        """Full-resolution RGB of the reference photo (EXIF applied), decoded on first access only, so
        preprocessing alone never pays for a full-size decode it does not need."""
        if self._reference_image is None and self.reference is not None:
            self._reference_image = self.photo(self.reference).image(**self.decode_limits)
        return self._reference_image

    def photo(self, file: str) -> PhotoResult:
        for p in self.photos:
            if p.file == file:
                return p
        raise KeyError(file)


def verdict_message(result: PreprocessedPhotos, min_photos: int) -> str:
    """One paragraph for the user: how many photos are usable and what to do about the others."""
    from .config import REASONS, describe

    total = len(result.photos)
    counts = {r: sum(r in p.reasons for p in result.photos) for r in REASONS}
    # The size advice states the limits this run applied.
    advice = [describe(r, c, total, result.decode_limits) for r, c in sorted(counts.items(), key=lambda t: -t[1]) if c]
    head = (f"{result.accepted_count} of {total} photos accepted, {len(result.selected)} selected for training."
            if result.accepted_count >= min_photos else
            f"Only {result.accepted_count} of {total} photos are usable; at least {min_photos} are needed.")
    return " ".join([head] + [a[0].upper() + a[1:] + "." for a in advice])
