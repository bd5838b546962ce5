"""inswapper-style ONNX face swapper (insightface's inswapper_128.onnx), on onnxruntime.

I/O of the released model:
  target (1, 3, 128, 128): the target face aligned on ArcFace's 5-point template as insightface's
         `norm_crop2` places it at 128 px (the 112 template shifted 8 px right), RGB in [0, 1];
  source (1, 512): the source person's L2-normalised ArcFace embedding times the model's `emap`
         matrix (the graph's last initializer, 512 x 512), normalised again;
  output (1, 3, 128, 128): the swapped face, RGB in [0, 1].

The source embedding must come from ArcFace (FaceConfig(embedder="arcface")): a dlib 128-d
descriptor has neither the size nor the meaning the model was trained on. The swapped crop is
warped back and blended with a feathered mask that lies inside the target's face mask, so every
pixel outside the face region keeps its exact value.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..faces.align import similarity_transform
from ..faces.types import ARCFACE_5PT_112, Face
from ..imageio import check_rgb
from ..models.manifest import Manifest
from ..models.onnx_runtime import fixed_dim, get_session, last_initializer
from . import masks


def swap_template(size: int) -> np.ndarray:
    """insightface's 5-point layout for a `size` crop when size is a multiple of 128 (norm_crop2)."""
    ratio = size / 128.0
    return (ARCFACE_5PT_112 * ratio + np.array([8.0 * ratio, 0.0], np.float32)).astype(np.float32)


class OnnxSwapper:
    name = "inswapper"
    requires_embedder = "arcface"

    def __init__(self, manifest: Manifest, device: str = "cpu", model: str = "inswapper"):
        path = manifest.require(model)
        self.session = get_session(path, device, model=model)
        inputs = {len(i.shape): i for i in self.session.get_inputs()}
        if sorted(inputs) != [2, 4] or len(self.session.get_outputs()) != 1:
            raise ConfigError(f"{path} does not look like an inswapper model: it needs a 4-D 'target' input, "
                              "a 2-D 'source' input and one output")
        self.target_name, self.source_name = inputs[4].name, inputs[2].name
        self.size = fixed_dim(inputs[4].shape[2], 128)
        emap = last_initializer(path, model)
        dim = fixed_dim(inputs[2].shape[1], 512)
        if emap is None or emap.ndim != 2 or emap.shape != (dim, dim):
            got = "no initializer" if emap is None else f"a last initializer of shape {emap.shape}"
            raise ConfigError(f"{path}: inswapper needs its {dim}x{dim} 'emap' matrix as the graph's last "
                              f"initializer, found {got}; is this the released inswapper_128.onnx?")
        self.emap = emap.astype(np.float32)
        self.dim = dim

    def latent(self, source_embedding: np.ndarray) -> np.ndarray:
        """The model's source input for an ArcFace embedding."""
        emb = np.asarray(source_embedding, np.float32).reshape(-1)
        if emb.size != self.dim:
            raise ConfigError(f"the inswapper needs a {self.dim}-d ArcFace embedding, got {emb.size}-d: "
                              "analyse the source photos with embedder='arcface'")
        emb = emb / (np.linalg.norm(emb) or 1.0)
        lat = emb[None] @ self.emap
        return (lat / (np.linalg.norm(lat) or 1.0)).astype(np.float32)

    def swap_crop(self, target_rgb: np.ndarray, target_face: Face, source_embedding: np.ndarray):
        """The swapped aligned crop (size x size uint8 RGB) and its 2x3 matrix (image → crop)."""
        import cv2

        m = similarity_transform(target_face.landmarks5, swap_template(self.size))
        crop = cv2.warpAffine(target_rgb, m, (self.size, self.size), borderValue=0.0)
        blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        pred = self.session.run(None, {self.target_name: blob, self.source_name: self.latent(source_embedding)})[0]
        fake = np.clip(np.asarray(pred, np.float32)[0].transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return fake, m

    def swap(self, target_rgb: np.ndarray, target_face: Face, source_embedding: np.ndarray,
             feather: float = 0.15) -> np.ndarray:
        """`target_rgb` with `target_face` replaced; `feather` is the soft edge width x eye distance."""
        import cv2

        check_rgb(target_rgb)
        fake, m = self.swap_crop(target_rgb, target_face, source_embedding)
        h, w = target_rgb.shape[:2]
        inv = cv2.invertAffineTransform(m)
        back = cv2.warpAffine(fake, inv, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
        inside = cv2.warpAffine(np.full((self.size, self.size), 255, np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST)
        region = cv2.bitwise_and(masks.face_mask((h, w), target_face), inside)
        alpha = masks.feather(region, max(1, int(round(target_face.eye_distance * feather))))
        out = target_rgb.copy()
        ys, xs = np.nonzero(alpha > 0)
        if len(ys):
            a = alpha[ys, xs, None]
            out[ys, xs] = np.clip(a * back[ys, xs] + (1.0 - a) * target_rgb[ys, xs] + 0.5, 0, 255).astype(np.uint8)
        return out
