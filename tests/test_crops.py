"""Training crops: size, eyes level and face centred (measured by re-detecting on the crop), and
background removal (classic GrabCut, and the ONNX matting engine with a tiny model built here)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from helpers_photos import save
from portrait.faces.pose import roll_from_eyes
from portrait.imageio import load_rgb
from portrait.models.manifest import Manifest
from preprocess import PreprocessConfig, run_preprocess
from preprocess.background import choose_engine, remove_background
from preprocess.crops import face_in_crop, make_crop


def _rotated(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _check_crop(crop, size, face_analysis):
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    faces = face_analysis.analyze(crop, embed=False)
    assert faces, "no face found again on the crop"
    f = faces[0]
    lm = f.landmarks5
    assert abs(roll_from_eyes(lm)) < 3.0  # eyes level
    centre_x = (lm[0, 0] + lm[1, 0] + lm[3, 0] + lm[4, 0]) / 4
    assert abs(centre_x - size / 2) < 0.04 * size  # centred left-right
    cx, cy = f.center
    assert abs(cx - size / 2) < 0.06 * size and 0.3 * size < cy < 0.65 * size
    return f


@pytest.mark.parametrize("size", [512, 256])
def test_crop_size_level_centred(astronaut, face_analysis, size):
    tilted = _rotated(astronaut, 20)  # head tilted by 20°
    face = face_analysis.analyze(tilted, embed=False)[0]
    assert abs(face.roll) > 12
    crop, m = make_crop(tilted, face, PreprocessConfig(resolution=size))
    _check_crop(crop, size, face_analysis)
    mapped = face_in_crop(face, m)
    assert abs(roll_from_eyes(mapped.landmarks5)) < 0.5


def test_preprocess_crops_from_exif_rotated_and_large_photos(tmp_path, astronaut, face_analysis):
    photos = tmp_path / "in"
    photos.mkdir()
    from helpers_photos import exif_rotated, relit

    # Three framings of one portrait, each in its own light (else the same photo: duplicates).
    exif_rotated(photos / "phone.jpg", _rotated(relit(astronaut, gamma=0.75)[0:400, 60:460], -15))
    big = cv2.resize(astronaut[0:400, 60:460], (1600, 1600), interpolation=cv2.INTER_CUBIC)
    save(photos / "big.jpg", big)  # face ~350 px: cropped from the analysis image, no re-decode
    save(photos / "plain.jpg", relit(astronaut, gain=(1.1, 1.0, 0.82))[30:480, 0:450])
    result = run_preprocess(photos, tmp_path / "out", PreprocessConfig(min_photos=1, resolution=384))
    assert result.accepted_count == 3, [(p.file, p.reasons) for p in result.photos]
    for p in result.photos:
        crop = load_rgb(tmp_path / "out" / "train" / p.crop)
        _check_crop(crop, 384, face_analysis)


def test_grabcut_background_to_white(astronaut, face_analysis):
    face = face_analysis.analyze(astronaut, embed=False)[0]
    crop, m = make_crop(astronaut, face, PreprocessConfig(resolution=256))
    out, alpha, engine = remove_background(crop, face_in_crop(face, m), "grabcut")
    assert engine == "grabcut" and out.shape == crop.shape and alpha.shape == crop.shape[:2]
    # Top corners (wall behind the head) become white; the face keeps its pixels.
    for corner in (out[:20, :20], out[:20, -20:]):
        assert corner.mean() > 245
    fx = face_in_crop(face, m)
    x0, y0, x1, y1 = [int(v) for v in fx.box]
    inner = (slice(y0 + 10, y1 - 10), slice(x0 + 10, x1 - 10))
    assert alpha[inner].mean() > 0.95 and np.abs(out[inner].astype(int) - crop[inner].astype(int)).mean() < 3


@pytest.mark.parametrize("name", ["dark-studio", "hall-office", "flag-elder-suit", "navy-formal"])
def test_selfie_segmentation_keeps_hair_and_drops_the_backdrop(name, face_analysis68):
    """On real portraits: curly dark hair on a dark backdrop (dark-studio), long hair on
    a light hall, short hair before flags, a cap on a flag: the hair above the brows stays, the top
    corners go white; GrabCut, the fallback, is measured beside it."""
    from portrait.templates import load_template

    rgb = np.ascontiguousarray(load_template(name).image())
    face = face_analysis68.analyze(rgb, embed=False)[0]
    out, alpha, engine = remove_background(rgb, face, "auto")
    assert engine == "selfie"
    lm = face.landmarks68
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    brow_y = int(lm[17:27, 1].min())
    x0, x1 = int(lm[17, 0]), int(lm[26, 0])
    hair = alpha[max(0, brow_y - int(0.9 * iod)): brow_y - int(0.2 * iod), x0:x1]  # forehead and hairline
    assert hair.mean() > 0.9, hair.mean()
    if name != "flag-elder-suit":  # curly, long and capped heads: the top of the head stays too
        cx = int(lm[27:31, 0].mean())
        top = alpha[max(0, brow_y - int(1.5 * iod)): brow_y - int(0.9 * iod), cx - int(0.5 * iod): cx + int(0.5 * iod)]
        assert top.mean() > 0.9, top.mean()
    h, w = alpha.shape
    corners = np.concatenate([alpha[: h // 10, : w // 10].ravel(), alpha[: h // 10, -w // 10:].ravel()])
    assert corners.mean() < 0.05, corners.mean()
    chest = alpha[min(h - 1, int(lm[8, 1] + iod)):, int(lm[8, 0]) - 10: int(lm[8, 0]) + 10]
    assert chest.mean() > 0.9
    assert out[: h // 10, : w // 10].mean() > 245


def _tiny_matting_onnx(path):
    """A tiny 'matting' model with MODNet's interface: 1x3xHxW in [-1, 1] -> 1x1xHxW alpha in [0, 1]
    (alpha = sigmoid(4 * mean over channels))."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "h", "w"])
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [4.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=1),
        helper.make_node("Mul", ["m", "k"], ["mk"]),
        helper.make_node("Sigmoid", ["mk"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "tiny_matting", [x], [y], initializer=[k, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_onnx_matting_engine(empty_models_dir, astronaut, face_analysis):
    manifest = Manifest(empty_models_dir)
    assert choose_engine("auto", manifest) == "selfie"  # no matting model: the shipped segmentation
    _tiny_matting_onnx(manifest.path("matting"))
    assert choose_engine("auto", manifest) == "onnx"
    face = face_analysis.analyze(astronaut, embed=False)[0]
    crop, m = make_crop(astronaut, face, PreprocessConfig(resolution=256))
    out, alpha, engine = remove_background(crop, face_in_crop(face, m), "auto", manifest)
    assert engine == "onnx"
    x = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
    expected = 1 / (1 + np.exp(-4 * x.mean(2)))
    expected = cv2.resize(expected.astype(np.float32), (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.abs(alpha - expected).max() < 1e-4
    comp = crop.astype(np.float32) * expected[..., None] + 255 * (1 - expected[..., None])
    assert np.abs(out.astype(np.float32) - comp).max() <= 1.0


def test_remove_background_option_in_preprocess(empty_models_dir, tmp_path, astronaut):
    photos = tmp_path / "in"
    photos.mkdir()
    save(photos / "a.jpg", astronaut)
    cfg = PreprocessConfig(min_photos=1, resolution=256, remove_background=True)
    result = run_preprocess(photos, tmp_path / "out", cfg)
    assert result.engines["background"] == "selfie" and result.report["engines"]["background"] == "selfie"
    crop = load_rgb(tmp_path / "out" / "train" / result.photos[0].crop)
    assert crop[:16, :16].mean() > 245 and crop[:16, -16:].mean() > 245
    assert not math.isnan(float(crop.mean()))
