"""`--landmarks mediapipe`: the shipped Face Mesh on real photos, against
dlib's 68 points; the pose ladder (mirror, known rotations); the descriptor aligned on the mesh still
tells people apart; a commercial configuration loads no dlib landmark model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from portrait.faces import FaceConfig, get_face_analysis
from portrait.faces.landmarks_mediapipe import FACE_OVAL, MESH_TO_68
from portrait.imageio import load_rgb
from portrait.templates import load_template


@pytest.fixture(scope="module")
def mesh_fa():
    return get_face_analysis(FaceConfig(landmarks="mediapipe"))


def _iod(lm68: np.ndarray) -> float:
    return float(np.linalg.norm(lm68[36:42].mean(0) - lm68[42:48].mean(0)))


def test_every_face_of_the_group_photo_gets_a_mesh_that_agrees_with_dlib68(mesh_fa, face_analysis68,
                                                                             group_photo_path):
    rgb = load_rgb(group_photo_path)
    faces = mesh_fa.analyze(rgb, embed=False)
    ref = face_analysis68.analyze(rgb, embed=False)
    assert len(faces) >= 5 and len(faces) == len(ref)
    for f, d in zip(faces, ref):
        assert f.mesh.shape == (468, 2) and np.allclose(f.landmarks68, f.mesh[MESH_TO_68])
        err = np.linalg.norm(f.landmarks68 - d.landmarks68, axis=1) / _iod(d.landmarks68)
        assert err[36:48].mean() < 0.12 and err[48:68].mean() < 0.15 and err[27:36].mean() < 0.15, err
        x0, y0, x1, y1 = d.box
        oval = f.mesh[FACE_OVAL]
        assert oval[:, 1].min() < d.landmarks68[17:27, 1].min() - 0.2 * _iod(d.landmarks68), "onto the forehead"
        assert (x0 - d.width * 0.3 < oval[:, 0]).all() and (oval[:, 0] < x1 + d.width * 0.3).all()


def _rotate(rgb: np.ndarray, deg: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    big = cv2.copyMakeBorder(rgb, h // 4, h // 4, w // 4, w // 4, cv2.BORDER_REFLECT)
    hh, ww = big.shape[:2]
    return cv2.warpAffine(big, cv2.getRotationMatrix2D((ww / 2, hh / 2), deg, 1.0), (ww, hh),
                          borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("name", ["hall-office", "flag-elder-suit", "corridor-office", "field-outdoor",
                                  "flag-navy-suit"])
def test_pose_ladder_mirror_flips_yaw_and_rotation_moves_roll(mesh_fa, face_analysis68, name):
    rgb = np.ascontiguousarray(load_template(name).image())
    face = mesh_fa.analyze(rgb, embed=False)[0]
    mirror = mesh_fa.analyze(np.ascontiguousarray(rgb[:, ::-1]), embed=False)[0]
    assert abs(face.yaw + mirror.yaw) < 6.0, (face.yaw, mirror.yaw)  # the mesh is not exactly mirror-symmetric
    ref = face_analysis68.analyze(rgb, embed=False)[0].yaw  # a generic-model fit itself: only its side is sure
    assert abs(ref) < 10 or np.sign(ref) == np.sign(face.yaw), (ref, face.yaw)
    for deg in (-25, 25):
        turned = mesh_fa.analyze(_rotate(rgb, deg), embed=False)[0]
        # cv2 turns counter-clockwise for a positive angle; roll > 0 is clockwise
        assert abs((turned.roll - face.roll) + deg) < 2.0, (deg, face.roll, turned.roll)
        assert abs(turned.yaw - face.yaw) < 5.0, (deg, face.yaw, turned.yaw)


def test_a_turned_face_reads_turned_and_a_frontal_one_frontal(mesh_fa):
    yaw = {n: mesh_fa.analyze(np.ascontiguousarray(load_template(n).image()), embed=False)[0].yaw
           for n in ("hall-office", "flag-teal-blouse", "corridor-office", "flag-veteran")}
    assert abs(yaw["hall-office"]) < 6 and abs(yaw["flag-teal-blouse"]) < 8, yaw
    assert yaw["corridor-office"] < -12 and yaw["flag-veteran"] > 12, yaw


def test_the_mesh_aligned_descriptor_tells_people_apart(mesh_fa):
    from helpers_photos import same_person_variants

    a = np.ascontiguousarray(load_template("flag-teal-blouse").image())
    b = np.ascontiguousarray(load_template("flag-red-jacket").image())
    same = [mesh_fa.analyze(np.ascontiguousarray(v))[0].embedding for v in same_person_variants(a)]
    other = mesh_fa.analyze(b)[0].embedding
    assert max(np.linalg.norm(e - same[0]) for e in same[1:]) < 0.45
    assert np.linalg.norm(other - same[0]) > 0.6


def test_a_mesh_configuration_loads_no_dlib_landmark_model(mesh_fa):
    names = mesh_fa.model_names()
    assert "mediapipe-face-mesh" in names and not {"dlib-5pt", "dlib-68pt"} & set(names)
    rgb = np.ascontiguousarray(load_template("hall-office").image())
    mesh_fa.analyze(rgb)
    assert mesh_fa.embedder._sp5 is None  # the descriptor aligned on the mesh, dlib's 5-point model never loaded


def test_the_mesh_shape_meter_tells_people_apart():
    """The second likeness meter (portrait/faces/meters.py, used by bench/likeness.py): photos of one person
    in other light and framing keep their face's geometry; different people's geometry differs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from portrait.faces.meters import MeshMeter, shape_distance
    from template_choice import _variants

    from portrait.imageio import load_rgb
    from portrait.templates import load_template

    meter = MeshMeter()
    people = {}
    for name in ("hall-office", "flag-red-dress", "flag-dark-suit", "flag-black-jacket", "flag-elder-suit"):
        rgb = load_rgb(load_template(name).image_path)
        photos = [rgb] + [v for i, v in enumerate(_variants(rgb)) if i != 1]  # variant 1 is a mirror image
        people[name] = [meter.meshes(p)[0][1] for p in photos]
    same = [shape_distance(m[0], v) for m in people.values() for v in m[1:]]
    other = [shape_distance(people[a][0], people[b][0]) for a in people for b in people if a < b]
    assert max(same) < 2.0 < 4.0 < min(other), (max(same), min(other))
