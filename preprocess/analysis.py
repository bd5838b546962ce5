"""What analysing one photo finds (in this process or a worker's): its faces, the dominant face's
embedding, scores, duplicate signature and, when the analysis image holds it, the training crop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from portrait.faces import Face
from portrait.faces.analysis import FaceAnalysis

from . import scoring
from .config import PreprocessConfig
from .crops import crop_padding, face_in_crop, make_crop_with_padding
from .detection import detect_faces
from .duplicates import face_signature, perceptual_hash
from .intake import IntakeResult
from .orientation import find_tilted, find_turned, refine_roll
from .types import SCORE_KEYS


@dataclass
class Analysis:
    """What analysing one photo found (internal)."""

    intake: IntakeResult
    reason: Optional[str] = None  # a hard reason (unreadable, too_small, no_face, multiple_faces, ...)
    message: str = ""
    face: Optional[Face] = None  # dominant face, original coordinates
    faces: int = 0
    embedding: Optional[np.ndarray] = None
    hash: Optional[np.ndarray] = None
    scores: dict = field(default_factory=lambda: {k: None for k in SCORE_KEYS})
    crop: Optional[np.ndarray] = None  # training crop cut from the analysis image when it holds enough pixels
    crop_face: Optional[Face] = None  # the face in the crop's coordinates
    crop_png: Optional[bytes] = None  # the crop already PNG-encoded (by a worker; no background removal)
    sharp_raw: Optional[float] = None  # scoring.sharpness_raw of the face (fixed 128 px scale)
    frame_sharp: Optional[float] = None  # scoring.frame_sharpness of the whole photo
    padding: float = 0.0  # fraction of the training crop outside the photo
    signature: Optional[object] = None  # duplicates.FaceSignature of the face
    turned: int = 0  # degrees clockwise the photo was turned to stand upright (no EXIF orientation said so)
    tilted: float = 0.0  # degrees the photo was rotated to find a strongly tilted face (judged extreme_pose)
    restored: Optional[str] = None  # engine that restored a small face's crop
    retouched: Optional[str] = None  # engine of the optional light skin retouch of the crop


def analyse_photo(fa: FaceAnalysis, intake: IntakeResult, config: PreprocessConfig) -> Analysis:
    a = Analysis(intake=intake)
    if not intake.ok:
        a.reason, a.message = intake.reason, intake.message
        return a
    img = intake.pixels
    a.hash = perceptual_hash(img)
    a.frame_sharp = scoring.frame_sharpness(img)
    faces = detect_faces(fa, img, config)
    back = None  # maps a face found on a tilted copy back to the photo
    if not faces:  # on its side or upside down without an EXIF tag, or a strongly tilted head?
        turned = find_turned(fa, img, config)
        if turned is not None:
            a.turned, img, faces = turned
            intake.pixels = img
            w, h = intake.facts["original_size"]
            intake.facts.update(original_size=[h, w] if a.turned in (90, 270) else [w, h], turned=a.turned)
        else:
            tilted = find_tilted(fa, img, config)
            if tilted is not None:
                a.tilted, img, faces, back = tilted
    a.faces = len(faces)
    if not faces:
        a.reason, a.message = "no_face", "no face was found (also looked on the photo turned by 90°, 180° and 270°)"
        return a
    face = faces[0]
    if back is None:
        face.roll = refine_roll(fa, img, face)
    a.face = (face if back is None else back(face)).scaled(1.0 / intake.scale)
    if len(faces) > 1 and faces[1].size >= config.dominance_ratio * face.size:
        a.reason = "multiple_faces"
        a.message = f"{len(faces)} faces, none clearly larger than the others"
        return a
    face.embedding = fa.embed(img, face)
    a.face.embedding = a.embedding = face.embedding
    a.signature = face_signature(img, face)
    raw = a.sharp_raw = scoring.sharpness_raw(scoring.face_chip(img, face))
    a.scores.update(
        sharpness=scoring.sharpness_score(raw),
        exposure=scoring.exposure_score(img, face),
        face_size=scoring.face_size_score(a.face.size, config),
        pose=scoring.pose_score(a.face, config),
    )
    a.scores["quality"] = scoring.quality_score(a.scores["sharpness"], a.scores["exposure"], a.scores["face_size"])
    if back is not None:
        return a  # a strongly tilted head: judged extreme_pose, never cropped
    if face.size >= scoring.needed_face_px(config):
        # The analysis image already holds the face at training resolution: crop now, skip a re-decode.
        a.crop, m, a.padding = make_crop_with_padding(img, face, config)
        a.crop_face = face_in_crop(face, m)
    else:
        a.padding = crop_padding(img.shape, face, config)
    return a
