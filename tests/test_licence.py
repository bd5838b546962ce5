"""The licence policy: `--licence commercial` / PORTRAIT_LICENCE refuses every model whose licence excludes
commercial use, naming it and a commercial-safe alternative (exit 2, error `licence_excluded`), a run
on commercial-safe models goes through, and under it the default landmarks are MediaPipe's mesh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers_onnx import tiny_models_dir
from helpers_photos import small_photo_set
from portrait.cli import cli
from portrait.errors import LicenceError
from portrait.models.licence import licence_policy
from portrait.models.manifest import Manifest

QUICK = ["--upscale", "none", "--retouch", "none", "--variants", "1", "--max-tries", "1", "--diffusion", "off",
         "--template", "studio-grey", "--json"]


# Every test here runs without user models or templates (conftest's module-wide `hermetic`).
pytestmark = pytest.mark.usefixtures("hermetic")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return small_photo_set(tmp_path_factory)


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def test_commercial_run_refuses_dlib_68pt_and_names_the_alternative(photos, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", photos, "--out", out, "--landmarks", "dlib68", "--licence", "commercial", *QUICK)
    assert r.exit_code == 2, r.output
    err = json.loads(r.stdout)
    assert err["error"] == "licence_excluded" and err["model"] == "dlib-68pt"
    assert "dlib-5pt" in err["alternative"] and "commercial" in err["message"]
    assert not list(out.rglob("*.png"))  # refused before any portrait is painted


def test_commercial_run_refuses_a_present_inswapper(photos, tmp_path, hermetic):
    tiny_models_dir(hermetic / "models", scrfd=False, arcface=False)  # inswapper is there: refused for its licence
    try:
        r = invoke("run", photos, "--out", tmp_path / "out", "--landmarks", "dlib5", "--fusion", "onnx", *QUICK,
                   env={"PORTRAIT_LICENCE": "commercial"})
    finally:
        shutil.rmtree(hermetic / "models" / "insightface")
    assert r.exit_code == 2, r.output
    err = json.loads(r.stdout)
    assert err["error"] == "licence_excluded" and err["model"] == "inswapper"
    assert "classic" in err["alternative"]


def test_commercial_run_on_dlib_5pt_makes_portraits(photos, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", photos, "--out", out, "--landmarks", "dlib5", "--licence", "commercial", *QUICK)
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert len(result["outputs"]) == 1 and Path(result["outputs"][0]["file"]).is_file()
    assert result["outputs"][0]["passed_bar"]  # the same person, painted with commercial-safe models only


@pytest.mark.slow
def test_the_default_landmarks_follow_the_policy(photos, tmp_path):
    # No --landmarks: under the commercial policy MediaPipe's mesh (Apache-2.0), else dlib's 5 points; the
    # photos are judged on the same ones.
    for policy, engine in ((["--licence", "commercial"], "mediapipe"), ([], "dlib5")):
        out = tmp_path / ("c" if policy else "a")
        r = invoke("run", photos, "--out", out, *policy, *QUICK)
        assert r.exit_code == 0, r.output
        result = json.loads(r.stdout)
        assert result["engines"]["faces"]["engine"] == f"dlib-hog+{engine}+dlib-resnet" and len(result["outputs"]) == 1
        assert result["outputs"][0]["passed_bar"]
        report = json.loads((out / "preprocess" / "report.json").read_text())
        assert report["engines"]["landmarks"] == engine


def test_a_commercial_face_stack_loads_no_dlib_landmark_model(tmp_path):
    import numpy as np

    from portrait.faces import FaceConfig, get_face_analysis
    from portrait.faces.landmarks_mediapipe import MeshLandmarker
    from portrait.templates import load_template

    with licence_policy("commercial"):
        config = FaceConfig()
        fa = get_face_analysis(config)
        [face] = fa.analyze(np.ascontiguousarray(load_template("hall-office").image()))
    assert config.landmarks == "mediapipe" and face.mesh is not None and face.embedding is not None
    assert not {"dlib-5pt", "dlib-68pt"} & set(fa.model_names())
    assert isinstance(fa.landmarker, MeshLandmarker) and fa.embedder._sp5 is None
    assert FaceConfig().landmarks == "dlib5"  # outside the policy: the default stays dlib's 5 points


def test_the_option_does_not_leak_into_the_caller(photos, tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("PORTRAIT_LICENCE", raising=False)
    r = invoke("run", photos, "--out", tmp_path / "out", "--template", "no-such-template", "--licence", "commercial")
    assert r.exit_code == 2 and "PORTRAIT_LICENCE" not in os.environ


def test_policy_in_the_library(tmp_path):
    m = Manifest(tmp_path)
    with licence_policy("commercial"):
        for name in ("dlib-68pt", "inswapper", "arcface-buffalo", "arcface", "instantid-adapter"):
            with pytest.raises(LicenceError) as exc:
                m.require(name)
            assert exc.value.alternative  # every refusal names what to use instead
            assert not m.available(name)
        assert m.require("dlib-5pt").is_file()
    with licence_policy("any"):
        assert m.available("dlib-68pt")
