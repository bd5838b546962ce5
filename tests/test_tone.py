"""One person's skin in one light (post/tone.py), on real bundled portraits: a dark-skinned
user's face keeps its tone on a light-skinned template, and the template's neck and ears take it too; the
backdrop, the white shirt and a black-and-white template's pixels are left alone; the multi-band blend
never touches a pixel outside its mask; the mesh's masks reach the forehead and hold the features."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.faces import FaceConfig, get_face_analysis
from portrait.imageio import load_rgb
from portrait.post import fusion, masks
from portrait.post.color import lab
from portrait.post.segmentation import person_alpha
from portrait.post.skin_tone import skin_tone, to_lab
from portrait.templates import load_template


@pytest.fixture(scope="module")
def mesh_fa():
    return get_face_analysis(FaceConfig(landmarks="mediapipe"))


def _largest(fa, rgb):
    return max(fa.analyze(rgb, embed=False), key=lambda f: f.size)


@pytest.fixture(scope="module")
def dark_user(mesh_fa):
    rgb = load_rgb(load_template("flag-elder-suit").image_path)  # Monk 6-7: the darkest in the library
    return rgb, _largest(mesh_fa, rgb)


@pytest.fixture(scope="module")
def sample_user(mesh_fa, tmp_path_factory):
    """The sample user (light skin, a fringe): her first photo and its face."""
    from portrait.imageio import image_files
    from portrait.samples import write_sample_photos

    folder = tmp_path_factory.mktemp("sample-user")
    write_sample_photos(folder)
    rgb = load_rgb(image_files(folder)[0])
    return rgb, _largest(mesh_fa, rgb)


def _neck(rgb, face) -> np.ndarray:
    """The skin-coloured pixels of a band below the chin, the same ones in every image of this template."""
    h, w = rgb.shape[:2]
    ed = face.eye_distance
    band = np.zeros((h, w), bool)
    band[int(face.box[3] + 0.25 * ed):int(face.box[3] + 0.9 * ed), int(face.box[0] + 0.5 * ed):int(face.box[2] - 0.5 * ed)] = True
    return band & ~(masks.face_mask((h, w), face) > 0)


def test_the_users_tone_reaches_the_neck_and_the_face_keeps_it(mesh_fa, dark_user):
    t = load_template("corridor-office")  # Monk 2-3, white shirt, beige backdrop
    tpl = np.asarray(t.image())
    tface = t.slot_faces(mesh_fa)[t.faces[0]]
    urgb, uface = dark_user
    user_ita = skin_tone(urgb, uface).ita
    after = fusion.fuse(tpl, tface, urgb, uface)  # skin="user", the default
    before = fusion.fuse(tpl, tface, urgb, uface, skin="template")
    # The face keeps the user's tone (the old recolouring moved it ~40 degrees of ITA to the template's).
    assert abs(skin_tone(after.image, tface).ita - user_ita) < 8
    assert abs(skin_tone(before.image, tface).ita - user_ita) > 25
    # The neck follows: darker by much of the face's own drop in lightness, its shading kept.
    neck = _neck(tpl, tface)
    tpl_neck = to_lab(tpl[neck])
    skinlike = np.linalg.norm(tpl_neck - np.median(to_lab(tpl[masks.skin_mask(tpl.shape[:2], tface) > 0]), 0), axis=1) < 25
    assert skinlike.sum() > 200
    l_before = np.median(to_lab(before.image[neck])[skinlike, 0])
    l_after = np.median(to_lab(after.image[neck])[skinlike, 0])
    face_drop = skin_tone(before.image, tface).lab[0] - skin_tone(after.image, tface).lab[0]
    assert l_before - l_after > 0.5 * face_drop > 5, (l_before, l_after, face_drop)
    assert after.details["tone_carried_pixels"] > 1000
    # The backdrop (beyond the face's own region) and the white shirt are the template's.
    backdrop = (person_alpha(tpl) < fusion.BACKDROP) & (fusion.template_region(tpl.shape[:2], tface) == 0)
    assert np.array_equal(after.image[backdrop], tpl[backdrop])
    white = (tpl.min(axis=-1) > 215) & ~(masks.face_mask(tpl.shape[:2], tface) > 0)
    assert white.sum() > 1000
    assert np.abs(after.image[white].astype(int) - tpl[white]).mean() < 1.0
    moved = np.any(after.image != tpl, axis=-1)
    assert not np.any(moved & (after.mask == 0))


def test_a_black_and_white_template_gets_no_tone_and_no_colour(mesh_fa, dark_user):
    t = load_template("classic-bw-suit")
    tpl = np.asarray(t.image())
    tface = t.slot_faces(mesh_fa)[t.faces[0]]
    urgb, uface = dark_user
    res = fusion.fuse(tpl, tface, urgb, uface)
    same = fusion.fuse(tpl, tface, urgb, uface, skin="template")
    assert np.array_equal(res.image, same.image) and res.details["tone_carried_pixels"] == 0
    outside = fusion.template_region(tpl.shape[:2], tface) == 0
    assert np.array_equal(res.image[outside], tpl[outside])
    # ...and the user's colour does not come along: the painted face is as grey as the print (a dark face's
    # chroma, only two thirds taken off by the colour match, used to read as a faint cast)
    face = masks.face_mask(tpl.shape[:2], tface) > 0
    chroma = np.hypot(*to_lab(res.image[face])[:, 1:].T)
    assert np.percentile(chroma, 95) <= 1.0, np.percentile(chroma, 95)
    assert to_lab(res.image[face])[:, 0].std() > 5  # the face's own light and shade are kept


@pytest.mark.parametrize("name", ["flag-pearls", "flag-elder-suit", "flag-grey-suit"])
def test_a_light_users_tone_on_a_dark_template_clips_no_skin(mesh_fa, sample_user, name):
    """The sample user (light skin) on a dark-skinned template: the template's skin is taken lighter, and no
    channel of it may clip (clipped, the red channel stopped first and a lit forehead turned orange, or
    past L* 100 white: 25-32% of these templates' carried skin); the carried skin is still lighter."""
    urgb, uface = sample_user
    t = load_template(name)
    tpl = np.asarray(t.image())
    tface = t.slot_faces(mesh_fa)[t.faces[0]]
    res = fusion.fuse(tpl, tface, urgb, uface)
    assert res.details["tone_carried_pixels"] > 10000
    carried = np.any(res.image != tpl, axis=-1) & ~(masks.dilate(masks.face_mask(tpl.shape[:2], tface), 8) > 0)
    clipped = lambda img: float((img[carried].max(-1) == 255).mean())  # noqa: E731
    assert clipped(res.image) <= clipped(tpl) + 0.002, (clipped(res.image), clipped(tpl))
    assert np.median(to_lab(res.image[carried])[:, 0]) > np.median(to_lab(tpl[carried])[:, 0]) + 8


def test_fringe_cut_leaves_a_users_fringe_out_and_keep_pastes_it(mesh_fa, sample_user):
    """With fringe="cut", the sample user's fringe (which would come along as a strip of hair cut off by
    the mask's edge) is left out, and the template's own forehead shows there; other people's foreheads (a
    shine, a hairline at the temple) are the user's, whole. The default, "keep", pastes it with her face."""
    urgb, uface = sample_user
    hair = fusion._fringe(lab(urgb), uface, masks.face_mask(urgb.shape[:2], uface, forehead=0.3))
    assert np.count_nonzero(hair) > 300
    hair_lab = np.median(to_lab(urgb[hair > 0]), axis=0)
    t = load_template("corridor-office")
    tpl = np.asarray(t.image())
    tface = t.slot_faces(mesh_fa)[t.faces[0]]
    top = int(tface.landmarks68[17:27, 1].min())
    band = masks.face_mask(tpl.shape[:2], tface, forehead=0.3) > 0
    band[:int(top - 0.7 * tface.eye_distance)] = False
    band[top:] = False  # the forehead above the brows
    out = fusion.fuse(tpl, tface, urgb, uface, fringe="cut").image
    kept = fusion.fuse(tpl, tface, urgb, uface).image  # the default keeps it: it is part of her likeness

    def hair_coloured(img):
        return float((np.linalg.norm(to_lab(img[band]) - hair_lab, axis=1) < 15).mean())

    assert hair_coloured(out) <= 1.5 * hair_coloured(tpl) + 0.01, (hair_coloured(out), hair_coloured(tpl))
    assert hair_coloured(kept) >= 2 * hair_coloured(tpl) + 0.02, (hair_coloured(kept), hair_coloured(tpl))
    for name in ("hall-office", "flag-red-dress", "flag-elder-suit", "flag-black-jacket"):
        other = load_rgb(load_template(name).image_path)
        face = _largest(mesh_fa, other)
        assert not np.any(fusion._fringe(lab(other), face, masks.face_mask(other.shape[:2], face, forehead=0.3))), name


def test_unknown_skin_mode_is_a_config_error(mesh_fa, dark_user):
    from portrait.errors import ConfigError

    urgb, uface = dark_user
    t = load_template("corridor-office")
    with pytest.raises(ConfigError, match="unknown skin"):
        fusion.fuse(np.asarray(t.image()), t.slot_faces(mesh_fa)[0], urgb, uface, skin="both")
    with pytest.raises(ConfigError, match="unknown fringe"):
        fusion.fuse(np.asarray(t.image()), t.slot_faces(mesh_fa)[0], urgb, uface, fringe="trim")


def test_band_blend_keeps_the_outside_and_reaches_the_content_inside():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    content = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    mask = np.zeros((160, 160), np.uint8)
    mask[30:130, 30:130] = 255
    out = masks.band_blend(base, content, mask, feather_px=12)
    assert np.array_equal(out[mask == 0], base[mask == 0])
    assert np.abs(out[70:90, 70:90].astype(int) - content[70:90, 70:90]).max() <= 1  # deep inside: the content
    edge = out[30:33, 60:100].astype(int)  # at the mask's edge: still mostly the base
    assert np.abs(edge - base[30:33, 60:100]).mean() < np.abs(edge - content[30:33, 60:100]).mean()


def test_mesh_masks_reach_the_forehead_and_hold_the_features(mesh_fa):
    rgb = np.asarray(load_template("flag-teal-blouse").image())
    face = _largest(mesh_fa, rgb)
    hw = rgb.shape[:2]
    dense = masks.face_mask(hw, face)
    top = lambda m: np.nonzero(m.any(axis=1))[0][0]  # noqa: E731
    brow_y = float(face.mesh[[70, 63, 105, 66, 107, 336, 296, 334, 293, 300], 1].mean())
    chin_y = float(face.mesh[152, 1])
    assert top(dense) < brow_y - 0.2 * (chin_y - brow_y)  # the mesh's oval covers the forehead (~0.27 up)
    assert top(masks.face_mask(hw, face, forehead=0.1)) > top(dense) + 5  # `forehead` still caps it
    assert (person_alpha(rgb)[dense > 0] > 0.5).mean() > 0.99  # and stays on the person
    feats = masks.features_mask(hw, face)
    for i in (33, 133, 263, 362, 13, 14, 61, 291, 105, 334):  # eye corners, lips, brows
        x, y = np.round(face.mesh[i]).astype(int)
        assert feats[y, x] == 255, i
    skin = masks.skin_mask(hw, face)
    x, y = np.round(face.mesh[1]).astype(int)  # the nose tip is skin
    assert skin[y, x] == 255


def test_run_config_takes_skin_and_fringe_and_names_a_bad_one():
    from portrait.errors import ConfigError
    from portrait.jobs import RunConfig

    assert RunConfig().skin == "user" and RunConfig.from_dict({"skin": "template"}).skin == "template"
    with pytest.raises(ConfigError, match="skin"):
        RunConfig.from_dict({"skin": "both"})
    assert RunConfig().fringe == "keep" and RunConfig.from_dict({"fringe": "cut"}).fringe == "cut"
    with pytest.raises(ConfigError, match="fringe"):
        RunConfig.from_dict({"fringe": "trim"})


def test_fit_gamut_cuts_only_the_chroma_of_colours_srgb_cannot_show():
    import cv2

    from portrait.post.color import fit_gamut

    rng = np.random.default_rng(5)
    lab_px = np.stack([rng.uniform(40, 99, 4000), rng.uniform(-40, 60, 4000), rng.uniform(-20, 70, 4000)],
                      -1).astype(np.float32).reshape(40, 100, 3)
    rgb_max = lambda x: cv2.cvtColor(x, cv2.COLOR_LAB2RGB).max(-1)  # noqa: E731 (OpenCV clips at 1.0)
    before = rgb_max(lab_px) >= 0.99  # fit_gamut keeps a margin below white (252 of 255)
    assert 0.2 < before.mean() < 0.9  # both kinds present
    out = fit_gamut(lab_px)
    assert (rgb_max(out) < 0.995).all()
    np.testing.assert_array_equal(out[~before], lab_px[~before])  # in gamut: untouched
    np.testing.assert_allclose(out[..., 0], lab_px[..., 0])  # lightness kept
    hue = lambda x: np.arctan2(x[..., 2], x[..., 1])  # noqa: E731
    cut = before & (np.hypot(out[..., 1], out[..., 2]) > 0.5)  # (near white, none may be left to keep)
    assert cut.sum() > 0.8 * before.sum()
    np.testing.assert_allclose(hue(out)[cut], hue(lab_px)[cut], atol=1e-4)  # hue kept
    assert (np.hypot(out[..., 1], out[..., 2]) <= np.hypot(lab_px[..., 1], lab_px[..., 2]) + 1e-5).all()
    # Nothing selected (the carry reached no skin, as on trio-flags' smallest face): the image as it is.
    np.testing.assert_array_equal(fit_gamut(lab_px, np.zeros(lab_px.shape[:2], bool)), lab_px)
