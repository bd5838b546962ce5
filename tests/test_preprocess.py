"""The whole preprocess on real photos with the real dlib models: verdicts, reasons, identity,
selection, the reference face and the files written."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from helpers_photos import (exif_rotated, re_encoded, relit, rgba_png, save, text_as_jpg, tiny_face,
                            truncated_jpeg, turned_head)
from portrait.imageio import load_rgb
from preprocess import REASONS, PreprocessConfig, run_preprocess

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)

MIXED_EXPECTED = {
    "a1.jpg": [],
    "a1_copy.jpg": ["duplicate"],
    "a2_mirror.jpg": [],
    "a3_close.png": [],
    "a4_rgba.png": [],
    "a5_exif.jpg": [],
    "broken.jpg": ["unreadable"],
    "grace.jpg": ["different_person"],
    "group.jpg": ["multiple_faces"],
    "notes.jpg": ["unreadable"],
}


def _resize(img, size):
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if size[0] < img.shape[1] else cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, astronaut, grace_hopper_path, group_photo_path):
    """A folder as users send it: 5 photos of one person in awkward formats, another person, a group,
    a truncated JPEG, a text file named .jpg, and an exact copy."""
    d = tmp_path_factory.mktemp("mixed")
    a = astronaut
    save(d / "a1.jpg", a)
    shutil.copyfile(d / "a1.jpg", d / "a1_copy.jpg")
    save(d / "a2_mirror.jpg", a[0:420, 40:460][:, ::-1])
    # Reframed copies of one portrait, each in other light: different photos to the duplicate check.
    save(d / "a3_close.png", _resize(relit(a, gain=(0.88, 0.95, 1.08), side=0.3)[30:330, 80:380], (480, 480)))
    rgba_png(d / "a4_rgba.png", np.ascontiguousarray(relit(a, gamma=0.75)[20:480, 10:470]))
    exif_rotated(d / "a5_exif.jpg", relit(a, gain=(1.1, 1.0, 0.82))[10:470, 60:512])
    shutil.copyfile(grace_hopper_path, d / "grace.jpg")
    shutil.copyfile(group_photo_path, d / "group.jpg")
    truncated_jpeg(d / "broken.jpg", a)
    text_as_jpg(d / "notes.jpg")
    calls = []
    out = d.parent / (d.name + "_out")
    result = run_preprocess(d, out, PreprocessConfig(top_k=4), progress=lambda *c: calls.append(c))
    return d, out, result, calls


@pytest.mark.slow
def test_mixed_folder_verdicts(mixed):
    _, _, result, _ = mixed
    got = {p.file: p.reasons for p in result.photos}
    assert got == MIXED_EXPECTED
    for p in result.photos:
        assert p.accepted == (not p.reasons)
        if p.reasons:
            assert p.message
    assert result.accepted_count == 5
    assert result.report["summary"]["by_reason"] == {"unreadable": 2, "multiple_faces": 1, "different_person": 1,
                                                       "duplicate": 1}


def test_selection_and_reference(mixed):
    _, _, result, _ = mixed
    assert len(result.selected) == 4 and set(result.selected) <= {k for k, v in MIXED_EXPECTED.items() if not v}
    totals = [result.photo(f).scores["total"] for f in result.selected]
    assert totals == sorted(totals, reverse=True)
    assert result.reference in result.selected and result.reference.startswith("a")
    ref = result.photo(result.reference)
    assert abs(ref.face.yaw) < 20 and ref.scores["sharpness"] > 0.5
    # The reference's face is given in full-resolution coordinates of the (EXIF-applied) photo.
    img = result.reference_image
    assert img is not None and img.shape[:2] == tuple(reversed(ref.facts["original_size"]))
    x0, y0, x1, y1 = result.reference_face.box
    assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]


def test_same_person_close_other_person_far(mixed, face_analysis, grace_hopper):
    _, _, result, _ = mixed
    embs = list(result.embeddings.values())
    assert len(embs) == 5
    same = [face_analysis.distance(x, y) for i, x in enumerate(embs) for y in embs[i + 1:]]
    assert max(same) < 0.4
    other = face_analysis.analyze(grace_hopper)[0].embedding
    assert min(face_analysis.distance(other, e) for e in embs) > 0.6
    assert face_analysis.distance(other, result.centroid) > 0.6
    for f in result.embeddings:
        assert result.photo(f).scores["identity"] > 0.7
    assert result.photo("grace.jpg").scores["identity"] < 0.5


def test_files_written(mixed):
    _, out, result, _ = mixed
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["selected"] == result.selected and report["reference"] == result.reference
    assert report["engines"]["detector"] == "dlib-hog" and report["engines"]["embedder"] == "dlib-resnet"
    lines = [json.loads(x) for x in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    assert [x["file_name"] for x in lines] == [result.photo(f).crop for f in result.selected]
    assert all(x["text"] == "a photo of ohwx person" for x in lines)
    pngs = sorted(p.name for p in (out / "train").glob("*.png"))
    assert pngs == sorted(x["file_name"] for x in lines)
    for name in pngs:
        assert load_rgb(out / "train" / name).shape == (512, 512, 3)


def test_progress_stages(mixed):
    _, _, _, calls = mixed
    stages = [c[0] for c in calls]
    assert {"intake", "analyse", "select", "crops"} == set(stages)
    assert ("intake", 10, 10) in calls and ("analyse", 10, 10) in calls and ("crops", 4, 4) in calls
    assert stages.index("select") > max(i for i, s in enumerate(stages) if s == "analyse")


def test_analyse_only_writes_nothing(tmp_path, astronaut):
    for i, (y, x) in enumerate([(0, 0), (40, 60), (80, 20)]):
        save(tmp_path / f"p{i}.jpg", relit(astronaut, gamma=(0.7, 1.0, 1.4)[i])[y:y + 420, x:x + 420])
    before = sorted(tmp_path.rglob("*"))
    result = run_preprocess(tmp_path, None, PreprocessConfig(min_photos=2))
    assert sorted(tmp_path.rglob("*")) == before
    assert result.train_dir is None and result.accepted_count == 3 and result.reference is not None
    assert all(p.crop is None for p in result.photos)


@pytest.fixture(scope="module")
def conditions(tmp_path_factory, astronaut, grace_hopper):
    """One person's photos with one problem each."""
    d = tmp_path_factory.mktemp("conditions")
    a = astronaut
    save(d / "base1.jpg", a)
    save(d / "base2.jpg", a[0:420, 40:460][:, ::-1])
    save(d / "base3.png", _resize(relit(a, gain=(0.88, 0.95, 1.08), side=0.3)[30:330, 80:380], (480, 480)))
    save(d / "blurry.jpg", cv2.GaussianBlur(a[10:430, 20:440], (0, 0), 3.0))
    save(d / "dark.jpg", (a[40:460, 10:430] * 0.15).astype(np.uint8))
    save(d / "rotated90.jpg", np.rot90(relit(a, gamma=1.3)[0:450, 30:480]))  # no EXIF tag: the face lies on its side
    save(d / "tiny_face.jpg", tiny_face(a[60:400, 100:400]))
    save(d / "thumbnail.jpg", _resize(a[20:440, 30:450], (200, 200)))
    # A dominant face with a small second face in the background is fine ...
    big = _resize(relit(a, gamma=0.75)[0:400, 60:460], (1024, 1024))
    big[719:1000, 760:1000] = _resize(grace_hopper, (240, 281))  # her face ~90 px, the main one ~215 px
    save(d / "with_bystander.jpg", big)
    # ... two faces of similar size are not.
    pair = np.hstack([_resize(a[40:300, 120:380], (500, 500)), _resize(grace_hopper[60:560, 6:506], (500, 500))])
    save(d / "two_people.jpg", pair)
    # Same photo as base1, resized and re-encoded (a messaging app's copy).
    save(d / "base1_whatsapp.jpg", re_encoded(a, 1.5, 60), quality=80)
    return run_preprocess(d, None, PreprocessConfig())


@pytest.mark.parametrize("file,expected", [
    ("base2.jpg", []), ("base3.png", []),
    ("blurry.jpg", ["blurry"]), ("dark.jpg", ["bad_exposure"]), ("rotated90.jpg", []),
    ("thumbnail.jpg", ["too_small"]), ("with_bystander.jpg", []), ("two_people.jpg", ["multiple_faces"]),
])
@pytest.mark.slow
def test_conditions(conditions, file, expected):
    assert conditions.photo(file).reasons == expected, conditions.photo(file).message


def test_sideways_photo_without_exif_is_turned_upright_and_says_so(conditions):
    p = conditions.photo("rotated90.jpg")
    assert p.accepted and p.facts["turned"] == 90 and "turned 90° clockwise to stand upright" in p.message.lower()
    w, h = p.facts["original_size"]
    assert (w, h) == (450, 450) and abs(p.face.roll) < 10
    upright = p.image()
    assert upright.shape[:2] == (450, 450)
    x0, y0, x1, y1 = p.face.box
    assert 0 <= x0 < x1 <= 450 and 0 <= y0 < y1 <= 450


def test_resized_reencoded_copy_is_a_duplicate(conditions):
    """Of the two copies the better one (here the larger: more face pixels) is kept."""
    orig, copy = conditions.photo("base1.jpg"), conditions.photo("base1_whatsapp.jpg")
    assert copy.reasons == [] and orig.reasons == ["duplicate"]
    assert copy.scores["total"] > orig.scores["total"] and "base1_whatsapp.jpg" in orig.message
    assert conditions.photo("base2.jpg").reasons == []  # the mirrored framing is a different photo


def test_tiny_face_is_face_too_small(conditions):
    p = conditions.photo("tiny_face.jpg")
    assert "face_too_small" in p.reasons and p.face is not None
    assert p.face.size < 0.06 * 1800


def test_bystander_face_counted_not_fatal(conditions):
    p = conditions.photo("with_bystander.jpg")
    assert p.facts["faces"] == 2 and p.accepted


def test_turned_head_is_extreme_pose(tmp_path, group_photo_path):
    path = save(tmp_path / "profile.jpg", turned_head(load_rgb(group_photo_path)))
    result = run_preprocess([path], None, PreprocessConfig(min_photos=1))
    p = result.photos[0]
    assert "extreme_pose" in p.reasons and abs(p.face.yaw) > 40
    assert p.scores["pose"] < 0.5


def test_reason_codes_are_the_contract():
    assert REASONS == ("unreadable", "unsupported_format", "too_large", "too_small", "no_face", "multiple_faces", "face_too_small",
                       "different_person", "blurry", "bad_exposure", "extreme_pose", "duplicate")


def test_no_photos_is_an_error(tmp_path):
    from portrait.errors import PortraitError

    with pytest.raises(PortraitError, match="no photos"):
        run_preprocess(tmp_path, None)
