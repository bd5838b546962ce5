"""Every bundled template, run with the sample user, measured from the written PNG with the dlib
descriptor called directly (5-point alignment, not the pipeline's own numbers): the face in every
painted slot, and the largest face, is the sample user's, on every bundled pack: not the template's person (>= 0.6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from portrait.faces.meters import SAME_PERSON, DlibMeter

from portrait.faces.base import iou
from portrait.imageio import load_rgb
from portrait.jobs import PortraitPipeline, RunConfig
from portrait.samples import write_sample_photos
from portrait.templates import bundled_dir, list_templates, load_template

ORIGINAL = ("astronaut-wide", "classic-bw", "duo", "navy-formal", "studio-grey", "warm-studio")
BUNDLED = tuple(t.name for t in list_templates([bundled_dir()]))  # every pack the wheel ships
USER_BAR = 0.45  # every output within this of the user on the dlib meter
OTHER_PERSON = 0.6  # the template's own person stays at least this far from the output


@pytest.fixture(scope="module")
def meter() -> DlibMeter:
    return DlibMeter()


@pytest.fixture(scope="module")
def every_template_run(hermetic, tmp_path_factory, meter):
    photos = tmp_path_factory.mktemp("samples")
    paths = write_sample_photos(photos)
    out = tmp_path_factory.mktemp("run")
    names = [t.name for t in list_templates([bundled_dir()])]
    assert set(ORIGINAL) <= set(names) and len(names) >= 30
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
        face = max(found, key=lambda f: iou(f[0], box))
        assert iou(face[0], box) > 0.3, (name, i, box, [f[0] for f in found])
        own = max(tpl_faces, key=lambda f: iou(f[0], [v / scale_back for v in slot.box]))[1]
        slots[i] = {"to_user": float(np.linalg.norm(face[1] - user)), "to_template": float(np.linalg.norm(face[1] - own)),
                    "template_is_user": bool(np.linalg.norm(own - user) < SAME_PERSON)}
    largest = found[0][1]
    return {"slots": slots, "largest_to_user": float(np.linalg.norm(largest - user))}


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED)
def test_every_painted_slot_and_the_largest_face_is_the_user(every_template_run, meter, name):
    result, out, user = every_template_run
    assert not result.failures, result.failures
    m = measure(name, out, user, meter)
    for i, d in m["slots"].items():
        assert d["to_user"] <= USER_BAR, (name, i, d)
        if d["template_is_user"] is False:  # every template of another person than the sample user
            assert d["to_template"] >= OTHER_PERSON, (name, i, d)
    assert m["largest_to_user"] <= USER_BAR, (name, m)
    # result.json says "passes" only of the painted face, a main face, found where it was painted.
    data = json.loads((out / "result.json").read_text())
    [entry] = [o for o in data["outputs"] if o["template"] == name]
    assert sorted(entry["slots"]) == sorted(str(i) for i in load_template(name).faces)
    assert all(v["found"] and v["main_face"] for v in entry["slots"].values())
    assert entry["passed_bar"] == entry["slots"][str(load_template(name).faces[0])]["passes"]
