"""FaceAnalysis: detect → landmarks → pose → identity embedding, with engines chosen by name.

    fa = get_face_analysis(FaceConfig())          # cached per process, per config
    faces = fa.analyze(rgb)                       # list[Face], largest/most confident first
    fa.distance(faces[0].embedding, other)        # under the embedder's metric

Engines (config names):
  detector:  dlib-hog (default, offline), dlib-mmod (offline CNN), scrfd (ONNX, user-supplied)
  landmarks: dlib5 (default; licence-safe), dlib68 (closer head pose; non-commercial licence), none
  embedder:  dlib-resnet (default, offline), arcface-buffalo (alias arcface: buffalo_l's w600k_r50, for
             FaceID and inswapper), arcface-antelopev2 (antelopev2's glintr100, for InstantID); ONNX, user-supplied

With a detector that gives 5 keypoints (SCRFD), those points are the face's `landmarks5` (what ArcFace,
inswapper and every 5-point alignment use, as in insightface); dense landmarks add `landmarks68` only.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import numpy as np

from ..errors import ConfigError
from ..imageio import check_rgb
from ..models.manifest import ALIASES, Manifest, get_manifest
from .base import Detection, distance
from .landmarks_dlib import DlibShapePredictor, five_from_68, five_from_dlib5
from .pose import pose_from_5, pose_from_68, pose_from_dlib5, pose_from_mesh
from .types import Face

DetectorName = Literal["dlib-hog", "dlib-mmod", "scrfd"]
LandmarksName = Literal["auto", "dlib5", "dlib68", "mediapipe", "none"]
EmbedderName = Literal["dlib-resnet", "arcface", "arcface-buffalo", "arcface-antelopev2"]
DETECTORS: tuple[str, ...] = DetectorName.__args__  # type: ignore[attr-defined]
LANDMARKS: tuple[str, ...] = LandmarksName.__args__  # type: ignore[attr-defined]
EMBEDDERS: tuple[str, ...] = EmbedderName.__args__  # type: ignore[attr-defined]
# The face-embedding size each embedder gives (what an identity adapter must be built for).
EMBEDDING_DIMS = {"dlib-resnet": 128, "arcface": 512, "arcface-buffalo": 512, "arcface-antelopev2": 512}


def embedder_model(name: str) -> str:
    """The manifest model name behind an embedder config name ('arcface' is arcface-buffalo); what an
    identity file records as its engine."""
    return ALIASES.get(name, name)


def is_arcface(name: str) -> bool:
    return embedder_model(name).startswith("arcface-")


@dataclass(frozen=True)
class FaceConfig:
    # auto: SCRFD with an ArcFace embedder (insightface, InstantID and FaceID align on SCRFD's own five
    # keypoints, not on points fitted from dlib's eyes and nose base), else dlib's HOG detector.
    detector: str = "auto"
    # auto: mediapipe under the commercial licence policy (no dlib landmark model at all), else dlib5;
    # dlib68 measures pose more closely (non-commercial licence); resolved when the config is made.
    landmarks: str = "auto"
    embedder: str = "dlib-resnet"
    detect_max_side: int = 1024  # detection runs on a copy downscaled to this (speed); results mapped back
    upsample: int = 0  # extra detector upsampling for small faces
    min_face: int = 40  # faces smaller than this (px, in the analysed image) are ignored as noise
    models_dir: Optional[str] = None
    device: str = "cpu"  # for ONNX engines: cpu | cuda

    def __post_init__(self):
        if self.detector == "auto":
            object.__setattr__(self, "detector", "scrfd" if self.embedder in EMBEDDERS and is_arcface(self.embedder)
                               else "dlib-hog")
        if self.landmarks == "auto":
            from ..models.licence import current_policy

            object.__setattr__(self, "landmarks", "mediapipe" if current_policy() == "commercial" else "dlib5")
        for value, allowed, what in ((self.detector, DETECTORS, "detector"), (self.landmarks, LANDMARKS, "landmarks"),
                                     (self.embedder, EMBEDDERS, "embedder")):
            if value not in allowed:
                raise ConfigError(f"unknown face {what} engine {value!r}; choose one of {', '.join(allowed)}")

    def engines(self) -> dict:
        return {"detector": self.detector, "landmarks": self.landmarks, "embedder": self.embedder}


def _make_detector(cfg: FaceConfig, manifest: Manifest):
    if cfg.detector == "dlib-hog":
        from .detect_dlib import DlibHogDetector

        return DlibHogDetector(upsample=cfg.upsample)
    if cfg.detector == "dlib-mmod":
        from .detect_dlib import DlibCnnDetector

        return DlibCnnDetector(manifest, upsample=cfg.upsample)
    from .detect_scrfd import ScrfdDetector

    return ScrfdDetector(manifest, device=cfg.device)


def _make_embedder(cfg: FaceConfig, manifest: Manifest):
    if cfg.embedder == "dlib-resnet":
        from .embed_dlib import DlibResnetEmbedder

        return DlibResnetEmbedder(manifest)
    from .embed_arcface import ArcFaceEmbedder

    return ArcFaceEmbedder(manifest, device=cfg.device, model=embedder_model(cfg.embedder))


class FaceAnalysis:
    """The combined analyser. Engines load lazily on first use and stay loaded."""

    def __init__(self, config: FaceConfig | None = None, manifest: Manifest | None = None):
        self.config = config = config or FaceConfig()
        self.manifest = manifest or get_manifest(config.models_dir)
        self._detector = None
        self._landmarker = None  # DlibShapePredictor or landmarks_mediapipe.MeshLandmarker
        self._embedder = None
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe

    # -- lazily built engines ---------------------------------------------------------------------
    @property
    def detector(self):
        if self._detector is None:
            self._detector = _make_detector(self.config, self.manifest)
        return self._detector

    @property
    def landmarker(self):
        if self._landmarker is None and self.config.landmarks == "mediapipe":
            from .landmarks_mediapipe import MeshLandmarker

            self._landmarker = MeshLandmarker(self.manifest)
        elif self._landmarker is None and self.config.landmarks != "none":
            self._landmarker = DlibShapePredictor(self.manifest, 68 if self.config.landmarks == "dlib68" else 5)
        return self._landmarker

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = _make_embedder(self.config, self.manifest)
        return self._embedder

    @property
    def metric(self) -> str:
        return self.embedder.metric

    @property
    def same_person_threshold(self) -> float:
        return float(self.embedder.same_person_threshold)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return distance(a, b, self.embedder.metric)

    def engines(self) -> dict:
        return self.config.engines()

    def model_names(self) -> list[str]:
        """The manifest models this configuration loads (for the licence policy)."""
        c = self.config
        names = {"dlib-mmod": ["dlib-mmod"], "scrfd": ["scrfd"]}.get(c.detector, [])
        names += {"dlib68": ["dlib-68pt"], "dlib5": ["dlib-5pt"], "mediapipe": ["mediapipe-face-mesh"]}.get(
            c.landmarks, [])
        if c.landmarks not in ("dlib5", "mediapipe") and embedder_model(c.embedder) == "dlib-resnet":
            names.append("dlib-5pt")  # the descriptor aligns on dlib's 5 points where no mesh gives them
        names.append(embedder_model(c.embedder))  # embedder names are manifest names
        return names

    def check_licences(self) -> None:
        """LicenceError if the licence policy in force excludes a model of this configuration. Checked on
        every call, not only at load: a cached analyser must not outlive a stricter policy."""
        from ..models.licence import check_licence

        for name in self.model_names():
            check_licence(self.manifest.spec(name))

    # -- analysis ---------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in full-image coordinates (detector runs on a downscaled copy)."""
        import cv2

        check_rgb(image)
        h, w = image.shape[:2]
        s = min(1.0, self.config.detect_max_side / max(h, w))
        small = image if s == 1.0 else cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        with self._lock:
            dets = self.detector.detect(small)
        out = []
        for d in dets:
            box = d.box / s
            box = np.clip(box, [0, 0, 0, 0], [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
            if min(box[2] - box[0], box[3] - box[1]) * s < self.config.min_face * min(1.0, s * 2):
                continue
            lm = None if d.landmarks5 is None else (d.landmarks5 / s).astype(np.float32)
            out.append(Detection(box, d.score, lm))
        return out

    def analyze(self, image: np.ndarray, *, embed: bool = True, max_faces: int | None = None) -> list[Face]:
        """All faces in `image` (uint8 RGB), largest first, with landmarks, pose and (optionally) embedding."""
        self.check_licences()
        dets = self.detect(image)
        dets.sort(key=lambda d: -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
        if max_faces is not None:
            dets = dets[:max_faces]
        return [self._complete(image, d, embed) for d in dets]

    def _complete(self, image: np.ndarray, det: Detection, embed: bool) -> Face:
        h, w = image.shape[:2]
        lm68 = dlib5 = mesh = None
        with self._lock:
            if self.config.landmarks == "mediapipe":
                points, _ = self.landmarker.mesh(image, det.box)
                mesh = points[:, :2]
                from .landmarks_mediapipe import MESH_TO_68

                lm68 = mesh[MESH_TO_68]
                lm5 = det.landmarks5 if det.landmarks5 is not None else five_from_68(lm68)
            elif self.landmarker is not None:
                pts = self.landmarker.landmarks(image, det.box)
                if self.landmarker.points == 68:
                    lm68 = pts
                    # insightface aligns on the detector's own keypoints: keep them where there are some.
                    lm5 = det.landmarks5 if det.landmarks5 is not None else five_from_68(pts)
                else:
                    dlib5 = pts
                    lm5 = det.landmarks5 if det.landmarks5 is not None else five_from_dlib5(pts)
            elif det.landmarks5 is not None:
                lm5 = det.landmarks5
            else:
                # No landmark model and a detector without keypoints: dlib's 5-point model is the
                # licence-safe minimum that alignment needs.
                dlib5 = DlibShapePredictor(self.manifest, 5).landmarks(image, det.box)
                lm5 = five_from_dlib5(dlib5)
        pose = pose_from_mesh(points, (w, h)) if mesh is not None else None
        if pose is None and lm68 is not None:
            try:
                pose = pose_from_68(lm68, (w, h))
            except ValueError:
                pass
        if pose is None:
            pose = pose_from_dlib5(dlib5) if dlib5 is not None else pose_from_5(lm5)
        yaw, pitch, roll = pose
        face = Face(box=det.box, score=det.score, landmarks5=lm5, landmarks68=lm68, yaw=yaw, pitch=pitch, roll=roll,
                    mesh=mesh)
        if embed:
            with self._lock:
                face.embedding = self.embedder.embed(image, face)
        return face

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        with self._lock:
            return self.embedder.embed(image, face)


_CACHE: dict[tuple, FaceAnalysis] = {}
_CACHE_LOCK = threading.Lock()


def get_face_analysis(config: FaceConfig | None = None) -> FaceAnalysis:
    """The per-process FaceAnalysis for `config` (engines load once per process)."""
    config = config or FaceConfig()
    key = tuple(sorted(asdict(config).items()))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = FaceAnalysis(config)
        return _CACHE[key]


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()

