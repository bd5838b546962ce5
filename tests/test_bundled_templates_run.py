"""Every bundled template, run with the sample user, measured from the written PNG with the dlib
descriptor called directly (5-point alignment, not the pipeline's own numbers): the face in every
painted slot, and the largest face, is the sample user's (issue 7, "Must be tested")."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import dlib
import numpy as np
import pytest

from portrait.imageio import load_rgb
from portrait.pipeline import PortraitPipeline, RunConfig
from portrait.samples import write_sample_photos
from portrait.templates import bundled_dir, list_templates, load_template

BUNDLED = ("astronaut-wide", "classic-bw", "duo", "navy-formal", "studio-grey", "warm-studio")
SAME_PERSON = 0.6


class DlibMeter:
    """An independent likeness meter: dlib's HOG detector, its 5-point predictor and ResNet descriptor."""

    def __init__(self):
        models = Path(list(importlib.util.find_spec("face_recognition_models").submodule_search_locations)[0]) / "models"
        self.detector = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def faces(self, rgb: np.ndarray) -> list[tuple[list[float], np.ndarray]]:
        """(box, 128-d descriptor) of every face, largest first."""
        rgb = np.ascontiguousarray(rgb)
        rects = sorted(self.detector(rgb, 1), key=lambda r: -r.area())
        return [([r.left(), r.top(), r.right(), r.bottom()],
                 np.asarray(self.rec.compute_face_descriptor(rgb, self.sp5(rgb, r)), np.float64)) for r in rects]


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def meter() -> DlibMeter:
    return DlibMeter()


@pytest.fixture(scope="module")
def every_template_run(hermetic, tmp_path_factory, meter):
    photos = tmp_path_factory.mktemp("samples")
    paths = write_sample_photos(photos)
    out = tmp_path_factory.mktemp("run")
    names = [t.name for t in list_templates([bundled_dir()])]
    assert set(BUNDLED) <= set(names)
    result = PortraitPipeline(RunConfig(models_dir=str(hermetic / "models"), variants=1, max_tries=2)).run(
        photos, list(BUNDLED), out)
    user = np.mean([meter.faces(load_rgb(p))[0][1] for p in paths if p.name.startswith("astronaut_")], axis=0)
    return result, out, user


def measure(name: str, out: Path, user: np.ndarray, meter: DlibMeter) -> dict:
    """Distances (from the written PNG) of each painted slot's face and the largest face to the user and
    to the template's own person in that slot."""
    t = load_template(name)
    tpl = load_rgb(t.image_path)
    tpl_faces = meter.faces(tpl)
    png = load_rgb(out / f"{name}.png")
    s = png.shape[1] / tpl.shape[1]
    found = meter.faces(png)
    slots = {}
    for i in t.faces:
        slot = t.detected_faces()[i]
        scale_back = t.image().shape[1] / tpl.shape[1]  # detected_faces are in image() coordinates
        box = [v / scale_back * s for v in slot.box]
        face = max(found, key=lambda f: _iou(f[0], box))
        assert _iou(face[0], box) > 0.3, (name, i, box, [f[0] for f in found])
        own = max(tpl_faces, key=lambda f: _iou(f[0], [v / scale_back for v in slot.box]))[1]
        slots[i] = {"to_user": float(np.linalg.norm(face[1] - user)), "to_template": float(np.linalg.norm(face[1] - own)),
                    "template_is_user": bool(np.linalg.norm(own - user) < SAME_PERSON)}
    largest = found[0][1]
    return {"slots": slots, "largest_to_user": float(np.linalg.norm(largest - user))}


@pytest.mark.parametrize("name", BUNDLED)
def test_every_painted_slot_and_the_largest_face_is_the_user(every_template_run, meter, name):
    result, out, user = every_template_run
    assert not result.failures, result.failures
    m = measure(name, out, user, meter)
    for i, d in m["slots"].items():
        assert d["to_user"] < SAME_PERSON, (name, i, d)
        if d["template_is_user"] is False:  # navy-formal, duo's right slot: another person's template
            assert d["to_template"] >= SAME_PERSON, (name, i, d)
    assert m["largest_to_user"] < SAME_PERSON, (name, m)
    # result.json says "passes" only of the painted face, a main face, found where it was painted.
    data = json.loads((out / "result.json").read_text())
    [entry] = [o for o in data["outputs"] if o["template"] == name]
    assert sorted(entry["slots"]) == sorted(str(i) for i in load_template(name).faces)
    assert all(v["found"] and v["main_face"] for v in entry["slots"].values())
    assert entry["passed_bar"] == entry["slots"][str(load_template(name).faces[0])]["passes"]
