"""The model-backed ONNX engines (SCRFD, ArcFace, inswapper) on tiny models with the released I/O."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers_onnx import BOX_DIST, KPS_DIST, arcface_weights, make_arcface, make_inswapper, tiny_models_dir

from portrait.errors import ConfigError, ModelMissingError
from portrait.faces import FaceAnalysis, FaceConfig
from portrait.faces.detect_scrfd import ScrfdDetector, nms
from portrait.faces.embed_arcface import ArcFaceEmbedder
from portrait.models.manifest import Manifest
from portrait.models.onnx_runtime import get_session, providers_for
from portrait.post import masks
from portrait.post.swap_onnx import OnnxSwapper


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Manifest:
    return tiny_models_dir(tmp_path_factory.mktemp("onnx_models"))


def _blocks(h: int, w: int, *cells: tuple[int, int], size: int = 16) -> np.ndarray:
    """Black image with white `size` squares whose top-left corners are at `cells` (x, y) pixels."""
    img = np.zeros((h, w, 3), np.uint8)
    for x, y in cells:
        img[y:y + size, x:x + size] = 255
    return img


def _expected(cell_x: int, cell_y: int, scale: float, stride: int = 8):
    centre = np.array([cell_x, cell_y], np.float32) * stride
    box = np.concatenate([centre - BOX_DIST[:2] * stride, centre + BOX_DIST[2:] * stride]) / scale
    kps = (centre + KPS_DIST.reshape(5, 2) * stride) / scale
    return box, kps


# -- SCRFD ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [True, False], ids=["batch-dim", "no-batch-dim"])
def test_scrfd_decodes_the_firing_anchor_to_exact_image_coordinates(tmp_path, batched):
    manifest = tiny_models_dir(tmp_path, arcface=False, inswapper=False, batched=batched)
    det = ScrfdDetector(manifest, input_size=64)
    # 128x96 letterboxes into 64x48 (scale 0.5): the square at (64, 48) fills stride-8 cell (4, 3).
    found = det.detect(_blocks(96, 128, (64, 48)))
    assert len(found) == 1
    box, kps = _expected(4, 3, 0.5)
    np.testing.assert_allclose(found[0].box, box, atol=1e-4)
    np.testing.assert_allclose(found[0].box, [16, 0, 112, 96], atol=1e-4)
    assert found[0].landmarks5.shape == (5, 2) and found[0].landmarks5.dtype == np.float32
    np.testing.assert_allclose(found[0].landmarks5, kps, atol=1e-4)
    assert found[0].landmarks5[0, 0] < found[0].landmarks5[1, 0]  # ArcFace order: image-left eye first
    assert found[0].score == pytest.approx(1 / (1 + np.exp(-20 * (127.5 / 128 - 0.5))), abs=1e-4)


def test_scrfd_letterbox_fits_tall_images_by_height(tiny):
    det = ScrfdDetector(tiny, input_size=64)
    # 96 wide x 192 tall → 32x64 (scale 1/3): the 24 px square at (48, 96) fills stride-8 cell (2, 4).
    found = det.detect(_blocks(192, 96, (48, 96), size=24))
    assert len(found) == 1
    box, kps = _expected(2, 4, 1 / 3)
    np.testing.assert_allclose(found[0].box, box, atol=1e-3)
    np.testing.assert_allclose(found[0].landmarks5, kps, atol=1e-3)


def test_scrfd_nms_removes_duplicate_anchors_and_keeps_separate_faces(tiny):
    det = ScrfdDetector(tiny, input_size=64)
    img = _blocks(96, 128, (0, 0), (96, 64))
    blob, _ = det._letterbox(img)
    boxes, scores, kps = det.decode(det.session.run(det.output_names, {det.input_name: blob}), det.score_threshold)
    assert len(boxes) == 4 and kps.shape == (4, 5, 2)  # two anchors fire at each of two locations
    found = det.detect(img)
    assert len(found) == 2
    np.testing.assert_allclose(sorted(d.box[0] for d in found), [_expected(0, 0, 0.5)[0][0], _expected(6, 4, 0.5)[0][0]])
    assert all(d.score > 0.99 for d in found)  # the stronger anchor of each pair survives


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.1], np.float32)
    assert nms(boxes, scores, 0.4) == [1, 2]
    assert nms(boxes, scores, 1.0) == [1, 0, 2, 3]


def test_scrfd_as_the_face_analysis_detector(tiny):
    fa = FaceAnalysis(FaceConfig(detector="scrfd", landmarks="none", embedder="arcface"), manifest=tiny)
    # 640x480 letterboxes into 640x640 at scale 1: the square at (320, 240) fills cell (40, 30).
    faces = fa.analyze(_blocks(480, 640, (320, 240)))
    assert len(faces) == 1
    box, kps = _expected(40, 30, 1.0)
    np.testing.assert_allclose(faces[0].box, box, atol=1e-3)
    np.testing.assert_allclose(faces[0].landmarks5, kps, atol=1e-3)  # the detector's keypoints are used
    assert faces[0].embedding.shape == (512,)
    assert fa.engines() == {"detector": "scrfd", "landmarks": "none", "embedder": "arcface"}


# -- ArcFace --------------------------------------------------------------------------------------
def _insightface_crop(image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """insightface's face_align.norm_crop, restated: skimage's similarity fit of the 5 points onto ArcFace's
    112 template, bilinear warp, constant black border."""
    import cv2
    from skimage.transform import SimilarityTransform

    from portrait.faces.types import ARCFACE_5PT_112

    tform = SimilarityTransform.from_estimate(kps, ARCFACE_5PT_112) if hasattr(SimilarityTransform, "from_estimate") \
        else SimilarityTransform()
    if not hasattr(SimilarityTransform, "from_estimate"):
        tform.estimate(kps, ARCFACE_5PT_112)
    return cv2.warpAffine(image, tform.params[:2], (112, 112), borderValue=0.0)


def _graph_output(crop: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The tiny ArcFace graph by hand: RGB (x - 127.5) / 127.5, 8x8 average pool, flatten (C, y, x), matmul."""
    x = (crop.astype(np.float64) - 127.5) / 127.5
    pooled = x.reshape(14, 8, 14, 8, 3).mean(axis=(1, 3)).transpose(2, 0, 1)  # (3, 14, 14)
    return pooled.reshape(-1) @ weights.astype(np.float64)


def test_arcface_is_the_graph_on_insightfaces_crop_raw_and_unnormalised(tiny, face_analysis, astronaut):
    emb = ArcFaceEmbedder(tiny)
    assert (emb.name, emb.dim, emb.metric, emb.same_person_threshold) == ("arcface-buffalo", 512, "cosine", 0.6)
    face = face_analysis.analyze(astronaut, embed=False)[0]
    got = emb.embed(astronaut, face)
    want = _graph_output(_insightface_crop(astronaut, face.landmarks5), arcface_weights())
    assert got.dtype == np.float32 and got.shape == (512,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)  # raw: its length is the model's, not 1
    assert abs(float(np.linalg.norm(got)) - 1.0) > 0.1
    # Channel order matters: the same crop read as BGR is another vector.
    bgr = _graph_output(_insightface_crop(astronaut[..., ::-1], face.landmarks5), arcface_weights())
    assert np.abs(bgr - want).max() > 1e-2


def test_arcface_border_is_black_like_insightface(tiny, face_analysis, astronaut):
    """A face at the image's edge: the part of the crop outside the image is black (constant border), which a
    reflected border would fill with face pixels."""
    emb = ArcFaceEmbedder(tiny)
    face = face_analysis.analyze(astronaut, embed=False)[0]
    x0 = int(face.box[0]) + 8
    edge = np.ascontiguousarray(astronaut[:, x0:])  # the left part of the face is cut off
    moved = face.scaled(1.0)
    moved.landmarks5 = face.landmarks5 - np.array([x0, 0], np.float32)
    crop = _insightface_crop(edge, moved.landmarks5)
    assert (crop[:, :4] == 0).all()  # the check is about something: the crop does reach past the edge
    np.testing.assert_allclose(emb.embed(edge, moved), _graph_output(crop, arcface_weights()), rtol=1e-4, atol=1e-3)


def test_arcface_graphs_that_normalise_themselves_get_raw_pixels(tmp_path, face_analysis, astronaut):
    """MXNet-exported recognisers start with their own Sub/Mul: insightface feeds them 0..255, and so do we;
    both graphs then give the same vector."""
    plain = Manifest(models_dir=tmp_path / "a", config_file=tmp_path / "a" / "models.toml")
    mx = Manifest(models_dir=tmp_path / "b", config_file=tmp_path / "b" / "models.toml")
    make_arcface(plain.path("arcface-buffalo"))
    make_arcface(mx.path("arcface-buffalo"), normalises_itself=True)
    face = face_analysis.analyze(astronaut, embed=False)[0]
    np.testing.assert_allclose(ArcFaceEmbedder(mx).embed(astronaut, face), ArcFaceEmbedder(plain).embed(astronaut, face),
                               rtol=1e-4, atol=1e-3)
    small = Manifest(models_dir=tmp_path / "c", config_file=tmp_path / "c" / "models.toml")
    make_arcface(small.path("arcface"), dim=64)  # 'arcface' is buffalo_l's recogniser
    assert ArcFaceEmbedder(small).dim == 64 and ArcFaceEmbedder(small).embed(astronaut, face).shape == (64,)


def test_antelopev2_is_its_own_model_and_named_as_such(tiny, face_analysis, astronaut):
    face = face_analysis.analyze(astronaut, embed=False)[0]
    antelope = ArcFaceEmbedder(tiny, model="arcface-antelopev2")
    assert antelope.name == "arcface-antelopev2"
    np.testing.assert_allclose(antelope.embed(astronaut, face),
                               _graph_output(_insightface_crop(astronaut, face.landmarks5), arcface_weights(seed=1)),
                               rtol=1e-4, atol=1e-3)


def test_face_analysis_aligns_arcface_on_the_detectors_points(tiny, astronaut, monkeypatch):
    """With SCRFD and dlib's 68 points, landmarks5 (what ArcFace and inswapper align on) are SCRFD's own, as in
    insightface; the 68 points stay for masks."""
    fa = FaceAnalysis(FaceConfig(detector="scrfd", landmarks="dlib68", embedder="arcface"), manifest=tiny)
    faces = fa.analyze(_blocks(480, 640, (320, 240)))
    _, kps = _expected(40, 30, 1.0)
    np.testing.assert_allclose(faces[0].landmarks5, kps, atol=1e-3)
    assert faces[0].landmarks68 is not None


def test_face_analysis_with_arcface_end_to_end(tiny, astronaut, monkeypatch):
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    # dlib's detector named outright: the tiny SCRFD that auto would pick has random weights
    fa = FaceAnalysis(FaceConfig(detector="dlib-hog", embedder="arcface", models_dir=str(tiny.models_dir)))
    faces = fa.analyze(astronaut)
    assert len(faces) == 1
    want = _graph_output(_insightface_crop(astronaut, faces[0].landmarks5), arcface_weights())
    np.testing.assert_allclose(faces[0].embedding, want, rtol=1e-4, atol=1e-3)
    assert fa.metric == "cosine" and fa.same_person_threshold == 0.6
    flipped = fa.analyze(np.ascontiguousarray(astronaut[:, ::-1]))[0]
    assert fa.distance(faces[0].embedding, flipped.embedding) > 1e-3


def test_an_arcface_embedder_detects_with_scrfd_unless_told_otherwise():
    """ArcFace aligns on SCRFD's own five keypoints (insightface, InstantX's infer.py, FaceID), never on points
    fitted from dlib's eyes and nose base: `auto`, the default, picks SCRFD for it."""
    from portrait.jobs import EmbedConfig

    assert FaceConfig(embedder="arcface").detector == "scrfd"
    assert FaceConfig(embedder="arcface-antelopev2").detector == "scrfd"
    assert FaceConfig().detector == "dlib-hog"  # dlib's descriptor aligns on dlib's own points
    assert FaceConfig(detector="dlib-hog", embedder="arcface").detector == "dlib-hog"  # asked for outright
    assert EmbedConfig(embedder="arcface").detector == "auto"
    with pytest.raises(ConfigError, match="detector"):
        EmbedConfig(detector="yolo")


# -- errors ---------------------------------------------------------------------------------------
def test_scrfd_without_its_file_names_the_model_and_path(empty_models_dir, astronaut):
    fa = FaceAnalysis(FaceConfig(detector="scrfd", models_dir=str(empty_models_dir)))
    with pytest.raises(ModelMissingError) as err:
        fa.analyze(astronaut)
    expected = empty_models_dir / "insightface" / "scrfd_10g_bnkps.onnx"
    assert err.value.model == "scrfd" and err.value.path == str(expected)
    assert "'scrfd'" in str(err.value) and str(expected) in str(err.value) and "models.toml" in str(err.value)


@pytest.mark.parametrize("engine,model", [(ScrfdDetector, "scrfd"), (ArcFaceEmbedder, "arcface-buffalo"),
                                          (OnnxSwapper, "inswapper")])
def test_a_corrupt_onnx_file_is_a_clear_error_naming_it(tmp_path, engine, model):
    manifest = Manifest(models_dir=tmp_path, config_file=tmp_path / "models.toml")
    path = manifest.path(model)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ConfigError) as err:
        engine(manifest)
    assert str(path) in str(err.value) and f"'{model}'" in str(err.value)
    assert "ONNX" in str(err.value)


def test_a_model_with_the_wrong_io_is_refused(tmp_path):
    manifest = Manifest(models_dir=tmp_path, config_file=tmp_path / "models.toml")
    make_arcface(manifest.path("scrfd"))  # an embedder where the detector belongs
    with pytest.raises(ConfigError, match="SCRFD"):
        ScrfdDetector(manifest)


def test_sessions_are_cached_per_file_version_and_device(tmp_path):
    path = make_arcface(tmp_path / "a.onnx")
    first = get_session(path)
    assert get_session(path) is first
    make_arcface(path, seed=1)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert get_session(path) is not first
    with pytest.raises(ModelMissingError):
        get_session(tmp_path / "nope.onnx")


def test_cuda_falls_back_to_cpu_with_a_warning_and_unknown_devices_are_refused():
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.warns(RuntimeWarning, match="CUDA"):
            assert providers_for("cuda") == ["CPUExecutionProvider"]
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="device"):
        providers_for("tpu")


# -- inswapper ------------------------------------------------------------------------------------
def test_swapper_changes_the_face_and_nothing_outside_it(tiny, face_analysis, astronaut):
    face = face_analysis.analyze(astronaut, embed=False)[0]
    swapper = OnnxSwapper(tiny)
    rng = np.random.default_rng(0)
    src_a, src_b = rng.standard_normal(512), rng.standard_normal(512)
    out = swapper.swap(astronaut, face, src_a)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    region = masks.dilate(masks.face_mask(astronaut.shape[:2], face), 2) > 0
    assert np.array_equal(out[~region], astronaut[~region])
    changed = np.abs(out.astype(int) - astronaut).sum(axis=2)
    inner = masks.inner_face_mask(astronaut.shape[:2], face) > 0
    assert changed[inner].mean() > 20  # the face itself is replaced, not just its edge
    assert not np.array_equal(swapper.swap(astronaut, face, src_b), out)  # the source embedding is wired in
    assert np.array_equal(swapper.swap(astronaut, face, src_a * 3.0), out)  # and normalised


def test_swapper_source_goes_through_emap(tiny):
    swapper = OnnxSwapper(tiny)
    emb = np.random.default_rng(1).standard_normal(512)
    lat = swapper.latent(emb)
    expected = (emb / np.linalg.norm(emb)) @ swapper.emap
    np.testing.assert_allclose(lat[0], expected / np.linalg.norm(expected), atol=1e-5)
    assert lat.shape == (1, 512) and lat.dtype == np.float32


def test_swapper_needs_an_arcface_embedding_and_its_emap(tmp_path, tiny, face_analysis, astronaut):
    face = face_analysis.analyze(astronaut)[0]  # dlib's 128-d descriptor
    with pytest.raises(ConfigError, match="arcface"):
        OnnxSwapper(tiny).swap(astronaut, face, face.embedding)
    manifest = Manifest(models_dir=tmp_path, config_file=tmp_path / "models.toml")
    make_inswapper(manifest.path("inswapper"), emap=False)
    with pytest.raises(ConfigError, match="emap") as err:
        OnnxSwapper(manifest)
    assert str(manifest.path("inswapper")) in str(err.value)


def test_onnx_fusion_blend_is_the_swapped_faces_opacity(tiny, face_analysis, astronaut):
    """fusion2_blend reaches the onnx engine: half opacity is halfway between the template and the full swap."""
    from portrait.post.fusion import fuse

    face = face_analysis.analyze(astronaut, embed=False)[0]
    src = np.random.default_rng(1).standard_normal(512)
    full = fuse(astronaut, face, None, None, engine="onnx", manifest=tiny, source_embedding=src, blend=1.0).image
    half = fuse(astronaut, face, None, None, engine="onnx", manifest=tiny, source_embedding=src, blend=0.5).image
    none = fuse(astronaut, face, None, None, engine="onnx", manifest=tiny, source_embedding=src, blend=0.0)
    mid = (astronaut.astype(np.float64) + full) / 2
    assert np.abs(half - mid).max() <= 1.0 and np.abs(full.astype(int) - astronaut).max() > 20
    assert np.array_equal(none.image, astronaut) and not none.mask.any()
