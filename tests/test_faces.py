"""The offline face stack on real public-domain photos: detection, landmarks, pose, identity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from portrait.errors import ConfigError
from portrait.faces import FaceConfig, get_face_analysis
from portrait.faces.align import align_face, template_points
from portrait.imageio import load_rgb
from portrait.post.masks import face_mask, features_mask, skin_mask

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)


def _one(fa, img):
    faces = fa.analyze(img)
    assert len(faces) == 1, f"expected one face, got {len(faces)}"
    return faces[0]


def test_astronaut_face_found_with_landmarks_and_frontal_pose(face_analysis, face_analysis68, astronaut):
    for fa in (face_analysis, face_analysis68):
        f = _one(fa, astronaut)
        x0, y0, x1, y1 = f.box
        assert 150 < (x0 + x1) / 2 < 260 and 90 < (y0 + y1) / 2 < 180  # her face, not the suit patch
        assert f.landmarks5.shape == (5, 2)
        left_eye, right_eye, nose, ml, mr = f.landmarks5
        assert left_eye[0] < nose[0] < right_eye[0] and ml[0] < mr[0]
        assert left_eye[1] < nose[1] < ml[1]
        assert abs(f.yaw) < 15 and abs(f.roll) < 8
        assert f.embedding.shape == (128,)
    assert _one(face_analysis, astronaut).landmarks68 is None  # the default is licence-safe: 5 points
    assert _one(face_analysis68, astronaut).landmarks68.shape == (68, 2)


def test_pose_follows_mirror_and_rotation(face_analysis68, astronaut):
    f = _one(face_analysis68, astronaut)
    mirrored = _one(face_analysis68, np.ascontiguousarray(astronaut[:, ::-1]))
    assert np.sign(mirrored.yaw) == -np.sign(f.yaw) and abs(mirrored.yaw + f.yaw) < 4
    for fa in (face_analysis68, get_face_analysis(FaceConfig(landmarks="dlib5"))):
        f = _one(fa, astronaut)
        rot = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), 15, 1.0), (512, 512))
        rotated = _one(fa, rot)
        assert rotated.roll - f.roll == pytest.approx(-15, abs=4)  # counter-clockwise turn: roll falls


def test_five_points_measure_turned_heads(face_analysis, face_analysis68, group_photo_path, tom_hanks_path):
    """dlib's 5 points (the default) give a head's yaw from the nose base and the far eye's foreshortening:
    on the group photo's faces it agrees in direction with the 68-point fit wherever that reads a turn, it
    follows a mirror, and the two most turned heads read beyond intake's 35 degree limit."""
    img = load_rgb(group_photo_path)

    def by_box(fa, rgb):
        return {tuple(np.round(f.box / 8).astype(int)): f for f in fa.analyze(rgb, embed=False)}

    five, dense = by_box(face_analysis, img), by_box(face_analysis68, img)
    pairs = [(five[k], dense[k]) for k in five.keys() & dense.keys()]
    assert len(pairs) >= 6
    for f5, f68 in pairs:
        if abs(f68.yaw) > 20:
            assert np.sign(f5.yaw) == np.sign(f68.yaw), (f5.yaw, f68.yaw)
        else:
            assert abs(f5.yaw) < 30, (f5.yaw, f68.yaw)
    assert sum(abs(f5.yaw) > 35 for f5, _ in pairs) >= 2
    mirrored = by_box(face_analysis, np.ascontiguousarray(img[:, ::-1]))
    w = img.shape[1]
    for f5, _ in pairs:  # the same face in the mirrored photo turns the other way
        x0, y0, x1, y1 = f5.box
        (m,) = [m for m in mirrored.values() if abs((m.box[0] + m.box[2]) / 2 - (w - (x0 + x1) / 2)) < 0.3 * (x1 - x0)]
        assert abs(m.yaw + f5.yaw) < 12 and (abs(f5.yaw) < 10 or np.sign(m.yaw) == -np.sign(f5.yaw)), (f5.yaw, m.yaw)
    hanks = _one(face_analysis, load_rgb(tom_hanks_path))
    assert hanks.yaw > 20  # three-quarter view, turned towards the image's right (the 68-point fit: 31)


def test_turned_head_has_large_yaw(face_analysis68, tom_hanks_path):
    f = _one(face_analysis68, load_rgb(tom_hanks_path))
    assert abs(f.yaw) > 20  # the photo shows him in three-quarter view


def test_identity_distances_separate_people(face_analysis, astronaut, grace_hopper, tom_hanks_path):
    a = _one(face_analysis, astronaut)
    variants = [
        np.ascontiguousarray(astronaut[:, ::-1]),
        cv2.convertScaleAbs(astronaut, alpha=0.8, beta=30),
        cv2.resize(astronaut[40:400, 80:440], (300, 300), interpolation=cv2.INTER_AREA),
    ]
    for v in variants:
        assert face_analysis.distance(a.embedding, _one(face_analysis, v).embedding) < 0.3
    for other in (grace_hopper, load_rgb(tom_hanks_path)):
        d = face_analysis.distance(a.embedding, _one(face_analysis, other).embedding)
        assert d > face_analysis.same_person_threshold


def test_group_photo_finds_many_faces(face_analysis, group_photo_path):
    faces = face_analysis.analyze(load_rgb(group_photo_path), embed=False)
    assert len(faces) >= 6
    sizes = [f.size for f in faces]
    assert sizes == sorted(sizes, reverse=True)


def test_licence_safe_five_point_engine_matches_68(astronaut, face_analysis, face_analysis68):
    f5 = _one(face_analysis, astronaut)
    f68 = _one(face_analysis68, astronaut)
    assert f5.landmarks68 is None
    iod = f68.eye_distance
    # eyes agree closely; nose and mouth are estimated from the eyes and nose base, so looser
    assert np.abs(f5.landmarks5[:2] - f68.landmarks5[:2]).max() < 0.12 * iod
    assert np.abs(f5.landmarks5[2:] - f68.landmarks5[2:]).max() < 0.35 * iod
    assert face_analysis.distance(f5.embedding, f68.embedding) < 1e-5  # same descriptor, same alignment


def test_unknown_engine_name_is_refused():
    with pytest.raises(ConfigError, match="detector"):
        FaceConfig(detector="magic")


def test_aligned_crop_puts_eyes_level_at_the_template(face_analysis, astronaut):
    rot = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), 20, 1.0), (512, 512))
    f = _one(face_analysis, rot)
    crop, m = align_face(rot, f.landmarks5, 256, face_fraction=0.6)
    g = _one(face_analysis, crop)
    expected = template_points(256, 0.6)
    assert abs(g.roll) < 3
    assert np.abs(g.landmarks5[:2] - expected[:2]).max() < 6


def test_skin_mask_excludes_eyes_and_lips(face_analysis68, astronaut):
    f = _one(face_analysis68, astronaut)
    hw = astronaut.shape[:2]
    skin, face, feats = skin_mask(hw, f), face_mask(hw, f), features_mask(hw, f)
    for p in (f.landmarks5[0], f.landmarks5[1], f.landmarks5[3:].mean(0)):
        x, y = int(p[0]), int(p[1])
        assert skin[y, x] == 0 and feats[y, x] == 255 and face[y, x] == 255
    cheek = (f.landmarks68[2] + f.landmarks68[31]) / 2
    assert skin[int(cheek[1]), int(cheek[0])] == 255
    assert np.all(skin <= face)
