"""`portrait run` with the diffusion stages on: tiny random SD 1.5 + ControlNets + FaceID adapter,
found through the manifest exactly as a user's real models would be."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from portrait.cli import cli
from portrait.imageio import load_rgb
from portrait.pipeline import PortraitPipeline, RunConfig
from portrait.samples import write_sample_photos
from portrait.templates import load_template

FAST = dict(steps=4, variants=1, max_tries=1, inpaint_size=128, retouch="none", upscale="none", seed=7)


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory):
    from portrait.models.tiny import build_tiny_set

    d = tmp_path_factory.mktemp("tiny-models")
    build_tiny_set(d, sdxl=False)
    return d


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    write_sample_photos(d)
    return d


def _outside_crop(template, shape_hw, factor=3.5):
    """True where a pixel lies outside the region the inpaint crop can reach around the template face."""
    face = template.slot_faces()[0]
    cx, cy = face.center
    half = max(face.width, face.height) * factor / 2
    yy, xx = np.mgrid[0:shape_hw[0], 0:shape_hw[1]]
    return (np.abs(xx - cx) > half) | (np.abs(yy - cy) > half)


def test_run_paints_the_face_with_faceid_and_keeps_the_rest(tiny_models_dir, photos, tmp_path):
    template = load_template("navy-formal")
    diffused = PortraitPipeline(RunConfig(models_dir=str(tiny_models_dir), diffusion="on", **FAST)).run(
        photos, ["navy-formal"], tmp_path / "on")
    engines = {e.stage: e for e in diffused.engines}
    assert engines["inpaint"].engine == "diffusion" and "FaceID" in engines["inpaint"].reason
    assert not diffused.failures and len(diffused.outputs) == 1
    out = load_rgb(diffused.outputs[0].file)
    tpl = template.image()
    assert out.shape == tpl.shape
    outside = _outside_crop(template, tpl.shape[:2])
    assert np.array_equal(out[outside], tpl[outside])  # pasted back through the mask

    classic = PortraitPipeline(RunConfig(models_dir=str(tiny_models_dir), diffusion="off", **FAST)).run(
        photos, ["navy-formal"], tmp_path / "off")
    plain = load_rgb(classic.outputs[0].file)
    face = template.slot_faces()[0]
    x0, y0, x1, y1 = (int(v) for v in face.box)
    # The random tiny UNet really painted the face: it differs from the classic fusion there.
    assert np.abs(out[y0:y1, x0:x1].astype(int) - plain[y0:y1, x0:x1].astype(int)).mean() > 2.0


def test_run_cli_with_diffusion_forced_but_no_base_model_says_what_is_missing(photos, empty_models_dir, tmp_path):
    res = CliRunner().invoke(cli, ["run", str(photos), "--template", "navy-formal", "--out", str(tmp_path),
                                   "--diffusion", "on", "--json"])
    assert res.exit_code == 2
    err = json.loads(res.output)
    assert err["error"] == "model_missing" and err["model"] == "sd15"
    assert str(empty_models_dir) in err["path"]
