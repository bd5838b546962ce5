"""Face fusion: likeness by the real dlib identity model; outside the face region only the template's skin
changes (post/tone.py), and nothing with skin="template"."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers_photos import same_person_variants

from portrait.errors import ConfigError, PortraitError
from portrait.post import color, fusion
from portrait.templates import load_template


def _face(fa, rgb):
    faces = fa.analyze(rgb)
    assert faces, "no face found"
    return faces[0]


def _likeness(fa, out, user_photos, template_emb):
    face = _face(fa, out)
    d_user = float(np.mean([fa.distance(face.embedding, _face(fa, p).embedding) for p in user_photos]))
    return d_user, fa.distance(face.embedding, template_emb)


# Classic fusion on the default 5-point landmarks (a similarity fit on eyes and nose, ellipse masks) and on the
# 68-point ones (inner-face fit, outline masks). The dense fit holds the turned Tom Hanks closer (0.44 vs 0.52
# onto the astronaut); both stay well inside the same-person bar of 0.6 and far from the template's person.
@pytest.mark.parametrize("landmarks,bar,fitted_on", [("dlib5", 0.55, "5pt"), ("dlib68", 0.5, "inner68")])
@pytest.mark.parametrize("user,template", [("astronaut", "grace_hopper"), ("grace_hopper", "astronaut"),
                                           ("tom_hanks", "astronaut"), ("tom_hanks", "grace_hopper")])
def test_fused_face_is_the_user_not_the_template(request, user, template, tom_hanks_path, landmarks, bar, fitted_on):
    from portrait.faces import FaceConfig, get_face_analysis
    from portrait.imageio import load_rgb

    face_analysis = get_face_analysis(FaceConfig(landmarks=landmarks))

    photos = {"astronaut": lambda: request.getfixturevalue("astronaut"),
              "grace_hopper": lambda: request.getfixturevalue("grace_hopper"),
              "tom_hanks": lambda: load_rgb(tom_hanks_path)}
    user_rgb, tpl_rgb = photos[user](), photos[template]()
    user_photos = same_person_variants(user_rgb)
    tpl_face = _face(face_analysis, tpl_rgb)
    # The reference is the user's photo posed most like the template; likeness is measured to all of them.
    ref_faces = [_face(face_analysis, p) for p in user_photos]
    i = fusion.pick_reference(ref_faces, tpl_face)
    ref_rgb, ref_face = user_photos[i], ref_faces[i]
    res = fusion.fuse(tpl_rgb, tpl_face, ref_rgb, ref_face)
    d_user, d_tpl = _likeness(face_analysis, res.image, user_photos, tpl_face.embedding)
    print(f"{user} into {template}: distance to user {d_user:.3f}, to template {d_tpl:.3f}")
    assert d_user <= bar and d_tpl >= 0.6, (d_user, d_tpl)
    # Outside the dilated template face region only the template's skin moves (to the user's tone): every
    # changed pixel is in the result's mask, and the backdrop is the template's bit for bit.
    from portrait.post.segmentation import person_alpha

    region = fusion.template_region(tpl_rgb.shape[:2], tpl_face)
    outside = region == 0
    moved = np.any(res.image != tpl_rgb, axis=-1)
    assert not np.any(moved & (res.mask == 0)) and np.count_nonzero(res.mask) > 1000
    backdrop = person_alpha(tpl_rgb) < 0.05
    assert np.array_equal(res.image[outside & backdrop], tpl_rgb[outside & backdrop])
    assert res.engine == "classic" and res.details["fitted_on"] == fitted_on
    # skin="template" (the face recoloured to the template's skin) changes nothing outside the region at all.
    old = fusion.fuse(tpl_rgb, tpl_face, ref_rgb, ref_face, skin="template")
    assert np.array_equal(old.image[outside], tpl_rgb[outside]) and not np.any(old.mask[outside])


def test_five_point_fallback_and_paste(face_analysis68, astronaut, grace_hopper):
    tpl_face, ref_face = _face(face_analysis68, grace_hopper), _face(face_analysis68, astronaut)
    tpl5 = fusion.replace(tpl_face, landmarks68=None)
    ref5 = fusion.replace(ref_face, landmarks68=None)
    res = fusion.fuse(grace_hopper, tpl5, astronaut, ref5, skin="template")
    assert res.details["fitted_on"] == "5pt"
    outside = fusion.template_region(grace_hopper.shape[:2], tpl5) == 0
    assert np.array_equal(res.image[outside], grace_hopper[outside]) and res.mask.any()

    pasted, mask = fusion.paste_5pt(grace_hopper, tpl_face, astronaut, ref_face)
    outside = fusion.template_region(grace_hopper.shape[:2], tpl_face) == 0
    assert pasted.shape == grace_hopper.shape and mask.dtype == np.uint8 and mask.any()
    assert np.array_equal(pasted[outside], grace_hopper[outside])
    assert np.array_equal(pasted[mask == 0], grace_hopper[mask == 0])


def test_multi_face_template_takes_one_identity_per_slot(face_analysis, astronaut, grace_hopper, tom_hanks_path):
    from portrait.imageio import load_rgb

    t = load_template("duo")
    img, slots = t.image(), t.slot_faces(face_analysis)
    assert sorted(slots) == [0, 1]
    hanks = load_rgb(tom_hanks_path)
    ids = {0: (grace_hopper, _face(face_analysis, grace_hopper)), 1: (hanks, _face(face_analysis, hanks))}
    res = fusion.fuse_slots(img, t.detected_faces(face_analysis), ids)
    faces = sorted(face_analysis.analyze(res.image), key=lambda f: f.center[0])
    assert len(faces) == 2
    for face, (_, ref) in zip(faces, (ids[0], ids[1])):
        assert face_analysis.distance(face.embedding, ref.embedding) < 0.6
    assert set(res.details["slots"]) == {0, 1}
    with pytest.raises(ConfigError, match="slot 5"):
        fusion.fuse_slots(img, t.detected_faces(face_analysis), {5: ids[0]})


def test_bad_arguments(face_analysis, astronaut):
    f = _face(face_analysis, astronaut)
    with pytest.raises(ConfigError, match="unknown fusion engine"):
        fusion.fuse(astronaut, f, astronaut, f, engine="magic")
    with pytest.raises(ConfigError, match="source_embedding"):
        fusion.fuse(astronaut, f, None, None, engine="onnx")
    with pytest.raises(ConfigError, match="blend"):
        fusion.fuse(astronaut, f, astronaut, f, blend=2)


def test_onnx_engine_missing_model_is_a_clear_error(face_analysis, astronaut, empty_models_dir):
    from portrait.models.manifest import Manifest

    f = _face(face_analysis, astronaut)
    with pytest.raises(PortraitError, match="inswapper"):
        fusion.fuse(astronaut, f, None, None, engine="onnx", manifest=Manifest(empty_models_dir),
                    source_embedding=np.ones(512, np.float32))


def test_reinhard_matches_masked_statistics():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
    ref = rng.integers(100, 250, (64, 64, 3), dtype=np.uint8)
    m = np.zeros((64, 64), np.uint8)
    m[8:56, 8:56] = 255
    out = color.reinhard_transfer(src, ref, m, m)
    lab = lambda x: cv2.cvtColor(x.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[m > 0]  # noqa: E731
    assert np.allclose(lab(out).mean(0), lab(ref).mean(0), atol=1.5)
    assert np.array_equal(color.reinhard_transfer(src, ref, m, m, strength=0.0), src) or \
        np.abs(color.reinhard_transfer(src, ref, m, m, strength=0.0).astype(int) - src).max() <= 1


def test_colour_transfer_bounds_the_spread_gain(astronaut, grace_hopper):
    """A template with a much wider colour spread must not blow up the user's (lips turned magenta)."""
    import cv2

    from portrait.post.color import reinhard_transfer

    grey = cv2.cvtColor(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    flat = cv2.addWeighted(astronaut, 0.25, grey, 0.75, 0)  # a quarter of the colour spread
    out = reinhard_transfer(flat, grace_hopper, max_gain=1.5)
    lab = lambda im: cv2.cvtColor(im.astype(np.float32) / 255, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    ratio_out = lab(out).std(0) / lab(flat).std(0)
    ratio_full = lab(reinhard_transfer(flat, grace_hopper, max_gain=100.0)).std(0) / lab(flat).std(0)
    assert np.all(ratio_out <= 1.5 * 1.05)  # within clipping / rounding
    assert ratio_full[1:].max() > 2.5  # unbounded, the chroma spread would have grown far more
