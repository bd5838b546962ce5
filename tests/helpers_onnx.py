"""Tiny ONNX models with the exact I/O of insightface's SCRFD, ArcFace and inswapper_128 files.

Built with onnx.helper (no export, no weights downloaded), a few hundred kB each:
- SCRFD (9 outputs, strides 8/16/32, 2 anchors): the stride-8 score of a location is
  sigmoid(20·(mean of its 8x8 input cell − 0.5)), so a white 8x8 cell on black fires exactly that
  location's two anchors (the second at 0.9x, a duplicate for NMS to remove); strides 16/32 never
  fire. Box and keypoint distances are constants (BOX_DIST, KPS_DIST, in units of the stride), so
  a detection's box and keypoints are known exactly.
- ArcFace: 8x8 average pool → flatten → random linear map to `dim` (arcface_weights), at both
  buffalo_l's and antelopev2's paths (different seeds: different models).
- inswapper: 1x1 convolution of the target plus a per-channel offset from the source, sigmoid;
  the last initializer is a random 512x512 `emap`, as in the released file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from portrait.models.manifest import Manifest

OPSET = [helper.make_opsetid("", 17)]
IR_VERSION = 8  # what onnxruntime 1.18+ loads (onnx 1.23 would write 14)
BOX_DIST = np.array([3.0, 3.0, 3.0, 3.0], np.float32)  # left, top, right, bottom (x stride)
KPS_DIST = np.array([-1.0, -0.5, 1.0, -0.5, 0.0, 0.25, -0.75, 1.25, 0.75, 1.25], np.float32)  # ArcFace order


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_scrfd(path: Path, batched: bool = True) -> Path:
    """SCRFD-shaped detector with a dynamic input size (multiple of 32)."""
    nodes, inits, outputs = [], [], {"score": [], "bbox": [], "kps": []}
    inits += [_const("half", 0.5), _const("gain", 20.0), _const("zero", 0.0), _const("low", -30.0),
              _const("second", 0.9), _const("box_d", BOX_DIST.reshape(1, 1, 4)),
              _const("kps_d", KPS_DIST.reshape(1, 1, 10)),
              numpy_helper.from_array(np.array([1, -1, 1], np.int64), "shape3")]
    nodes.append(helper.make_node("ReduceMean", ["input.1"], ["gray"], axes=[1], keepdims=1))
    for stride in (8, 16, 32):
        p = f"s{stride}"
        nodes += [
            helper.make_node("AveragePool", ["gray"], [f"{p}_pool"], kernel_shape=[stride, stride],
                             strides=[stride, stride]),
            helper.make_node("Transpose", [f"{p}_pool"], [f"{p}_hw"], perm=[0, 2, 3, 1]),  # (1, h, w, 1)
        ]
        if stride == 8:
            nodes += [helper.make_node("Sub", [f"{p}_hw", "half"], [f"{p}_c"]),
                      helper.make_node("Mul", [f"{p}_c", "gain"], [f"{p}_logit"])]
        else:
            nodes += [helper.make_node("Mul", [f"{p}_hw", "zero"], [f"{p}_z"]),
                      helper.make_node("Add", [f"{p}_z", "low"], [f"{p}_logit"])]
        nodes += [
            helper.make_node("Sigmoid", [f"{p}_logit"], [f"{p}_a0"]),
            helper.make_node("Mul", [f"{p}_a0", "second"], [f"{p}_a1"]),
            helper.make_node("Concat", [f"{p}_a0", f"{p}_a1"], [f"{p}_a"], axis=3),  # (1, h, w, 2)
            helper.make_node("Reshape", [f"{p}_a", "shape3"], [f"{p}_score3"]),  # (1, h*w*2, 1)
            helper.make_node("Mul", [f"{p}_score3", "zero"], [f"{p}_zero3"]),
            helper.make_node("Add", [f"{p}_zero3", "box_d"], [f"{p}_bbox3"]),  # (1, N, 4)
            helper.make_node("Add", [f"{p}_zero3", "kps_d"], [f"{p}_kps3"]),  # (1, N, 10)
        ]
        for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
            name = f"{kind}_{stride}"
            if batched:
                nodes.append(helper.make_node("Identity", [f"{p}_{kind}3"], [name]))
                shape = [1, None, width]
            else:
                nodes.append(helper.make_node("Squeeze", [f"{p}_{kind}3", "axis0"], [name]))
                shape = [None, width]
            outputs[kind].append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    if not batched:
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    graph = helper.make_graph(
        nodes, "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs["score"] + outputs["bbox"] + outputs["kps"], inits)
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), path)


def arcface_weights(dim: int = 512, seed: int = 0) -> np.ndarray:
    """The tiny ArcFace's one weight matrix (3 x 14 x 14 pooled inputs -> dim), as make_arcface stores it."""
    return np.random.default_rng(seed).standard_normal((3 * 14 * 14, dim)).astype(np.float32)


def make_arcface(path: Path, dim: int = 512, seed: int = 0, normalises_itself: bool = False) -> Path:
    """8x8 average pool -> flatten -> arcface_weights. `normalises_itself`: the graph starts with its own
    (x - 127.5) * (1 / 127.5) in nodes named like MXNet's exports (`_minusscalar0`, `_mulscalar0`), so it
    takes raw 0..255 pixels, as insightface detects for those files."""
    nodes, inits, first = [], [numpy_helper.from_array(arcface_weights(dim, seed), "w")], "input.1"
    if normalises_itself:
        inits += [_const("mean", 127.5), _const("inv_std", 1 / 127.5)]
        nodes += [helper.make_node("Sub", ["input.1", "mean"], ["centred"], name="_minusscalar0"),
                  helper.make_node("Mul", ["centred", "inv_std"], ["scaled"], name="_mulscalar0")]
        first = "scaled"
    nodes += [helper.make_node("AveragePool", [first], ["pool"], kernel_shape=[8, 8], strides=[8, 8]),
              helper.make_node("Flatten", ["pool"], ["flat"]),
              helper.make_node("MatMul", ["flat", "w"], ["683"])]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [None, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [None, dim])], inits)
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), path)


def make_inswapper(path: Path, seed: int = 0, emap: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "conv_w"),
             numpy_helper.from_array((rng.standard_normal((512, 3)) * 2).astype(np.float32), "style_w"),
             numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "style_shape")]
    if emap:
        inits.append(numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "emap"))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["target", "conv_w"], ["mixed"]),
         helper.make_node("MatMul", ["source", "style_w"], ["style"]),
         helper.make_node("Reshape", ["style", "style_shape"], ["offset"]),
         helper.make_node("Add", ["mixed", "offset"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["output"])],
        "tiny_inswapper",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])], inits)
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), path)


def tiny_models_dir(root: Path, *, scrfd: bool = True, arcface: bool = True, inswapper: bool = True,
                    batched: bool = True) -> Manifest:
    """A models folder with the tiny models at the manifest's own paths for scrfd/arcface/inswapper."""
    manifest = Manifest(models_dir=root, config_file=root / "models.toml")
    if scrfd:
        make_scrfd(manifest.path("scrfd"), batched=batched)
    if arcface:  # buffalo_l's and antelopev2's recognisers: two different models of the same size
        make_arcface(manifest.path("arcface-buffalo"))
        make_arcface(manifest.path("arcface-antelopev2"), seed=1)
    if inswapper:
        make_inswapper(manifest.path("inswapper"))
    return manifest
