"""InstantID for SDXL from diffusers parts: the IdentityNet ControlNet (driven by the face tokens through
the hook, on a 5-keypoint drawing) and the resampler adapter, as an identity engine of TemplateInpaint,
on a tiny random SDXL found through the manifest."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest


from helpers_diffusion import small_template  # noqa: E402

from portrait.errors import ConfigError, ModelMissingError  # noqa: E402
from portrait.generate.pipelines import IDENTITYNET, InpaintModels  # noqa: E402
from portrait.generate.template_inpaint import PASS1, PASS2, Sitter, InpaintJob, TemplateInpaint  # noqa: E402
from portrait.identity.face_embedding import FaceIdentity, embed_identity  # noqa: E402
from portrait.models import loading, tiny  # noqa: E402
from portrait.models import manifest as manifest_mod  # noqa: E402

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)

CROP = 128


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    """Tiny SDXL + SDXL canny / tile ControlNets + InstantID (128-d, dlib-sized) + a models.toml naming them."""
    root = tmp_path_factory.mktemp("tiny-instantid")
    sdxl = tiny.build_tiny_sdxl(root / "sdxl")
    canny = tiny.build_tiny_controlnet(sdxl, root / "controlnet" / "sdxl-canny", seed=5)
    tile = tiny.build_tiny_controlnet(sdxl, root / "controlnet" / "sdxl-tile", seed=6)
    iid = tiny.build_tiny_instantid(sdxl, root / "iid", id_dim=128)  # not the manifest's default place
    (root / "models.toml").write_text(f'[models.sdxl]\npath = "{sdxl}"\n')
    return {"root": root, "sdxl": sdxl, "canny": canny, "tile": tile, **iid}


def _manifest(root, extra: str = ""):
    text = (root / "models.toml").read_text() + extra
    cfg = root / f"models-{abs(hash(extra))}.toml"
    cfg.write_text(text)
    return manifest_mod.Manifest(root, cfg)


def _iid_toml(paths) -> str:
    return (f'\n[models.instantid-adapter]\npath = "{paths["instantid-adapter"]}"\n'
            f'\n[models.instantid-controlnet]\npath = "{paths["instantid-controlnet"]}"\n')


@pytest.fixture(scope="module")
def models(tiny_xl):
    m = _manifest(tiny_xl["root"], _iid_toml(tiny_xl))
    return InpaintModels.load("sdxl", ["canny", "tile"], manifest=m, instantid=True, device="cpu",
                              controlnet_models={"canny": str(tiny_xl["canny"]), "tile": str(tiny_xl["tile"])})


@pytest.fixture(scope="module")
def hopper_identity(grace_hopper, face_analysis):
    return embed_identity([grace_hopper], face_analysis=face_analysis)


@pytest.fixture(scope="module")
def scene(astronaut, grace_hopper, face_analysis):
    tpl, tface = small_template(astronaut, face_analysis)
    return tpl, tface, grace_hopper, face_analysis.analyze(grace_hopper)[0]


def _run(models, scene, face, **kw):
    tpl, tface, ref, rface = scene
    job = InpaintJob(tpl, tface, prompt="a studio portrait", seed=2,
                     pass1=replace(PASS1, steps=6, controlnets={"canny": 0.5}), pass2=replace(PASS2, steps=4))
    ident = Sitter(face=face, engine="instantid", **kw)
    return TemplateInpaint(models, crop_size=CROP)(job, ident, ref, rface, keep_stages=True)[0]


def _diff(a, b, mask) -> float:
    sel = mask > 0
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16))[sel].mean())


def test_instantid_loads_from_the_manifest_as_diffusers_parts(models, tiny_xl):
    import torch
    from diffusers.models.embeddings import IPAdapterPlusImageProjection
    from safetensors.torch import load_file

    assert models.arch == "sdxl" and models.has_instantid
    assert models.identitynet.config.addition_embed_type == "text_time"
    pipe = models.pipeline(("canny", IDENTITYNET))
    assert [type(n).__name__ for n in pipe.controlnet.nets] == ["ControlNetModel", "ControlNetModel"]
    assert pipe.controlnet.nets[1] is models.identitynet
    # The adapter file reads natively: a perceiver resampler holding exactly the file's weights.
    from portrait.generate.pipelines import load_faceid_adapter

    load_faceid_adapter(pipe, models.instantid_adapter, 128)
    [proj] = pipe.unet.encoder_hid_proj.image_projection_layers
    assert isinstance(proj, IPAdapterPlusImageProjection)
    state = load_file(str(tiny_xl["instantid-adapter"]))
    assert torch.equal(proj.latents.detach().cpu(), state["image_proj.latents"])
    assert torch.equal(proj.proj_in.weight.detach().cpu(), state["image_proj.proj_in.weight"])
    assert all(p.device.type != "meta" for p in proj.parameters())


@pytest.fixture(scope="module")
def runs(models, scene, hopper_identity):
    other = FaceIdentity(-hopper_identity.embedding, "dlib-resnet", "l2")
    return {
        "hopper": _run(models, scene, hopper_identity, faceid_scale=1.0),
        "other": _run(models, scene, other, faceid_scale=1.0),
        "none": _run(models, scene, hopper_identity, faceid_scale=0.0, identitynet_scale=0.0),
        # The adapter off: the identity can only reach the image through the IdentityNet's face tokens.
        "net_only": _run(models, scene, hopper_identity, faceid_scale=0.0),
        "net_only_other": _run(models, scene, other, faceid_scale=0.0),
    }


@pytest.mark.slow
def test_instantid_identity_reaches_the_unet_and_the_identitynet(runs, models):
    hopper, mask = runs["hopper"], runs["hopper"].mask
    assert hopper.details["identity"] == "instantid"
    assert hopper.details["controlnets"]["pass1"] == {"canny": 0.5, IDENTITYNET: 0.8}
    assert _diff(hopper.image, runs["other"].image, mask) > 0.5  # another face embedding, another face
    assert _diff(hopper.image, runs["none"].image, mask) > 0.5  # no identity at all
    assert _diff(runs["net_only"].image, runs["none"].image, mask) > 0.5  # IdentityNet acts
    assert _diff(runs["net_only"].image, runs["net_only_other"].image, mask) > 0.5  # ... on the face tokens
    assert not models.identitynet._forward_pre_hooks  # the hook is removed after the call


def test_instantid_keypoint_control_is_draw_kps_at_the_users_mapped_landmarks(models, scene, hopper_identity):
    """The IdentityNet's control image (as it enters the ControlNet) has InstantX's draw_kps discs at the user's
    five landmarks carried onto the template face in the crop."""
    from portrait.faces.align import similarity_transform
    from portrait.generate import controls
    from portrait.post.fusion import transform_face

    tpl, tface, ref, rface = scene
    seen = []
    hook = models.identitynet.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["controlnet_cond"].detach().clone()), with_kwargs=True)
    try:
        _run(models, scene, hopper_identity, faceid_scale=1.0)
    finally:
        hook.remove()
    img = (seen[0][-1].permute(1, 2, 0).float().numpy() * 255).round().astype(np.uint8)
    face = controls.face_crop(tpl.shape[:2], tface, CROP).face(tface)
    kps = transform_face(rface, similarity_transform(rface.landmarks5, face.landmarks5)).landmarks5
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
    for i, (x, y) in enumerate(kps):
        # The disc drawn last over this point (discs of radius 10, drawn in order) gives its colour.
        last = max(j for j in range(5) if (int(kps[j][0]) - int(x)) ** 2 + (int(kps[j][1]) - int(y)) ** 2 <= 100)
        assert tuple(int(v) for v in img[int(y), int(x)]) == colours[last]
    assert not img[:8].any() and not img[-8:].any()  # black away from the face


def test_instantid_untouched_pixels(runs, scene):
    tpl = scene[0]
    for r in runs.values():
        assert r.image.shape == tpl.shape and r.image.dtype == np.uint8
        assert (r.image[r.mask == 0] == tpl[r.mask == 0]).all()
        assert (r.image != tpl).any()


def test_instantid_same_seed_same_image(models, scene, hopper_identity, runs):
    again = _run(models, scene, hopper_identity, faceid_scale=1.0)
    assert np.array_equal(again.image, runs["hopper"].image)


def test_missing_instantid_files_name_the_model(tiny_xl):
    root = tiny_xl["root"]
    with pytest.raises(ModelMissingError) as err:
        InpaintModels.load("sdxl", [], manifest=_manifest(root), instantid=True, device="cpu")
    assert err.value.model == "instantid-adapter" and "instantid-adapter" in str(err.value)
    assert err.value.path == str(root / "instantid" / "ip-adapter.safetensors")
    only_adapter = f'\n[models.instantid-adapter]\npath = "{tiny_xl["instantid-adapter"]}"\n'
    with pytest.raises(ModelMissingError) as err:
        InpaintModels.load("sdxl", [], manifest=_manifest(root, only_adapter), instantid=True, device="cpu")
    assert err.value.model == "instantid-controlnet"
    assert err.value.path == str(root / "instantid" / "ControlNetModel")  # the manifest's default place


def test_dimension_and_architecture_mismatches_are_config_errors(tiny_xl, models, scene, hopper_identity, tmp_path):
    from diffusers import ControlNetModel

    xl = loading.load_base(str(tiny_xl["sdxl"]), device="cpu")
    net = models.identitynet
    # A 512-d (ArcFace) adapter with the 128-d dlib identity.
    a512 = tiny.build_tiny_instantid_adapter(tiny_xl["sdxl"], tmp_path / "iid-512.safetensors", id_dim=512)
    m512 = InpaintModels(xl, {}, identitynet=net, instantid_adapter=a512)
    with pytest.raises(ConfigError, match=r"expects 512-d .* 128-d .*dlib-resnet"):
        _run(m512, scene, hopper_identity)
    # An adapter made for SD 1.5 (its tokens are another width) on the SDXL base.
    sd15 = tiny.build_tiny_sd15(tmp_path / "sd15")
    a15 = tiny.build_tiny_instantid_adapter(sd15, tmp_path / "iid-sd15.safetensors", id_dim=128)
    with pytest.raises(ConfigError, match=r"32-d tokens .*64-d"):
        InpaintModels(xl, {}, identitynet=net, instantid_adapter=a15)
    # A FaceID file is not InstantID's adapter.
    faceid = tiny.build_tiny_ip_adapter_faceid(tiny_xl["sdxl"], tmp_path / "faceid.safetensors", id_dim=128)
    with pytest.raises(ConfigError, match="not an InstantID adapter"):
        InpaintModels(xl, {}, identitynet=net, instantid_adapter=faceid)
    # InstantID on an SD 1.5 base, and an SD 1.5 ControlNet on the SDXL base.
    base15 = loading.load_base(str(sd15), device="cpu")
    with pytest.raises(ConfigError, match="SDXL"):
        InpaintModels(base15, {}, identitynet=net, instantid_adapter=tiny_xl["instantid-adapter"])
    net15 = ControlNetModel.from_pretrained(tiny.build_tiny_controlnet(sd15, tmp_path / "cn15"))
    with pytest.raises(ConfigError, match="ControlNet 'canny'"):
        InpaintModels(xl, {"canny": net15})
    # The engine needs the InstantID models loaded.
    with pytest.raises(ConfigError, match="instantid=True"):
        _run(InpaintModels(xl, {"canny": models.controlnets["canny"], "tile": models.controlnets["tile"]}), scene,
             hopper_identity)


def test_prompt_notice_is_silenced_but_other_warnings_pass(models, caplog):
    import logging

    TemplateInpaint(models)  # installs the filter
    name = "diffusers.pipelines.controlnet.pipeline_controlnet_inpaint_sd_xl"
    logger = logging.getLogger(name)
    with caplog.at_level(logging.WARNING, logger=name):
        logger.warning("You have 3 ControlNets and you have passed 1 prompts. The conditionings will be fixed "
                       "across the prompts.")
        logger.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records if r.name == name] == ["something else went wrong"]


def _cli(args):
    from click.testing import CliRunner

    from portrait.cli import cli

    return CliRunner().invoke(cli, args)


def test_generate_cli_engine_flag(tmp_path, tiny_xl, hopper_identity, astronaut, grace_hopper, monkeypatch):
    from PIL import Image

    ident = hopper_identity.save(tmp_path / "identity_embedding.safetensors")
    Image.fromarray(astronaut).save(tmp_path / "astro.png")
    Image.fromarray(grace_hopper).save(tmp_path / "hopper.png")
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(tiny_xl["root"]))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    manifest_mod._MANIFESTS.clear()
    args = ["generate", "--identity", str(ident), "--template", str(tmp_path / "astro.png"), "--reference",
            str(tmp_path / "hopper.png"), "--out", str(tmp_path / "out"), "--base-model", "sdxl", "--json"]
    try:
        res = _cli([*args, "--engine", "instantid"])  # the InstantID files are not in this models.toml
        assert res.exit_code == 2, res.output
        err = json.loads(res.output.strip().splitlines()[-1])
        assert err["error"] == "model_missing" and err["model"] == "instantid-adapter"
        res = _cli(args)  # auto: no InstantID files, so FaceID, whose adapter is missing too
        assert res.exit_code == 2, res.output
        assert json.loads(res.output.strip().splitlines()[-1])["model"] == "ip-adapter-faceid"
        lora = tmp_path / "lora.safetensors"
        lora.write_bytes(b"x")
        res = _cli(["generate", "--identity", str(lora), "--template", str(tmp_path / "astro.png"), "--reference",
                    str(tmp_path / "hopper.png"), "--out", str(tmp_path / "out"), "--engine", "instantid"])
        assert res.exit_code == 2 and "face embedding" in res.output
    finally:
        manifest_mod._MANIFESTS.clear()
        loading.clear_cache()
