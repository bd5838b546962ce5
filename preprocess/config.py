"""PreprocessConfig: every threshold of intake, scoring and selection in one frozen dataclass.

Thresholds are in the units the report shows (scores in 0..1, angles in degrees, sizes in pixels of
the original photo), so a user reading report.json can tell how far a photo was from passing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from portrait.errors import ConfigError
from portrait.faces import FaceConfig
from portrait.imageio import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, READ_FORMATS_TEXT, limits_text

# The stable reason codes of DESIGN.md section 5, in the order a photo's reasons are listed.
REASONS: tuple[str, ...] = (
    "unreadable",
    "unsupported_format",
    "too_large",
    "too_small",
    "no_face",
    "multiple_faces",
    "face_too_small",
    "different_person",
    "blurry",
    "bad_exposure",
    "extreme_pose",
    "duplicate",
)

# (plural, singular) verb phrases: "3 of 8 photos show another person", "1 of 8 photos is blurry".
REASON_TEXT = {
    "unreadable": ("are not readable images", "is not a readable image"),
    "unsupported_format": ("are not in a photo format portrait reads", "is not in a photo format portrait reads"),
    "too_large": ("are too large", "is too large"),
    "too_small": ("are too small", "is too small"),
    "no_face": ("show no detectable face", "shows no detectable face"),
    "multiple_faces": ("show several faces of similar size", "shows several faces of similar size"),
    "face_too_small": ("show the face too small", "shows the face too small"),
    "different_person": ("show another person", "shows another person"),
    "blurry": ("are blurry", "is blurry"),
    "bad_exposure": ("are too dark or too bright", "is too dark or too bright"),
    "extreme_pose": ("show the head turned too far", "shows the head turned too far"),
    "duplicate": ("duplicate another photo", "duplicates another photo"),
}

# What the user should do about each reason (the CLI's and the API's advice line).
REASON_ADVICE = {
    "unreadable": "export them again as JPEG, PNG or WebP",
    "unsupported_format": f"send photos as {READ_FORMATS_TEXT}",
    "too_large": f"send photos under {limits_text(DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS)}",
    "too_small": "send the original photos, not thumbnails",
    "no_face": "send photos where the face is clearly visible and upright",
    "multiple_faces": "send photos of the person alone, or crop the others out",
    "face_too_small": "send closer photos where the face fills more of the frame",
    "different_person": "remove the photos of other people",
    "blurry": "send sharper photos (steady hands, good light)",
    "bad_exposure": "send photos taken in even light",
    "extreme_pose": "send photos facing the camera more directly",
    "duplicate": "send different photos rather than copies",
}



def describe(reason: str, count: int, total: int, limits: dict | None = None) -> str:
    """`3 of 8 photos show another person: remove the photos of other people`. With `limits` (the run's
    max_bytes and max_pixels), the size advice states them (the same numbers and units as each photo's
    message)."""
    plural, singular = REASON_TEXT[reason]
    advice = REASON_ADVICE[reason]
    if reason == "too_large" and limits:
        advice = f"send photos under {limits_text(limits['max_bytes'], limits['max_pixels'])}"
    return f"{count} of {total} photos {singular if count == 1 else plural}: {advice}"


@dataclass(frozen=True)
class PreprocessConfig:
    # -- what to produce ---------------------------------------------------------------------------
    top_k: int = 12  # the training set holds at most this many photos
    min_photos: int = 4  # fewer accepted photos than this is a failure (CLI exit 2)
    resolution: int = 512  # training crop side (1024 for SDXL)
    face_fraction: float = 0.55  # the ArcFace 112 layout fills this fraction of the crop (context around)
    remove_background: bool = False
    background_engine: str = "auto"  # auto (ONNX "matting" model when present, else selfie) | selfie | grabcut | onnx
    trigger_word: str = "ohwx"
    class_word: str = "person"
    caption_template: str = "a photo of {trigger} {class_word}"
    face: FaceConfig = field(default_factory=FaceConfig)
    # -- intake ------------------------------------------------------------------------------------
    max_side: int = 1024  # photos are analysed at this size (JPEG draft decoding); coordinates mapped back
    coarse_side: int = 768  # first detection pass runs at this size; finer passes only when needed
    min_image_side: int = 256  # shorter side (px) below which a photo is too_small
    max_pixels: int = DEFAULT_MAX_PIXELS  # 64 MP
    max_bytes: int = DEFAULT_MAX_BYTES  # 60 MiB
    # -- faces -------------------------------------------------------------------------------------
    min_detection_score: Optional[float] = None  # None: the detector's default (dlib-hog 0.3)
    dominance_ratio: float = 0.5  # a second face >= this x the largest's size: multiple_faces
    min_face_px: int = 80  # face box side (sqrt area, original px) below which: face_too_small
    min_face_fraction: float = 0.06  # face size / photo's shorter side below which: face_too_small
    # -- scores and rejections ---------------------------------------------------------------------
    identity_threshold: Optional[float] = None  # None: the embedder's same-person threshold (dlib 0.6)
    # blurry: the face's sharpness (normalised Laplacian variance of the face aligned at a fixed 128 px
    # scale, scoring.sharpness_raw) below blur_floor, or below blur_relative x the set's median (sets of
    # 3+ faces). Measured on real photos: sharp 0.9-4.9 (Tom Hanks' 112 px crop 0.91, the astronaut 1.7,
    # Grace Hopper 4.9); Gaussian blur of sigma 1 / 2 / 3 px on the astronaut's 87 px face: 0.39 / 0.12 / 0.06.
    blur_floor: float = 0.25
    blur_relative: float = 0.3
    exposure_threshold: float = 0.35  # exposure score below which: bad_exposure
    # extreme_pose: beyond what the templates take (their faces: |yaw| <= 17, |roll| <= 4; the fusion and
    # inpainting re-align roll, but a head turned past 35° shows the other side of the face).
    max_yaw: float = 35.0  # |yaw| above this (degrees): extreme_pose
    max_pitch: float = 50.0  # pitch from a generic 3-D model carries a ~20-30° offset: a loose limit
    max_roll: float = 25.0  # head tilt
    duplicate_bits: int = 10  # whole-frame hash Hamming distance (of 128 bits) for photos without a face
    duplicate_embedding: float = 0.15  # same photo: identity distance at most this (a re-encode moves 0.04-0.11) ...
    duplicate_face_bits: int = 6  # ... and the aligned face crop's 64-bit hash within this many bits ...
    duplicate_lab: float = 3.0  # ... and its Lab thumbnail within this mean difference (other light: 5+)
    max_crop_padding: float = 0.1  # a crop padded over this fraction of its area lowers the photo's score
    restore_crops: bool = True  # crops of faces smaller than the resolution needs go through the upscale engine
    restore_engine: str = "auto"  # auto (esrgan when its model is present, else classic) | classic | esrgan
    retouch_crops: bool = False  # a light skin retouch on the training crops (classic, or restore when present)
    workers: int = 2  # analysis worker processes (dlib holds the GIL); used for 4+ photos with dlib engines

    def __post_init__(self):
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.min_photos < 1:
            raise ConfigError(f"min_photos must be >= 1, got {self.min_photos}")
        if self.resolution < 64 or self.resolution % 8:
            raise ConfigError(f"resolution must be a multiple of 8 and >= 64, got {self.resolution}")
        if not 0.2 <= self.face_fraction <= 1.0:
            raise ConfigError(f"face_fraction must be in [0.2, 1], got {self.face_fraction}")
        if self.background_engine not in ("auto", "selfie", "grabcut", "onnx"):
            raise ConfigError(f"background_engine must be auto, selfie, grabcut or onnx, got {self.background_engine!r}")
        if not self.trigger_word.strip():
            raise ConfigError("trigger_word must not be empty")
        if not 0 < self.blur_relative < 1 or self.blur_floor < 0:
            raise ConfigError(f"blur_relative must be in (0, 1) and blur_floor >= 0, got {self.blur_relative}, "
                             f"{self.blur_floor}")
        if self.restore_engine not in ("auto", "classic", "esrgan"):
            raise ConfigError(f"restore_engine must be auto, classic or esrgan, got {self.restore_engine!r}")
        if self.max_side < 256:
            raise ConfigError(f"max_side must be >= 256, got {self.max_side}")

    @classmethod
    def from_dict(cls, data) -> "PreprocessConfig":
        """From a mapping (nested "face" too): ConfigError naming an unknown key or a bad value."""
        from portrait.settings import from_dict

        return from_dict(cls, data)

    def detection_score(self) -> float:
        if self.min_detection_score is not None:
            return self.min_detection_score
        return {"dlib-hog": 0.3, "dlib-mmod": 0.3}.get(self.face.detector, 0.5)
