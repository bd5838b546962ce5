"""Two-pass template inpainting on tiny random models: size, untouched pixels, seeds, ControlNets, LoRA,
and the clear errors of `portrait generate` when a model is missing."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest


from helpers_diffusion import load_models, small_template, tiny_models  # noqa: E402

from portrait.generate import controls  # noqa: E402
from portrait.errors import Cancelled, ConfigError  # noqa: E402
from portrait.generate.template_inpaint import PASS1, PASS2, Sitter, InpaintJob, TemplateInpaint  # noqa: E402
from portrait.templates.painting import job_from_template  # noqa: E402
from portrait.post import masks  # noqa: E402

CROP = 96  # working resolution: fast on 2 cores, still a real two-pass run


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("tiny-diffusion"))


@pytest.fixture(scope="session")
def models(tiny):
    return load_models(tiny)


@pytest.fixture(scope="session")
def scene(astronaut, grace_hopper, face_analysis):
    tpl, tface = small_template(astronaut, face_analysis)
    ref_face = face_analysis.analyze(grace_hopper)[0]
    return tpl, tface, grace_hopper, ref_face


def _job(scene, **kw):
    tpl, tface, _, _ = scene
    base = dict(prompt="a studio portrait", pass1=replace(PASS1, steps=4), pass2=replace(PASS2, steps=4), seed=3)
    return InpaintJob(tpl, tface, **{**base, **kw})


def _run(models, scene, identity, **kw):
    _, _, ref, rface = scene
    return TemplateInpaint(models, crop_size=CROP)(_job(scene, **kw), identity, ref, rface, keep_stages=True)[0]


@pytest.fixture(scope="session")
def reference_result(models, scene, tiny):
    return _run(models, scene, Sitter(lora=tiny["lora"]))


def test_output_has_template_size_and_pixels_outside_the_mask_are_the_templates(reference_result, scene):
    tpl, tface, _, _ = scene
    out = reference_result.image
    assert out.shape == tpl.shape and out.dtype == np.uint8
    assert (out != tpl).any(), "the face region must change"
    # Independently of the result's own mask: nothing outside the generously dilated face changes.
    region = masks.dilate(masks.face_mask(tpl.shape[:2], tface), int(tface.size * 0.5))
    assert (out[region == 0] == tpl[region == 0]).all()
    assert (out[reference_result.mask == 0] == tpl[reference_result.mask == 0]).all()
    assert {"fused", "replaced", "pass1", "color", "fused2", "pass2"} <= set(reference_result.stages)
    assert reference_result.stages["pass1"].shape == (CROP, CROP, 3)


def test_same_seed_same_image_other_seed_differs(models, scene, tiny, reference_result):
    again = _run(models, scene, Sitter(lora=tiny["lora"]))
    assert np.array_equal(again.image, reference_result.image)
    other = _run(models, scene, Sitter(lora=tiny["lora"]), seed=4)
    assert not np.array_equal(other.image, reference_result.image)


def _face_diff(a, b, mask) -> float:
    sel = mask > 0
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16))[sel].mean())


def test_dropping_a_controlnet_changes_the_face_and_does_not_run_it(models, scene, tiny, reference_result):
    no_canny = replace(PASS1, steps=4, controlnets={**PASS1.controlnets, "canny": 0.0})
    assert [n for n, _ in no_canny.active()] == ["openpose", "color"]
    res = _run(models, scene, Sitter(lora=tiny["lora"]), pass1=no_canny)
    assert _face_diff(res.image, reference_result.image, reference_result.mask) > 0.5
    assert res.details["controlnets"]["pass1"] == {"openpose": 0.5, "color": 0.85}
    assert len(models.pipeline(("openpose", "color")).controlnet.nets) == 2


def test_removing_the_lora_changes_the_face(models, scene, tiny, reference_result):
    res = _run(models, scene, Sitter(lora=tiny["lora"], lora_weight=0.0))
    assert _face_diff(res.image, reference_result.image, reference_result.mask) > 0.5


def test_batched_templates_match_single_runs(models, scene, tiny, reference_result):
    _, _, ref, rface = scene
    jobs = [_job(scene), _job(scene, seed=4)]
    out = TemplateInpaint(models, crop_size=CROP)(jobs, Sitter(lora=tiny["lora"]), ref, rface)
    assert len(out) == 2
    assert _face_diff(out[0].image, reference_result.image, reference_result.mask) < 1.0
    assert not np.array_equal(out[0].image, out[1].image)


def test_check_inputs_and_interrupt(models, scene, tiny):
    _, _, ref, rface = scene
    ti = TemplateInpaint(models, crop_size=CROP)
    with pytest.raises(ConfigError, match="strength"):
        ti(_job(scene, pass1=replace(PASS1, strength=1.5)), Sitter(lora=tiny["lora"]), ref, rface)
    with pytest.raises(ConfigError, match="unknown ControlNet"):
        ti(_job(scene, pass1=replace(PASS1, controlnets={"depth": 1.0})), Sitter(lora=tiny["lora"]), ref, rface)
    with pytest.raises(ConfigError, match="neither a LoRA nor a face"):
        ti(_job(scene), Sitter(), ref, rface)
    with pytest.raises(ConfigError, match="faceid_adapter"):
        ti(_job(scene), Sitter(face=object()), ref, rface)

    def stop(stage, done, total):
        if stage == "inpaint 1":
            ti.interrupt = True

    with pytest.raises(Cancelled):
        ti(_job(scene), Sitter(lora=tiny["lora"]), ref, rface, progress=stop)
    # The flag is the caller's: a call never clears it, so a stop set between two calls is not lost.
    with pytest.raises(Cancelled):
        ti(_job(scene), Sitter(lora=tiny["lora"]), ref, rface)
    ti.interrupt = False


def test_a_cancel_token_stops_generation_within_one_diffusion_step(models, scene, tiny):
    """cancel set during pass 1's first step: the call raises Cancelled before another step runs."""
    import threading

    _, _, ref, rface = scene
    cancel, steps = threading.Event(), []

    def progress(stage, done, total):
        if stage.startswith("inpaint"):
            steps.append((stage, done))
            cancel.set()

    with pytest.raises(Cancelled) as err:
        TemplateInpaint(models, crop_size=CROP)(_job(scene), Sitter(lora=tiny["lora"]), ref, rface,
                                                progress=progress, cancel=cancel)
    assert steps == [("inpaint 1", 1)] and err.value.code == "cancelled"


def test_job_from_template_reads_settings_and_overrides(scene):
    tpl, tface, _, _ = scene
    template = {"name": "astro", "image": tpl, "faces": [tface], "prompt": "p", "seed": 7,
                "inpaint": {"strength": 0.5, "steps": 12, "controlnets": {"canny": 0.7, "color": 0.2}},
                "edge": {"strength": 0.25, "controlnets": {"tile": 1.0}}}
    job = job_from_template(template)
    assert (job.seed, job.pass1.strength, job.pass1.steps, dict(job.pass1.controlnets)) == (7, 0.5, 12, {"canny": 0.7, "color": 0.2})
    assert job.pass2.strength == 0.25 and dict(job.pass2.controlnets) == {"tile": 1.0} and job.pass2.steps == PASS2.steps
    job = job_from_template(template, steps=4, seed=1, strength=0.9, controlnets={"canny": 0.0})
    assert (job.seed, job.pass1.steps, job.pass2.steps, job.pass1.strength) == (1, 4, 4, 0.9)
    assert [n for n, _ in job.pass1.active()] == ["color"]
    # A job's passes are checked where it is made: 3 steps at the edge pass's 0.25 leave no denoising step.
    with pytest.raises(ConfigError, match="template astro pass 2: steps x strength = 0.75 leaves no denoising step"):
        job_from_template(template, steps=3)


def test_controls_and_crop_geometry(scene):
    tpl, tface, _, _ = scene
    crop = controls.face_crop(tpl.shape[:2], tface, 100)
    assert crop.size == 96 and crop.side <= 256 and 0 <= crop.x0 <= 256 - crop.side
    face = crop.face(tface)
    img = crop.crop(tpl)
    m = controls.inpaint_mask(img.shape[:2], face)
    inner, outer = 3, 4
    ring = controls.edge_ring(m, inner, outer)
    k = 2 * inner + 1
    core = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    assert core.any() and not (ring & core).any()  # the eroded core is not repainted
    assert (ring & m).any() and (ring & ~m).any()  # the ring spans both sides of the mask's edge
    assert not (ring & ~masks.dilate(m, outer)).any()
    edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    assert ring[edge].all()  # ... and covers the whole edge
    # Canny lies on the template's edges: where the image's gradient is strong, not elsewhere.
    edges = controls.canny(img)[..., 0] > 0
    grad = np.hypot(cv2.Sobel(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_32F, 1, 0),
                    cv2.Sobel(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_32F, 0, 1))
    assert edges.any() and grad[edges].mean() > 3 * grad[~edges].mean()
    for c in controls.make_controls(controls.CONTROL_NAMES, fused=img, replaced=img, faces=face):
        assert c.shape == img.shape and c.dtype == np.uint8


def _pixel(img, xy):
    return tuple(int(v) for v in img[int(xy[1]), int(xy[0])])


def test_openpose_control_of_a_five_point_face_is_an_openpose_rendering(scene):
    """control_v11p_sd15_openpose saw OpenPose renderings: white face dots, the head's keypoints and limbs in
    OpenPose's colours; not InstantID's keypoint drawing (what 5-point faces used to get)."""
    tpl, tface, _, _ = scene
    crop = controls.face_crop(tpl.shape[:2], tface, 256)
    five = replace(crop.face(tface), landmarks68=None)
    img = controls.face_keypoints((256, 256), five)
    lm = five.landmarks5
    for xy in lm:  # white dots of radius 3 on every point
        assert _pixel(img, xy) == (255, 255, 255)
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert (255, 255, 255) in colours and not colours & {(0, 255, 0), (0, 0, 255), (255, 255, 0)}  # no kps colours
    # The nose-eye limbs in OpenPose's colours (limb 13 (85, 0, 255), limb 15 (255, 0, 255)) at 0.6 over black.
    mid_right, mid_left = (lm[2] + lm[0]) / 2, (lm[2] + lm[1]) / 2
    assert _pixel(img, mid_right) == tuple(round(c * 0.6) for c in (85, 0, 255))
    assert _pixel(img, mid_left) == tuple(round(c * 0.6) for c in (255, 0, 255))
    assert not img[:20].any()  # nothing far from the face


def test_instantid_keypoints_follow_draw_kps(scene):
    """InstantX's draw_kps: discs of radius 10 in the five colours at the points, sticks of half-width 4 from the
    eyes and mouth corners to the nose at 60 % of their colour."""
    tpl, tface, _, _ = scene
    face = controls.face_crop(tpl.shape[:2], tface, 1024).face(tface)
    img = controls.face_keypoints((1024, 1024), face, style="kps")
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
    lm = face.landmarks5
    for xy, c in zip(lm, colours):
        assert _pixel(img, xy) == c
        assert _pixel(img, xy + np.array([9, 0])) == c and _pixel(img, xy + np.array([12, 0])) != c
    mid = lm[0] + (lm[2] - lm[0]) * 0.5
    assert _pixel(img, mid) == (int(255 * 0.6), 0, 0)


# -- CLI: missing models give a clear error and exit code 2 ------------------------------------------

def _cli(args):
    from click.testing import CliRunner

    from portrait.cli import cli

    return CliRunner().invoke(cli, args)


def test_generate_cli_missing_base_model(empty_models_dir, tiny, astronaut, tmp_path):
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "astro.png")
    res = _cli(["generate", "--identity", str(tiny["lora"]), "--template", str(tmp_path / "astro.png"),
                "--reference", str(tmp_path / "astro.png"), "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 2, res.output
    err = json.loads(res.output.strip().splitlines()[-1])
    assert err["error"] == "model_missing" and err["model"] == "sd15"
    assert str(empty_models_dir / "diffusion" / "sd15") in err["message"]


def test_generate_cli_missing_controlnet_and_bad_hash(empty_models_dir, tiny, astronaut, tmp_path):
    from PIL import Image

    from portrait.models import manifest as manifest_mod

    Image.fromarray(astronaut).save(tmp_path / "astro.png")
    single = tmp_path / "base.safetensors"
    single.write_bytes(b"not a checkpoint")
    (empty_models_dir / "models.toml").write_text(
        f'[models.sd15]\npath = "{tiny["base"]}"\n\n[models.mybase]\nkind = "diffusion_base"\npath = "{single}"\n'
        f'sha256 = "{"0" * 64}"\n')
    manifest_mod._MANIFESTS.clear()
    args = ["generate", "--identity", str(tiny["lora"]), "--template", str(tmp_path / "astro.png"),
            "--reference", str(tmp_path / "astro.png"), "--out", str(tmp_path / "out")]
    res = _cli(args)
    assert res.exit_code == 2, res.output
    assert "controlnet-canny" in res.output and str(empty_models_dir / "controlnet" / "sd15-canny") in res.output
    res = _cli([*args, "--base-model", "mybase"])
    assert res.exit_code == 2 and "mybase" in res.output and "sha256" in res.output
    manifest_mod._MANIFESTS.clear()


@pytest.mark.slow
def test_generate_cli_end_to_end_on_the_tiny_set(tmp_path, tiny, astronaut, grace_hopper, monkeypatch):
    from PIL import Image

    from portrait.models import loading, manifest as manifest_mod
    from portrait.models.tiny import build_tiny_set

    models_dir = tmp_path / "models"
    build_tiny_set(models_dir, sdxl=False)
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    manifest_mod._MANIFESTS.clear()
    small = astronaut
    Image.fromarray(small).save(tmp_path / "astro.png")
    Image.fromarray(grace_hopper).save(tmp_path / "hopper.png")
    try:
        res = _cli(["generate", "--identity", str(tiny["lora"]), "--template", str(tmp_path / "astro.png"),
                    "--reference", str(tmp_path / "hopper.png"), "--out", str(tmp_path / "out"), "--steps", "4",
                    "--seed", "5", "--json"])
    finally:
        manifest_mod._MANIFESTS.clear()
        loading.clear_cache()
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    [out] = info["outputs"]
    assert out["seed"] == 5 and out["identity"] == "lora"
    img = np.asarray(Image.open(out["file"]))
    assert img.shape == small.shape and (img != small).any()


def test_colour_control_is_easyphotos_mosaic(scene):
    """EasyPhoto's colour input: the image at 1024 px on its short side cut into 24 px cells (cubic shrink,
    nearest blow-up), then back to size: flat cells holding each region's colour, no detail."""
    tpl = cv2.resize(scene[0], (1024, 1024), interpolation=cv2.INTER_CUBIC)
    mosaic = controls.color_map(tpl)
    assert mosaic.shape == tpl.shape
    rows = {tuple(map(tuple, r)) for r in mosaic[:, ::7]}
    assert 38 <= len(rows) <= 44  # 1024 / 24 = 42 distinct rows of cells
    small = cv2.resize(tpl, (42, 42), interpolation=cv2.INTER_CUBIC)
    centres = ((np.arange(42) + 0.5) * 1024 / 42).astype(int)
    np.testing.assert_array_equal(mosaic[np.ix_(centres, centres)], small)


def test_the_passes_run_easyphotos_sampler_unless_another_is_asked_for(models, scene, tiny, reference_result):
    """SD 1.5's two passes sample with DPM++ 2M SDE Karras (EasyPhoto's) by default; --scheduler changes it,
    and so the picture; an unknown name is refused before anything runs."""
    pipe = models.pipeline(tuple(n for n, _ in PASS2.active()))  # the pipeline pass 2 ran last
    cfg = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert cfg.algorithm_type == "sde-dpmsolver++" and cfg.use_karras_sigmas
    _, _, ref, rface = scene
    ddim = TemplateInpaint(models, crop_size=CROP, sampler="ddim")(_job(scene), Sitter(lora=tiny["lora"]), ref, rface)[0]
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    sel = reference_result.mask > 0
    assert np.abs(ddim.image.astype(int) - reference_result.image.astype(int))[sel].mean() > 0.5
    with pytest.raises(ConfigError, match="unknown sampler 'magic'"):
        TemplateInpaint(models, sampler="magic")
    from portrait.jobs import GenerateConfig, RunConfig

    for cls in (RunConfig, GenerateConfig):
        with pytest.raises(ConfigError, match="scheduler"):
            cls(scheduler="magic")


def test_guidance_is_the_identity_engines_unless_the_template_sets_it():
    """InstantID's reference runs at guidance 5 (InstantX infer.py), the LoRA and FaceID at EasyPhoto's 7; a
    template's own guidance_scale wins over both."""
    from portrait.identity.face_embedding import FaceIdentity

    face = FaceIdentity(np.ones(128, np.float32) / np.sqrt(128), "dlib-resnet", "l2")
    unset = replace(PASS1, guidance_scale=None)
    assert unset.for_engine(Sitter(face=face, engine="instantid")).guidance_scale == 5.0
    assert unset.for_engine(Sitter(face=face, engine="faceid")).guidance_scale == 7.0
    assert unset.for_engine(Sitter(lora="x.safetensors")).guidance_scale == 7.0
    assert replace(PASS1, guidance_scale=3.5).for_engine(Sitter(face=face, engine="instantid")).guidance_scale == 3.5


def test_each_job_may_bring_its_own_reference_photo(models, scene, tiny, astronaut, face_analysis):
    """Variants of one template differ only in their reference photo: a job's `reference` is fused into
    its face in place of the call's, so the variants batch into one call."""
    _, _, ref, rface = scene
    other = (astronaut, face_analysis.analyze(astronaut)[0])
    ident = Sitter(lora=tiny["lora"])
    runner = TemplateInpaint(models, crop_size=CROP)
    mixed = runner([_job(scene), _job(scene, reference=other)], ident, ref, rface, keep_stages=True)
    alone = runner(_job(scene), ident, *other, keep_stages=True)[0]
    assert np.abs(mixed[1].stages["fused"].astype(int) - alone.stages["fused"].astype(int)).mean() < 1.0
    assert np.abs(mixed[0].stages["fused"].astype(int) - mixed[1].stages["fused"].astype(int)).mean() > 2.0
    with pytest.raises(ConfigError, match="job 0 reference"):
        runner(_job(scene, reference=(astronaut, None)), ident, ref, rface)
