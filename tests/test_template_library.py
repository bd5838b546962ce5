"""The bundled template library: enough packs of enough different people, each with
its provenance, tags and measured skin tone and yaw, read the way a user reads them
(`portrait templates list --json`), and the faces told apart by the dlib meter called directly."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from portrait.faces.meters import SAME_PERSON, DlibMeter

from portrait.cli import cli
from portrait.imageio import load_rgb
from portrait.templates import TAG_FACETS, bundled_dir, load_template

FREE = ("public-domain", "cc0")  # the only licences a shipped image may have (DEVELOPERS.md)
# The first six packs, kept for the demo and the tests that name them: their sources (scikit-image's
# astronaut, matplotlib's Grace Hopper) are 512 px. Every pack added since has a long side >= 1024.
DEMO = {"astronaut-wide", "classic-bw", "duo", "navy-formal", "studio-grey", "warm-studio"}


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("PORTRAIT_TEMPLATES_DIR", str(tmp_path_factory.mktemp("no-user-templates")))
    res = CliRunner().invoke(cli, ["templates", "list", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert not data["errors"], data["errors"]
    return data["templates"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_enough_single_and_multi_face_packs_each_with_provenance_and_tags(bundled):
    single = [t for t in bundled if len(t["faces"]) == 1]
    multi = [t for t in bundled if len(t["faces"]) > 1]
    assert len(single) >= 24 and len(multi) >= 3, (len(single), len(multi))
    for t in bundled:
        assert t["source"].strip() and t["licence"].split(":")[0] in FREE, t
        assert t["licence"].split(":", 1)[1].strip(), f"{t['name']}: the licence needs its reason"
        for facet, values in TAG_FACETS.items():
            assert len(set(t["tags"]) & set(values)) == 1, (t["name"], facet, t["tags"])
        assert {"skin_tone", "ita", "yaw"} <= set(t["measured"]), t
        view = "three-quarter" if abs(t["measured"]["yaw"]) >= 15 else "frontal"
        assert view in t["tags"], (t["name"], t["measured"]["yaw"], t["tags"])


def test_the_library_covers_framing_setting_colour_view_and_skin_tone(bundled):
    tags = {tag for t in bundled for tag in t["tags"]}
    assert {v for values in TAG_FACETS.values() for v in values} <= tags
    tones = {t["measured"]["skin_tone"] for t in bundled if "bw" not in t["tags"]}
    assert 0 not in tones and len(tones) >= 4, tones  # a colour pack always gets a tone; four Monk groups at least


def test_images_are_large_enough_and_the_packs_small_enough(bundled):
    total = 0
    for t in (t for t in bundled if t["name"] not in DEMO):
        rgb = load_rgb(t["image"])
        assert max(rgb.shape[:2]) >= 1024, (t["name"], rgb.shape)
    for p in bundled_dir().rglob("*"):
        total += p.stat().st_size if p.is_file() else 0
    assert total < 25 * 2**20, total


@pytest.mark.slow
def test_the_template_faces_are_at_least_twenty_different_people(bundled):
    meter = DlibMeter()
    faces = []  # (template, slot, descriptor) for every replaced slot
    for t in bundled:
        tpl = load_template(t["name"])
        found = meter.faces(load_rgb(tpl.image_path))
        scale = tpl.image().shape[1] / load_rgb(tpl.image_path).shape[1]
        for i in tpl.faces:
            box = tpl.detected_faces()[i].box / scale
            cx = (box[0] + box[2]) / 2
            near = min(found, key=lambda f: abs((f[0][0] + f[0][2]) / 2 - cx))
            faces.append((t["name"], i, near[1]))
    # Group faces closer than the same-person distance (transitively): each group is one person.
    group = list(range(len(faces)))

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for i in range(len(faces)):
        for j in range(i):
            if float(((faces[i][2] - faces[j][2]) ** 2).sum() ** 0.5) < SAME_PERSON:
                group[root(i)] = root(j)
    people = {root(i) for i in range(len(faces))}
    assert len(people) >= 20, len(people)
    # The recoloured and recropped variants do group together: the meter does tell one person from another.
    by_name = {(n, i): root(k) for k, (n, i, _) in enumerate(faces)}
    assert by_name[("classic-bw-suit", 0)] == by_name[("flag-navy-suit", 0)]
    assert by_name[("studio-grey", 0)] == by_name[("astronaut-wide", 0)]
