"""SCRFD face detector with 5 keypoints (insightface's det_10g / scrfd_*_bnkps ONNX files), on onnxruntime.

The released models take one (1, 3, H, W) float input: RGB, (x - 127.5) / 128, the image letterboxed
(aspect kept, padded right/bottom with black) into H x W. They give 3 groups of outputs per stride,
in this order: scores (N, 1) for strides 8/16/32, then box distances (N, 4), then keypoint distances
(N, 10), with N = (H/s)·(W/s)·2 (two anchors per location, location-major), with or without a
leading batch axis. Distances are in units of the stride from the anchor centre (x·s, y·s) of each
location; boxes are (left, top, right, bottom) distances, keypoints (dx, dy) pairs in ArcFace order.
The 5-stride variants (10 or 15 outputs, one anchor) decode the same way.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..models.manifest import Manifest
from ..models.onnx_runtime import fixed_dim, get_session
from .base import Detection

# outputs per stride-group → (strides, anchors per location, has keypoints)
_LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best score first (insightface's +1 pixel areas)."""
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return keep


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(height·width·anchors, 2) anchor centres (x, y) in input pixels, location-major."""
    ys, xs = np.mgrid[:height, :width]
    centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    return np.repeat(centres, anchors, axis=0)


class ScrfdDetector:
    name = "scrfd"

    def __init__(self, manifest: Manifest, device: str = "cpu", input_size: int | tuple[int, int] = 640,
                 score_threshold: float = 0.5, nms_threshold: float = 0.4, model: str = "scrfd"):
        path = manifest.require(model)
        self.session = get_session(path, device, model=model)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if len(inp.shape) != 4 or len(self.output_names) not in _LAYOUTS:
            raise ConfigError(f"{path} does not look like an SCRFD model: input {inp.shape}, "
                              f"{len(self.output_names)} outputs (expected 1 NCHW input and 6, 9, 10 or 15 outputs)")
        self.strides, self.anchors, self.has_kps = _LAYOUTS[len(self.output_names)]
        w, h = (input_size, input_size) if isinstance(input_size, int) else input_size
        # A model exported with a fixed input size runs only at that size.
        self.input_size = (fixed_dim(inp.shape[3], w), fixed_dim(inp.shape[2], h))
        if any(v % self.strides[-1] for v in self.input_size):
            raise ConfigError(f"SCRFD input size {self.input_size} must be a multiple of {self.strides[-1]}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        iw, ih = self.input_size
        h, w = image.shape[:2]
        if h * iw > ih * w:  # taller than the input: fit the height
            nh, nw = ih, max(1, int(ih * w / h))
        else:
            nw, nh = iw, max(1, int(iw * h / w))
        canvas = np.zeros((ih, iw, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh))
        blob = (canvas.astype(np.float32) - 127.5) / 128.0
        return blob.transpose(2, 0, 1)[None], nh / h

    def _centres_for(self, stride: int) -> np.ndarray:
        iw, ih = self.input_size
        key = (ih // stride, iw // stride, stride)
        if key not in self._centres:
            self._centres[key] = anchor_centres(*key, self.anchors)
        return self._centres[key]

    def decode(self, outputs: list[np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs → (boxes (K,4), scores (K,), keypoints (K,5,2)) in input pixels, above `threshold`."""
        n = len(self.strides)
        boxes, scores, kps = [], [], []
        for i, stride in enumerate(self.strides):
            centres = self._centres_for(stride)
            s = np.asarray(outputs[i], np.float32).reshape(-1)  # batched (1, N, 1) or (N, 1) alike
            keep = np.nonzero(s >= threshold)[0]
            c = centres[keep]
            d = np.asarray(outputs[i + n], np.float32).reshape(-1, 4)[keep] * stride
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            scores.append(s[keep])
            if self.has_kps:
                k = np.asarray(outputs[i + 2 * n], np.float32).reshape(-1, 5, 2)[keep] * stride
                kps.append(c[:, None, :] + k)
        kp = np.concatenate(kps) if self.has_kps else np.zeros((0, 5, 2), np.float32)
        return np.concatenate(boxes), np.concatenate(scores), kp

    def detect(self, image: np.ndarray) -> list[Detection]:
        blob, scale = self._letterbox(image)
        outputs = self.session.run(self.output_names, {self.input_name: blob})
        boxes, scores, kps = self.decode(outputs, self.score_threshold)
        boxes /= scale
        kps = kps / scale
        return [
            Detection(boxes[i].astype(np.float32), float(scores[i]), kps[i].astype(np.float32) if self.has_kps else None)
            for i in nms(boxes, scores, self.nms_threshold)
        ]
