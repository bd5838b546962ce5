"""A template image's face slots, detected once and kept in `.faces.json` beside the image (one cache per
face-engine set), rebuilt when the image's sha256, the engines, the pins or CACHE_VERSION change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ImageError, TemplateError
from ..faces.types import Face
from ..imageio import decode_image
from ..models.manifest import sha256_file
from .slots import CONFIRMER, choose_slots, slot_faces_of

FACE_CACHE = ".faces.json"  # for the default face engines; other engines: face_cache_name()
DEFAULT_FACE_ENGINES = {"detector": "dlib-hog", "landmarks": "dlib5", "embedder": "dlib-resnet"}
MIN_FACE_PX = 64  # a template face smaller than this (sqrt of box area) is too small to receive a face
CACHE_VERSION = 3  # 2: slots chosen by portrait.templates.slots (score, size, MMOD confirmation, pins); 3: dlib5 pose from its own points


def face_cache_name(engines: dict) -> str:
    """`.faces.json` for the default engines, else `.faces.DETECTOR.LANDMARKS.EMBEDDER.json`: one cache per
    engine set, so runs under another set (dlib68 landmarks, say) never overwrite each other."""
    core = {k: engines.get(k) for k in DEFAULT_FACE_ENGINES}
    if core == DEFAULT_FACE_ENGINES:
        return FACE_CACHE
    return f".faces.{core['detector']}.{core['landmarks']}.{core['embedder']}.json"


def _face_to_json(f: Face) -> dict:
    return {"box": [float(v) for v in f.box], "score": float(f.score),
            "landmarks5": np.asarray(f.landmarks5, float).round(2).tolist(),
            "landmarks68": None if f.landmarks68 is None else np.asarray(f.landmarks68, float).round(2).tolist(),
            "yaw": float(f.yaw), "pitch": float(f.pitch), "roll": float(f.roll),
            **({} if f.mesh is None else {"mesh": np.asarray(f.mesh, float).round(1).tolist()})}


def _face_from_json(d: dict) -> Face:
    return Face(box=np.asarray(d["box"], np.float32), score=float(d["score"]),
                landmarks5=np.asarray(d["landmarks5"], np.float32),
                landmarks68=None if d.get("landmarks68") is None else np.asarray(d["landmarks68"], np.float32),
                yaw=float(d["yaw"]), pitch=float(d["pitch"]), roll=float(d["roll"]),
                mesh=None if d.get("mesh") is None else np.asarray(d["mesh"], np.float32))


def template_decisions(rgb: np.ndarray, face_analysis=None, pins=()) -> list:
    """Every detection in a template image with its slot verdict (portrait.templates.slots)."""
    if face_analysis is None:
        from ..faces import get_face_analysis

        face_analysis = get_face_analysis()
    return choose_slots(rgb, face_analysis.analyze(rgb, embed=False), pins=pins, min_px=MIN_FACE_PX,
                        face_analysis=face_analysis)


def detect_template_faces(rgb: np.ndarray, face_analysis=None, label: str | Path = "template image",
                          pins=(), decisions: list | None = None) -> list[Face]:
    """The face slots of a template image, left to right; TemplateError when there is none."""
    decisions = template_decisions(rgb, face_analysis, pins) if decisions is None else decisions
    usable = slot_faces_of(decisions)
    if not usable:
        faces = [d.face for d in decisions]
        why = (f"no face holds up as a slot ({'; '.join(d.why for d in decisions)})" if faces
               else "no face was found in it")
        raise TemplateError(f"{label}: cannot be a template: {why}")
    return usable


def template_faces(image_path: Path, face_analysis=None, pins=()) -> list[Face]:
    """The image's faces from `.faces.json` beside it when its sha256 and engines match, else detected
    and cached (the cache is skipped silently where the folder is read-only)."""
    if face_analysis is None:
        from ..faces import get_face_analysis

        face_analysis = get_face_analysis()
    cache = image_path.parent / face_cache_name(face_analysis.engines())
    sha = sha256_file(image_path)
    key = {"version": CACHE_VERSION, "image": image_path.name, "image_sha256": sha,
           "engines": dict(face_analysis.engines(), confirm=CONFIRMER), "pins": [list(map(float, b)) for b in pins]}
    try:
        data = json.loads(cache.read_text())
        if all(data.get(k) == v for k, v in key.items()):
            return [_face_from_json(d) for d in data["faces"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        rgb = decode_image(image_path).pixels
    except ImageError as exc:
        raise TemplateError(f"{image_path}: template image is unusable: {exc.reason}") from exc
    decisions = template_decisions(rgb, face_analysis, pins)
    faces = detect_template_faces(rgb, face_analysis, image_path, pins, decisions)
    rejected = [{"box": [round(float(v), 1) for v in d.face.box], "score": round(float(d.face.score), 3), "why": d.why}
                for d in decisions if not d.slot]
    try:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({**key, "faces": [_face_to_json(f) for f in faces], "rejected": rejected}, indent=1))
        tmp.replace(cache)
    except OSError:
        pass
    return faces

