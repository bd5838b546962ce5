"""insightface ArcFace identity embedding (e.g. buffalo_l's w600k_r50.onnx, 512-d), on onnxruntime.

Input: the face aligned on ArcFace's 5-point template (112 x 112, or the model's own size), RGB,
(x - 127.5) / 127.5, NCHW. Output: one vector, L2-normalised here; compare by cosine distance.

Threshold: cosine distance 0.6 (cosine similarity 0.4), facefusion's default reference-face distance
for this family of models (facefusion computes 1 - dot of normalised ArcFace embeddings). Not measured
here: no released ArcFace weights are on the test machines; calibrate on your data if it matters.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..models.manifest import Manifest
from ..models.onnx_runtime import fixed_dim, get_session
from .align import align_face
from .types import Face


class ArcFaceEmbedder:
    name = "arcface"
    metric = "cosine"
    same_person_threshold = 0.6

    def __init__(self, manifest: Manifest, device: str = "cpu", model: str = "arcface"):
        path = manifest.require(model)
        self.session = get_session(path, device, model=model)
        inp, outs = self.session.get_inputs()[0], self.session.get_outputs()
        if len(inp.shape) != 4 or len(outs) != 1:
            raise ConfigError(f"{path} does not look like an ArcFace model: input {inp.shape}, {len(outs)} outputs "
                              "(expected one NCHW input and one embedding output)")
        self.input_name = inp.name
        self.size = fixed_dim(inp.shape[2], 112)
        dim = outs[0].shape[-1]
        if not isinstance(dim, int) or dim <= 0:  # symbolic: ask the model once
            dim = self._run(np.zeros((self.size, self.size, 3), np.uint8)).shape[-1]
        self.dim = int(dim)

    def _run(self, crop: np.ndarray) -> np.ndarray:
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        return np.asarray(self.session.run(None, {self.input_name: blob})[0], np.float32).reshape(-1)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        crop, _ = align_face(image, face.landmarks5, self.size)
        vec = self._run(crop)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec
