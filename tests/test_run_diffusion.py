"""`portrait run` with the diffusion stages on: tiny random SD 1.5 + ControlNets + FaceID adapter,
found through the manifest exactly as a user's real models would be."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from helpers_photos import sample_photo_set
from portrait.cli import cli
from portrait.imageio import load_rgb
from portrait.jobs import PortraitPipeline, RunConfig
from portrait.templates import load_template

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)

FAST = dict(steps=4, variants=1, max_tries=1, inpaint_size=128, retouch="none", upscale="none", seed=7)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return sample_photo_set(tmp_path_factory, "photos")


def _outside_crop(template, shape_hw, factor=3.5):
    """True where a pixel lies outside the region the inpaint crop can reach around the template face."""
    face = template.slot_faces()[0]
    cx, cy = face.center
    half = max(face.width, face.height) * factor / 2
    yy, xx = np.mgrid[0:shape_hw[0], 0:shape_hw[1]]
    return (np.abs(xx - cx) > half) | (np.abs(yy - cy) > half)


@pytest.mark.slow
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


# -- SDXL: InstantID chosen by the same auto rule as `portrait generate` ---------------------------------
@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory):
    """The tiny set with SDXL, its ControlNets and a 512-d (ArcFace-sized) InstantID + FaceID, and tiny random
    ArcFace ONNX models at both recognisers' manifest paths (buffalo_l's and antelopev2's)."""
    from helpers_onnx import make_arcface

    from portrait.models.manifest import Manifest
    from portrait.models.tiny import build_tiny_set

    d = tmp_path_factory.mktemp("tiny-sdxl-models")
    build_tiny_set(d, id_dim=512, sdxl=True)
    make_arcface(Manifest(d).path("arcface-buffalo"))
    make_arcface(Manifest(d).path("arcface-antelopev2"), seed=1)
    return d


def _sdxl_config(models_dir, embedder="arcface-antelopev2", **kw):
    from portrait.faces import FaceConfig

    # dlib's detector named outright: a tiny SCRFD (what auto picks for ArcFace) has random weights
    return RunConfig(models_dir=str(models_dir), base_model="sdxl", face=FaceConfig(detector="dlib-hog", embedder=embedder,
                     models_dir=str(models_dir)), **{**FAST, **kw})


@pytest.mark.slow
def test_run_on_sdxl_paints_with_instantid_and_keeps_the_rest(tiny_sdxl_dir, photos, tmp_path, monkeypatch):
    import shutil

    # The SDXL recipe needs no colour ControlNet (there is no standard SDXL release): make it missing.
    cfg = tiny_sdxl_dir / "models-no-colour.toml"  # beside the set: its relative paths resolve there
    cfg.write_text((tiny_sdxl_dir / "models.toml").read_text().replace('path = "controlnet/sdxl-color"',
                                                                       'path = "controlnet/absent"'))
    monkeypatch.setenv("PORTRAIT_MODELS_CONFIG", str(cfg))
    # A copy: the ArcFace run re-keys the template's face cache, which must not touch the repository's.
    folder = shutil.copytree(load_template("navy-formal").image_path.parent, tmp_path / "navy-formal")
    template = load_template(str(folder))
    pipe = PortraitPipeline(_sdxl_config(tiny_sdxl_dir, diffusion="on"))
    inpaint = pipe.engine("inpaint")
    assert pipe.identity_engine == "instantid"
    assert inpaint.engine == "diffusion" and "InstantID" in inpaint.reason and "sdxl" in inpaint.reason
    result = pipe.run(photos, [str(folder)], tmp_path / "xl")
    assert not result.failures and len(result.outputs) == 1
    # EasyPhoto's SDXL recipe: canny alone in both passes (SDXL ControlNets), plus the IdentityNet.
    models = pipe._painter.models
    assert models.arch == "sdxl" and models.has_instantid
    assert set(models.controlnets) == {"canny"}
    assert models.controlnets["canny"].config.addition_embed_type == "text_time"
    out = load_rgb(result.outputs[0].file)
    tpl = template.image()
    assert out.shape == tpl.shape
    outside = _outside_crop(template, tpl.shape[:2])
    assert np.array_equal(out[outside], tpl[outside])
    # Painted by diffusion, not only by the fusion: the same run with diffusion off differs on the face.
    plain = PortraitPipeline(_sdxl_config(tiny_sdxl_dir, diffusion="off")).run(photos, [str(folder)], tmp_path / "off")
    off = load_rgb(plain.outputs[0].file)
    x0, y0, x1, y1 = (int(v) for v in template.slot_faces()[0].box)
    assert np.abs(out[y0:y1, x0:x1].astype(int) - off[y0:y1, x0:x1].astype(int)).mean() > 2.0
    assert np.array_equal(off[outside], tpl[outside])
    saved = json.loads(result.result_file.read_text())["engines"]["inpaint"]
    assert "InstantID" in saved["reason"]


def test_sdxl_identity_engine_follows_the_recogniser(tiny_sdxl_dir, tmp_path):
    from portrait.engines import choose_identity
    from portrait.errors import ConfigError
    from portrait.models.manifest import Manifest
    from portrait.models.tiny import build_tiny_ip_adapter_faceid

    # InstantID's adapter takes 512-d antelopev2 embeddings and the set's FaceID adapter is SD 1.5's: nothing fits.
    auto = PortraitPipeline(_sdxl_config(tiny_sdxl_dir, embedder="dlib-resnet"))
    skipped = auto.engine("inpaint")
    assert skipped.engine == "skipped" and "--embedder arcface-antelopev2" in skipped.reason
    assert auto.identity_engine is None
    with pytest.raises(ConfigError, match="--embedder arcface-antelopev2"):
        PortraitPipeline(_sdxl_config(tiny_sdxl_dir, embedder="dlib-resnet", diffusion="on"))
    set_manifest = Manifest(tiny_sdxl_dir)
    # buffalo_l's embeddings are 512-d too, but InstantID was trained on antelopev2's: not chosen, and said why.
    engine, why = choose_identity(set_manifest, "sdxl", None, "arcface")
    assert engine is None and "arcface-antelopev2" in why and "arcface-buffalo" in why
    assert choose_identity(set_manifest, "sdxl", None, "arcface-antelopev2")[0] == "instantid"
    # SD 1.5: FaceID only with the recogniser it was trained on, never with dlib's 128-d descriptors.
    engine, why = choose_identity(set_manifest, "sd15", None, "dlib-resnet")
    assert engine is None and "128-d" in why and "--embedder arcface-buffalo" in why
    assert choose_identity(set_manifest, "sd15", None, "arcface") == ("faceid", "FaceID embedding")
    # An SDXL FaceID adapter for 128-d dlib embeddings: FaceID runs, and the reason says why not InstantID.
    adapter = build_tiny_ip_adapter_faceid(tiny_sdxl_dir / "sdxl", tmp_path / "faceid-xl.safetensors", id_dim=128)
    cfg = tiny_sdxl_dir / "models-faceid-xl.toml"  # beside the set: its relative paths resolve there
    cfg.write_text((tiny_sdxl_dir / "models.toml").read_text().replace(
        "[models.ip-adapter-faceid]", "[models.old-faceid]\nkind = \"ip_adapter\"") +
        f'\n[models.ip-adapter-faceid]\npath = "{adapter}"\n')
    m = Manifest(tiny_sdxl_dir, cfg)
    engine, why = choose_identity(m, "sdxl", None, "dlib-resnet")
    assert engine == "faceid" and "InstantID not used" in why and "--embedder arcface-antelopev2" in why
    # On SD 1.5 that SDXL-wide adapter cannot run, so auto does not pick it.
    engine, why = choose_identity(m, "sd15", None, "dlib-resnet")
    assert engine is None and "tokens" in why, why


@pytest.mark.slow
def test_run_cli_inpaint_size_reaches_the_diffusion_stage(tiny_models_dir, photos, tmp_path, monkeypatch):
    """--inpaint-size sets the working crop: both passes denoise 96 px crops (12 x 12 latents, seen where they
    enter the UNet the CLI run paints with), and the run finishes with diffusion on."""
    from portrait.models import loading
    from portrait.models.manifest import get_manifest

    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(tiny_models_dir))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    base = loading.load_base("sd15", manifest=get_manifest())  # the cached base the CLI run loads
    shapes = []
    hook = base.unet.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        res = CliRunner().invoke(cli, ["run", str(photos), "--template", "navy-formal", "--out", str(tmp_path),
                                       "--diffusion", "on", "--steps", "4", "--inpaint-size", "96", "--variants",
                                       "1", "--max-tries", "1", "--upscale", "none", "--json"])
    finally:
        hook.remove()
    assert res.exit_code == 0, res.output
    assert shapes and {s[1:] for s in shapes} == {(4, 12, 12)}
    result = json.loads(res.output)
    assert result["engines"]["inpaint"]["engine"] == "diffusion" and not result["failures"]
    assert result["engines"]["inpaint"]["reason"].endswith("96 px working crops")
    assert result["outputs"][0]["timings"]["inpaint"] > 0


@pytest.mark.slow
def test_the_first_variants_are_painted_in_one_batched_call(tiny_models_dir, photos, tmp_path, monkeypatch):
    """`--variants 2` on a one-face template: both reference photos go through one TemplateInpaint call
    (one denoising call per pass for both), and come out as the one-at-a-time renders do."""
    from portrait.generate.template_inpaint import TemplateInpaint

    calls = []
    real = TemplateInpaint.__call__

    def counting(self, jobs, *args, **kwargs):
        calls.append(len(jobs) if isinstance(jobs, list) else 1)
        return real(self, jobs, *args, **kwargs)

    monkeypatch.setattr(TemplateInpaint, "__call__", counting)
    cfg = RunConfig(models_dir=str(tiny_models_dir), diffusion="on", **{**FAST, "variants": 2, "max_tries": 2})
    batched = PortraitPipeline(cfg).run(photos, ["navy-formal"], tmp_path / "batched")
    assert calls == [2] and batched.outputs[0].variants_tried == 2
    calls.clear()
    monkeypatch.setattr(PortraitPipeline, "_diffuse_variants", lambda self, run, tmpl, refs: {})
    single = PortraitPipeline(cfg).run(photos, ["navy-formal"], tmp_path / "single")
    assert calls == [1, 1] and single.outputs[0].variants_tried == 2
    assert single.outputs[0].reference == batched.outputs[0].reference
    a, b = load_rgb(batched.outputs[0].file), load_rgb(single.outputs[0].file)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0  # batched = one at a time, to float noise


def test_an_fp16_sdxl_run_records_the_fp16_fix_vae_it_will_decode_with(tiny_sdxl_dir):
    """result.json's inpaint engine names the VAE when an fp16 SDXL base takes the fp16-fix one (issue 16);
    in fp32, or without the file, the base's own VAE is used and nothing is added."""
    import shutil

    from diffusers import AutoencoderKL

    from portrait.models.manifest import Manifest

    fix = Manifest(tiny_sdxl_dir).path("sdxl-vae-fp16-fix")
    assert "VAE" not in PortraitPipeline(_sdxl_config(tiny_sdxl_dir, dtype="fp16")).engine("inpaint").reason
    AutoencoderKL.from_pretrained(str(tiny_sdxl_dir / "sdxl" / "vae")).save_pretrained(str(fix))
    try:
        half = PortraitPipeline(_sdxl_config(tiny_sdxl_dir, dtype="fp16")).engine("inpaint")
        full = PortraitPipeline(_sdxl_config(tiny_sdxl_dir, dtype="fp32")).engine("inpaint")
    finally:
        shutil.rmtree(fix)
    assert half.engine == "diffusion" and half.reason.endswith("VAE sdxl-vae-fp16-fix"), half.reason
    assert full.engine == "diffusion" and "VAE" not in full.reason, full.reason
