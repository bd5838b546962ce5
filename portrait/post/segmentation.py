"""Person segmentation with MediaPipe's selfie segmentation model (Apache-2.0, shipped in
portrait/faces/mediapipe_models/ with its LICENSE and NOTICE), on the LiteRT runtime: a soft person
alpha for background removal. The model sees a 256 x 256 copy of the whole image (so edges are soft
at full size); the alpha is resized back and lightly sharpened around 0.5.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from ..models.manifest import Manifest, get_manifest

SIDE = 256
_INTERPRETERS: dict[str, object] = {}
_LOCK = threading.Lock()  # one interpreter per model file and process; invoke is not thread-safe


def available() -> bool:
    """Whether the LiteRT runtime is importable (the model file itself ships with portrait)."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreter(manifest: Manifest):
    from ..models.litert import load_interpreter

    path = str(manifest.require("mediapipe-selfie-segmentation"))
    if path not in _INTERPRETERS:
        _INTERPRETERS[path] = load_interpreter(path)
    return _INTERPRETERS[path]


def person_alpha(image: np.ndarray, manifest: Manifest | None = None, gain: float = 2.0) -> np.ndarray:
    """Float32 alpha 0..1 (image size): 1 on the person (hair and clothes included), 0 on the background.
    `gain` steepens the model's probability around 0.5 (1: as the model gives it)."""
    h, w = image.shape[:2]
    x = cv2.resize(np.ascontiguousarray(image), (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    with _LOCK:
        it = _interpreter(manifest or get_manifest())
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        prob = np.asarray(it.get_tensor(it.get_output_details()[0]["index"]), np.float32).reshape(SIDE, SIDE)
    prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip((prob - 0.5) * gain + 0.5, 0.0, 1.0)
