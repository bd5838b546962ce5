"""insightface ArcFace identity embeddings on onnxruntime, one engine per released model file.

Two released ArcFace models matter, and they are not interchangeable although both give 512-d vectors:
  arcface-buffalo     buffalo_l's w600k_r50.onnx: what IP-Adapter FaceID and inswapper were trained on
  arcface-antelopev2  antelopev2's glintr100.onnx: what InstantID was trained on
(`arcface` is an alias of arcface-buffalo.) The embedder's `name` is the manifest model name, and every
identity made from its vectors records it, so an adapter can refuse another model's embeddings.

Preprocessing is insightface's own (`ArcFaceONNX.get` / `face_align.norm_crop`): the face is aligned on
the detector's 5 points to ArcFace's template at the model's input size with a bilinear warp and a
constant black border, RGB, (x - 127.5) / 127.5 (or raw pixels for graphs that start with their own
Sub and Mul, the MXNet exports), NCHW.

Output: the raw embedding, not normalised (insightface's `Face.embedding`; InstantID feeds it as is, and
its length, around 15-30 on real faces, is part of what InstantID saw in training). Compare vectors by
cosine distance, which ignores the length.

Threshold: cosine distance 0.6 (cosine similarity 0.4), facefusion's default reference-face distance
for this family of models. Not measured here: no released ArcFace weights are on the test machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..models.manifest import Manifest
from ..models.onnx_runtime import fixed_dim, get_session
from .align import align_face
from .types import Face

# Embedder config name -> manifest model name (the name an identity records).
ARCFACE_MODELS = {"arcface": "arcface-buffalo", "arcface-buffalo": "arcface-buffalo",
                  "arcface-antelopev2": "arcface-antelopev2"}


def _normalises_itself(path: Path) -> bool:
    """True when the graph's first nodes subtract and multiply (MXNet exports): insightface then feeds
    raw 0..255 pixels instead of (x - 127.5) / 127.5."""
    try:
        import onnx

        nodes = onnx.load(str(path), load_external_data=False).graph.node[:8]
    except Exception:  # noqa: BLE001 - onnxruntime already loaded it; the check is only about names
        return False
    names = [n.name for n in nodes]
    return (any(n.startswith(("Sub", "_minus")) for n in names)
            and any(n.startswith(("Mul", "_mul")) for n in names))


class ArcFaceEmbedder:
    metric = "cosine"
    same_person_threshold = 0.6

    def __init__(self, manifest: Manifest, device: str = "cpu", model: str = "arcface"):
        self.name = ARCFACE_MODELS.get(model, model)  # the manifest model name, recorded by identities
        path = manifest.require(self.name)
        self.session = get_session(path, device, model=self.name)
        inp, outs = self.session.get_inputs()[0], self.session.get_outputs()
        if len(inp.shape) != 4 or len(outs) != 1:
            raise ConfigError(f"{path} does not look like an ArcFace model: input {inp.shape}, {len(outs)} outputs "
                              "(expected one NCHW input and one embedding output)")
        self.input_name = inp.name
        self.size = fixed_dim(inp.shape[2], 112)
        self.mean, self.std = (0.0, 1.0) if _normalises_itself(path) else (127.5, 127.5)
        dim = outs[0].shape[-1]
        if not isinstance(dim, int) or dim <= 0:  # symbolic: ask the model once
            dim = self._run(np.zeros((self.size, self.size, 3), np.uint8)).shape[-1]
        self.dim = int(dim)

    def _run(self, crop: np.ndarray) -> np.ndarray:
        blob = ((crop.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        return np.asarray(self.session.run(None, {self.input_name: blob})[0], np.float32).reshape(-1)

    def crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The aligned input crop, as insightface's norm_crop makes it (bilinear, black border)."""
        return align_face(image, face.landmarks5, self.size, border="constant", interpolation="linear")[0]

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The raw embedding (its length is kept: see the module docstring)."""
        return self._run(self.crop(image, face))
