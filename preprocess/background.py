"""Background removal to white for training crops.

Engines:
  grabcut  classic, offline: OpenCV GrabCut seeded from the face's landmarks (the face is sure
           foreground, a head-and-shoulders region below it probable foreground, the top corners and
           the upper side strips sure background), run on a downscaled copy and feathered.
  selfie   MediaPipe's selfie segmentation (shipped, Apache-2.0; portrait.post.segmentation): keeps hair
           and clothes where GrabCut cut off curly hair and heads. `auto`'s choice unless a matting
           model is present; GrabCut remains the fallback where the LiteRT runtime is missing.
  onnx     a portrait matting model (manifest entry "matting", e.g. MODNet): input 1x3xHxW in [-1, 1],
           output 1x1xHxW alpha in [0, 1]. Used by `auto` whenever the file is present.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from portrait.errors import ConfigError
from portrait.faces import Face
from portrait.models.manifest import Manifest, get_manifest

_SESSIONS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


def choose_engine(engine: str, manifest: Manifest | None = None) -> str:
    """Resolve `auto` to `onnx` when the matting model and onnxruntime are present, else `selfie` when the
    LiteRT runtime is, else `grabcut`."""
    if engine != "auto":
        return engine
    from portrait.post import segmentation

    fallback = "selfie" if segmentation.available() else "grabcut"
    manifest = manifest or get_manifest()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return fallback
    return "onnx" if manifest.available("matting") and manifest.path("matting").is_file() else fallback


def grabcut_alpha(image: np.ndarray, face: Face, work_side: int = 256, iterations: int = 4) -> np.ndarray:
    """Foreground alpha (float32 0..1, image size) from landmark-seeded GrabCut."""
    h, w = image.shape[:2]
    s = min(1.0, work_side / max(h, w))
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    lm = face.landmarks5 * s
    iod = max(float(np.linalg.norm(lm[1] - lm[0])), 2.0)
    eyes, mouth = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
    centre = eyes + (mouth - eyes) * 0.3
    mask = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    # Head: an ellipse around the face (hair included) is probable foreground.
    cv2.ellipse(mask, (int(centre[0]), int(centre[1] - iod * 0.4)), (int(iod * 1.7), int(iod * 2.3)), 0, 0, 360,
                int(cv2.GC_PR_FGD), -1)
    # Neck and shoulders: a trapezoid from the chin to the bottom edge.
    chin_y = mouth[1] + iod * 0.8
    poly = np.array([[centre[0] - iod * 0.9, chin_y], [centre[0] + iod * 0.9, chin_y],
                     [centre[0] + iod * 3.5, sh], [centre[0] - iod * 3.5, sh]], np.int32)
    cv2.fillPoly(mask, [poly], int(cv2.GC_PR_FGD))
    # The inner face is sure foreground.
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(iod * 0.8), int(iod * 1.1)), 0, 0, 360,
                int(cv2.GC_FGD), -1)
    # Sure background: a thin frame at the top and the upper sides, away from the head.
    b = max(2, sh // 40)
    top_free = mask[:b, :] != cv2.GC_FGD
    mask[:b, :][top_free] = cv2.GC_BGD
    upper = int(min(sh, chin_y))
    for sl in (np.s_[:upper, :b], np.s_[:upper, sw - b:]):
        region = mask[sl]
        region[region == cv2.GC_PR_BGD] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(small, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate seed (all one class): keep the seed as the answer
        pass
    fg = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 1.0, 0.0).astype(np.float32)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    alpha = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    feather = max(1, int(round(max(h, w) / 256))) * 2 + 1
    return np.clip(cv2.GaussianBlur(alpha, (feather, feather), 0), 0.0, 1.0)


def _session(path: Path, device: str):
    key = (str(path), device)
    with _LOCK:
        if key not in _SESSIONS:
            import onnxruntime as ort

            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
            providers = [p for p in providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
            _SESSIONS[key] = ort.InferenceSession(str(path), providers=providers)
        return _SESSIONS[key]


def onnx_alpha(image: np.ndarray, manifest: Manifest | None = None, size: int = 512, device: str = "cpu") -> np.ndarray:
    """Alpha (float32 0..1, image size) from the manifest's "matting" ONNX model."""
    manifest = manifest or get_manifest()
    sess = _session(manifest.require("matting", check_hash=True), device)
    h, w = image.shape[:2]
    x = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    inp = sess.get_inputs()[0].name
    out = np.asarray(sess.run(None, {inp: x})[0], dtype=np.float32)
    matte = out.reshape(out.shape[-2], out.shape[-1])
    return np.clip(cv2.resize(matte, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def remove_background(image: np.ndarray, face: Face, engine: str = "auto", manifest: Manifest | None = None,
                      device: str = "cpu") -> tuple[np.ndarray, np.ndarray, str]:
    """The image composited over white, its alpha (float32 0..1), and the engine used.

    `face` is in `image`'s coordinates (the grabcut engine seeds from it)."""
    used = choose_engine(engine, manifest)
    if used == "onnx":
        alpha = onnx_alpha(image, manifest, device=device)
    elif used == "selfie":
        from portrait.post.segmentation import person_alpha

        alpha = person_alpha(image, manifest)
    elif used == "grabcut":
        alpha = grabcut_alpha(image, face)
    else:
        raise ConfigError(f"unknown background engine {engine!r}")
    a = alpha[..., None]
    out = image.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), alpha, used
