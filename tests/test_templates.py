"""Templates: bundled samples, validation errors that name the file and key, `templates add` and its face cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from portrait import templates as T
from portrait.errors import TemplateError
from portrait.imageio import save_image
from portrait.models.manifest import sha256_file

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)


@pytest.fixture
def user_templates(tmp_path, monkeypatch):
    d = tmp_path / "user-templates"
    monkeypatch.setenv("PORTRAIT_TEMPLATES_DIR", str(d))
    return d


def test_bundled_samples_load(user_templates, face_analysis):
    names = [t.name for t in T.list_templates()]
    assert {"studio-grey", "astronaut-wide", "warm-studio", "classic-bw", "duo"} <= set(names)
    for name in names:
        t = T.load_template(name)
        assert t.image_path.stat().st_size < 300_000
        slots = t.slot_faces(face_analysis)
        assert sorted(slots) == sorted(t.faces)
        assert all(f.landmarks5.shape == (5, 2) for f in slots.values())
    duo = T.load_template("duo")
    left, right = duo.detected_faces(face_analysis)
    assert duo.faces == (0, 1) and left.center[0] < right.center[0]
    with pytest.raises(TemplateError, match="not found"):
        T.load_template("no-such-template")


def _make(tmp_path, image, toml: str):
    d = tmp_path / "tpl"
    d.mkdir(exist_ok=True)
    if isinstance(image, bytes):
        (d / "template.jpg").write_bytes(image)
    else:
        save_image(image, d / "template.jpg")
    (d / "template.toml").write_text(toml)
    return d


@pytest.mark.parametrize("toml,key", [
    ('name = "x"\n[inpaint]\nstrength = 2.0\n', "inpaint.strength"),
    ('name = "x"\n[inpaint]\nstrength = "high"\n', "inpaint.strength"),
    ('name = "x"\n[edge]\ncontrolnets = { depthmap = 0.5 }\n', "edge.controlnets.depthmap"),
    ('name = "x"\n[edge]\ncontrolnets = { tile = -1.0 }\n', "edge.controlnets.tile"),
    ('name = "x"\nfaces = "first"\n', "faces"),
    ('name = "x"\nfaces = [0, 0]\n', "faces"),
    ('name = "Bad Name"\n', "name"),
    ('name = "x"\ncolour = "red"\n', "colour"),
    ('name = "x"\n[output]\nupscale = 0.5\n', "output.upscale"),
    ('name = "x"\n[style]\nlora = "s.safetensors"\nweight = true\n', "style.weight"),
    ('name = "x"\nseed = -1\n', "seed"),
    ('name = "x"\n[inpaint]\nsteps = 1\nstrength = 0.5\n', "inpaint.steps"),
])
def test_bad_values_name_the_file_and_key(tmp_path, astronaut, toml, key):
    d = _make(tmp_path, astronaut, toml)
    with pytest.raises(TemplateError) as err:
        T.parse_template(d)
    msg = str(err.value)
    assert str(d / "template.toml") in msg and f"'{key}'" in msg, msg


def test_unparsable_toml(tmp_path, astronaut):
    d = _make(tmp_path, astronaut, 'name = "x\n')
    with pytest.raises(TemplateError, match="template.toml: cannot parse"):
        T.parse_template(d)


def test_template_without_a_face(tmp_path, face_analysis):
    blank = np.full((300, 300, 3), 128, np.uint8)
    d = _make(tmp_path, blank, 'name = "blank"\n')
    t = T.parse_template(d)
    with pytest.raises(TemplateError, match="no face was found"):
        t.detected_faces(face_analysis)
    with pytest.raises(TemplateError, match="no face was found"):
        T.add_template(d / "template.jpg", "blank2", tmp_path / "out", face_analysis=face_analysis)
    assert not (tmp_path / "out" / "blank2").exists()


def test_face_too_small(tmp_path, astronaut):
    import cv2

    from portrait.faces import FaceConfig, get_face_analysis

    tiny = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)  # face ~50 px
    save_image(tiny, tmp_path / "small.png")
    fa = get_face_analysis(FaceConfig(upsample=1))  # finds faces that small, which a template then refuses
    with pytest.raises(TemplateError, match="smaller than the 64 px"):
        T.add_template(tmp_path / "small.png", "small", tmp_path / "out", face_analysis=fa)


def test_corrupt_template_image(tmp_path, face_analysis, astronaut):
    d = _make(tmp_path, b"\xff\xd8\xff\xe0 this is not really a jpeg", 'name = "corrupt"\n')
    t = T.parse_template(d)
    with pytest.raises(TemplateError, match="template.jpg"):
        t.detected_faces(face_analysis)
    with pytest.raises(TemplateError, match="template.jpg"):
        t.image()
    with pytest.raises(TemplateError, match="cannot be a template"):
        T.add_template(d / "template.jpg", "corrupt2", tmp_path / "out", face_analysis=face_analysis)


def test_add_writes_template_and_face_cache(tmp_path, face_analysis, grace_hopper_path):
    t = T.add_template(grace_hopper_path, "hopper", tmp_path, face_analysis=face_analysis, prompt="a navy portrait",
                       inpaint={"strength": 0.5, "controlnets": {"canny": 0.4}})
    cache = tmp_path / "hopper" / T.FACE_CACHE
    assert cache.is_file() and (tmp_path / "hopper" / "template.toml").is_file()
    data = json.loads(cache.read_text())
    assert len(data["faces"]) == 1 and len(data["faces"][0]["landmarks5"]) == 5
    assert data["engines"]["landmarks"] == "dlib5"
    assert t.prompt == "a navy portrait" and t.inpaint.strength == 0.5 and t.inpaint.controlnets == {"canny": 0.4}
    loaded = T.load_template("hopper", dirs=[tmp_path])
    faces = loaded.detected_faces(face_analysis)
    assert np.allclose(faces[0].box, t.detected_faces()[0].box, atol=0.01)
    with pytest.raises(TemplateError, match="already exists"):
        T.add_template(grace_hopper_path, "hopper", tmp_path, face_analysis=face_analysis)
    with pytest.raises(TemplateError, match="'faces'"):
        T.add_template(grace_hopper_path, "hopper2", tmp_path, face_analysis=face_analysis, faces=[3])


def test_face_cache_follows_the_image(tmp_path, face_analysis, astronaut, grace_hopper):
    d = _make(tmp_path, astronaut, 'name = "swap"\n')
    box1 = T.parse_template(d).detected_faces(face_analysis)[0].box
    save_image(grace_hopper, d / "template.jpg")  # a different image: the cache's sha256 no longer matches
    box2 = T.parse_template(d).detected_faces(face_analysis)[0].box
    assert not np.allclose(box1, box2)
    assert json.loads((d / T.FACE_CACHE).read_text())["image_sha256"] == sha256_file(d / "template.jpg")


def test_each_face_engine_set_keeps_its_own_cache(tmp_path, face_analysis, face_analysis68, astronaut):
    """A default run (dlib 5-point landmarks) and a dlib68 run on the same template neither overwrite each
    other's cache nor are handed the other's faces."""
    d = _make(tmp_path, astronaut, 'name = "both"\n')
    t = T.parse_template(d)
    assert t.detected_faces(face_analysis)[0].landmarks68 is None
    assert t.detected_faces(face_analysis68)[0].landmarks68 is not None  # the same Template, another engine set
    default, other = d / T.FACE_CACHE, d / T.face_cache_name(face_analysis68.engines())
    assert other.name == ".faces.dlib-hog.dlib68.dlib-resnet.json"
    assert json.loads(default.read_text())["engines"]["landmarks"] == "dlib5"
    assert json.loads(other.read_text())["engines"]["landmarks"] == "dlib68"
    before = default.read_bytes(), other.read_bytes()
    T.parse_template(d).detected_faces(face_analysis68)
    T.parse_template(d).detected_faces(face_analysis)
    assert (default.read_bytes(), other.read_bytes()) == before


def test_bundled_templates_ship_both_face_caches():
    from portrait.faces import FaceConfig, get_face_analysis

    for fa in (get_face_analysis(FaceConfig(landmarks="dlib68")), get_face_analysis(FaceConfig(landmarks="dlib5")),
               get_face_analysis(FaceConfig(landmarks="mediapipe"))):
        for t in T.list_templates([T.bundled_dir()]):
            cache = json.loads((t.directory / T.face_cache_name(fa.engines())).read_text())
            assert cache["image_sha256"] == sha256_file(t.image_path)  # valid: no detection at run time
            assert cache["engines"] == dict(fa.engines(), confirm=cache["engines"]["confirm"])


def test_cli_templates(user_templates, grace_hopper_path, tmp_path):
    from portrait.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["templates", "add", str(grace_hopper_path), "--name", "hopper", "--prompt", "p", "--source", "matplotlib sample_data", "--licence", "public-domain: US Navy",
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["name"] == "hopper"
    assert (user_templates / "hopper" / T.FACE_CACHE).is_file()
    res = runner.invoke(cli, ["templates", "list", "--json"])
    names = [t["name"] for t in json.loads(res.output)["templates"]]
    assert "hopper" in names and "studio-grey" in names
    res = runner.invoke(cli, ["templates", "show", "duo", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)["detected_faces"]) == 2
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    res = runner.invoke(cli, ["templates", "add", "--source", "a test file", "--licence", "public-domain: test", str(bad), "--name", "bad"])
    assert res.exit_code == 2 and "cannot be a template" in res.output
    broken = user_templates / "broken"
    shutil.copytree(T.bundled_dir() / "studio-grey", broken)
    (broken / "template.toml").write_text('name = "broken"\n[inpaint]\nstrength = 9.0\n')
    res = runner.invoke(cli, ["templates", "list", "--json"])
    errors = json.loads(res.output)["errors"]
    assert errors and "inpaint.strength" in errors[0]["error"]


def test_a_bare_name_is_not_taken_for_an_unrelated_folder_here(tmp_path, monkeypatch):
    """`portrait run photos --template duo --out duo`: the output folder `duo` is not the template."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "duo").mkdir()
    t = T.load_template("duo")
    assert t.directory == T.bundled_dir() / "duo" and t.toml_path.is_file()
    with pytest.raises(TemplateError, match="template.toml"):
        T.load_template("./duo")  # spelled as a path, it is that folder, and it is not a template
