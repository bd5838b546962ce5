"""Released files in their real layouts (tiny random weights, portrait.models.tiny_release), through the code a
real file takes: `portrait models convert`, the manifest, diffusers' loaders and the two-pass recipe.

FaceID's own LoRA, FaceID-PlusV2, InstantID's raw embedding and its recogniser, an A1111 ControlNet .pth and a
kohya style LoRA."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_diffusion import small_template, tiny_models
from helpers_onnx import make_arcface

from portrait.cli import cli
from portrait.errors import ConfigError, ModelMissingError
from portrait.faces import FaceAnalysis, FaceConfig
from portrait.generate.pipelines import InpaintModels
from portrait.generate.template_inpaint import PASS1, PASS2, Sitter, InpaintJob, TemplateInpaint
from portrait.identity.face_embedding import embed_identity
from portrait.models import loading, tiny, tiny_release
from portrait.models.manifest import Manifest

CROP = 64


def _convert(src: Path, dst: Path) -> Path:
    res = CliRunner().invoke(cli, ["models", "convert", str(src), str(dst), "--json"])
    assert res.exit_code == 0, res.output
    return dst


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """Tiny SD 1.5 set (base, ControlNets, identity LoRA) + the released-layout FaceID files, converted with the
    CLI as a user would, a kohya style LoRA, a CLIP image encoder and buffalo_l / antelopev2 recognisers."""
    root = tmp_path_factory.mktemp("real-layouts")
    paths = tiny_models(root / "set")
    base = paths["base"]
    rel = root / "released"
    faceid = _convert(tiny_release.build_faceid_release(base, rel / "ip-adapter-faceid_sd15.bin", seed=3),
                      root / "models" / "ip-adapter" / "ip-adapter-faceid_sd15.safetensors")
    plusv2 = _convert(tiny_release.build_faceid_release(base, rel / "ip-adapter-faceid-plusv2_sd15.bin",
                                                        plus_clip_dim=32, seed=4),
                      root / "models" / "ip-adapter" / "ip-adapter-faceid-plusv2_sd15.safetensors")
    plus = _convert(rel / "ip-adapter-faceid-plusv2_sd15.bin", root / "models" / "ip-adapter" / "plus.safetensors")
    # The same file but named -plus: its metadata keeps the original name, so rename the source first.
    (rel / "ip-adapter-faceid-plus_sd15.bin").write_bytes((rel / "ip-adapter-faceid-plusv2_sd15.bin").read_bytes())
    plus = _convert(rel / "ip-adapter-faceid-plus_sd15.bin", plus)
    encoder = tiny_release.build_clip_image_encoder(root / "models" / "ip-adapter" / "image_encoder")
    kohya = tiny_release.build_kohya_lora(base, root / "styles" / "film_kohya.safetensors", rank=4, alpha=2.0)
    manifest = Manifest(root / "models", root / "models" / "models.toml")
    make_arcface(manifest.path("arcface-buffalo"))
    make_arcface(manifest.path("arcface-antelopev2"), seed=1)
    return {**paths, "root": root, "faceid": faceid, "plusv2": plusv2, "plus": plus, "encoder": encoder,
            "kohya": kohya, "models": root / "models"}


@pytest.fixture(scope="module")
def buffalo(sd):
    return FaceAnalysis(FaceConfig(detector="dlib-hog", embedder="arcface", models_dir=str(sd["models"])),
                        manifest=Manifest(sd["models"], sd["models"] / "models.toml"))


@pytest.fixture(scope="module")
def antelope(sd):
    return FaceAnalysis(FaceConfig(detector="dlib-hog", embedder="arcface-antelopev2", models_dir=str(sd["models"])),
                        manifest=Manifest(sd["models"], sd["models"] / "models.toml"))


@pytest.fixture(scope="module")
def scene(astronaut, grace_hopper, face_analysis):
    tpl, tface = small_template(astronaut, face_analysis)
    return tpl, tface, grace_hopper, face_analysis.analyze(grace_hopper)[0]


def _base(paths):
    from diffusers import ControlNetModel, StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(paths["base"], safety_checker=None, requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    return base, {"canny": ControlNetModel.from_pretrained(paths["controlnets"]["canny"])}


def _job(scene, **kw):
    tpl, tface, _, _ = scene
    return InpaintJob(tpl, tface, prompt="portrait", seed=2, pass1=replace(PASS1, steps=4, controlnets={"canny": 0.5}),
                      pass2=replace(PASS2, steps=4, controlnets={"canny": 0.5}), **kw)


def _paint(models, scene, identity, **kw):
    _, _, ref, rface = scene
    return TemplateInpaint(models, crop_size=CROP)(_job(scene, **kw), identity, ref, rface, keep_stages=True)[0]


def _diff(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- IP-Adapter FaceID: its own LoRA --------------------------------------------------------------------
def _without_lora(src: Path, dst: Path) -> Path:
    """The same adapter with its LoRA removed (every other tensor identical)."""
    from safetensors.torch import load_file, save_file

    save_file({k: v for k, v in load_file(src).items() if "_lora." not in k}, str(dst))
    return dst


@pytest.mark.slow
def test_faceid_lora_stays_active_with_identity_and_style_loras_and_goes_with_the_adapter(sd, scene, buffalo,
                                                                                          grace_hopper, tmp_path):
    face = embed_identity([grace_hopper], face_analysis=buffalo)
    assert face.engine == "arcface-buffalo"
    bare = _without_lora(sd["faceid"], tmp_path / "ip-adapter-faceid-nolora_sd15.safetensors")
    style = {"style_lora": sd["kohya"], "style_weight": 0.8}
    ident = Sitter(lora=sd["lora"], face=face, faceid_scale=1.0)
    base, nets = _base(sd)
    with_lora = InpaintModels(base, nets, faceid_adapter=sd["faceid"])
    runs = {"full": _paint(with_lora, scene, ident, **style)}
    pipe = with_lora.pipeline(("canny",))
    assert set(pipe.get_active_adapters()) == {"identity", "style", "faceid_0"}
    # The LoRA shapes the face: the same adapter without it paints another one (the identity and style LoRAs on).
    base2, nets2 = _base(sd)
    runs["no-faceid-lora"] = _paint(InpaintModels(base2, nets2, faceid_adapter=bare), scene, ident, **style)
    assert _diff(runs["full"].stages["pass1"], runs["no-faceid-lora"].stages["pass1"]) > 1.0
    # A change of LoRAs (no style now) keeps it on: again different from the LoRA-less adapter's.
    changed = _paint(with_lora, scene, ident)
    changed_bare = _paint(InpaintModels(base2, nets2, faceid_adapter=bare), scene, ident)
    assert set(pipe.get_active_adapters()) == {"identity", "faceid_0"}
    assert _diff(changed.stages["pass1"], changed_bare.stages["pass1"]) > 1.0
    # A LoRA-only identity afterwards: the adapter and its LoRA are gone, the image is a fresh base's.
    after = _paint(with_lora, scene, Sitter(lora=sd["lora"]))
    assert "faceid_0" not in (getattr(pipe.unet, "peft_config", None) or {})
    base3, nets3 = _base(sd)
    fresh = _paint(InpaintModels(base3, nets3), scene, Sitter(lora=sd["lora"]))
    np.testing.assert_array_equal(after.image, fresh.image)


def test_an_unconverted_release_file_is_refused_with_the_command_to_convert_it(sd):
    base, nets = _base(sd)
    with pytest.raises(ConfigError, match="portrait models convert"):
        InpaintModels(base, nets, faceid_adapter=sd["root"] / "released" / "ip-adapter-faceid_sd15.bin")


def test_a_dlib_identity_is_refused_by_the_real_faceid_naming_both_models(sd, scene, face_analysis, grace_hopper):
    dlib = embed_identity([grace_hopper], face_analysis=face_analysis)
    base, nets = _base(sd)
    models = InpaintModels(base, nets, faceid_adapter=sd["faceid"])
    with pytest.raises(ConfigError, match=r"128-d"):
        _paint(models, scene, Sitter(face=dlib))
    from portrait.models.adapters import check_embedder

    with pytest.raises(ConfigError, match=r"'arcface-buffalo'.*'arcface-antelopev2'"):
        check_embedder(sd["faceid"], "arcface-antelopev2")


# -- FaceID-Plus / PlusV2 -------------------------------------------------------------------------------
def test_faceid_plusv2_runs_from_the_manifest_with_the_face_crop_and_shortcut(sd, scene, buffalo, grace_hopper,
                                                                              astronaut, face_analysis, tmp_path):
    face = embed_identity([grace_hopper], face_analysis=buffalo)
    cfg = sd["models"] / "models-plus.toml"
    cfg.write_text(f'[models.sd15]\npath = "{sd["base"]}"\n[models.controlnet-canny]\n'
                   f'path = "{sd["controlnets"]["canny"]}"\n')
    m = Manifest(sd["models"], cfg)
    loading.clear_cache()
    v2 = InpaintModels.load("sd15", ["canny"], manifest=m, device="cpu", faceid_adapter=sd["plusv2"])
    assert v2.faceid_kind == "faceid-plus" and v2.faceid_shortcut and v2.image_encoder is not None
    out = _paint(v2, scene, Sitter(face=face, faceid_scale=1.0))
    # The face crop matters: the same embedding with another reference photo paints another face.
    tpl, tface, _, _ = scene
    other_ref = face_analysis.analyze(astronaut)[0]
    other = TemplateInpaint(v2, crop_size=CROP)(_job(scene), Sitter(face=face, faceid_scale=1.0), astronaut,
                                                other_ref, keep_stages=True)[0]
    assert _diff(out.stages["pass1"], other.stages["pass1"]) > 0.5
    # Plus (no shortcut) is the same file read another way: another face.
    loading.clear_cache()
    v1 = InpaintModels.load("sd15", ["canny"], manifest=m, device="cpu", faceid_adapter=sd["plus"])
    assert v1.faceid_kind == "faceid-plus" and not v1.faceid_shortcut
    assert _diff(out.stages["pass1"], _paint(v1, scene, Sitter(face=face, faceid_scale=1.0)).stages["pass1"]) > 0.5
    loading.clear_cache()


def test_faceid_plus_without_its_image_encoder_names_the_model(sd, tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    (empty / "models.toml").write_text(f'[models.sd15]\npath = "{sd["base"]}"\n')
    with pytest.raises(ModelMissingError, match="clip-vision-vit-h"):
        InpaintModels.load("sd15", [], manifest=Manifest(empty, empty / "models.toml"), device="cpu",
                           faceid_adapter=sd["plusv2"])
    loading.clear_cache()


# -- A1111 single-file ControlNet ---------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["control_model.", ""], ids=["control_model-keys", "bare-keys"])
def test_an_a1111_controlnet_pth_loads_through_the_manifest_as_its_diffusers_original(sd, tmp_path, prefix):
    from diffusers import ControlNetModel

    folder = sd["controlnets"]["color"]
    pth = tiny_release.save_a1111_controlnet(folder, tmp_path / "models" / "control_sd15_random_color.pth", prefix)
    (tmp_path / "models" / "models.toml").write_text(
        f'[models.controlnet-color]\npath = "control_sd15_random_color.pth"\nconfig = "{folder}"\n')
    m = Manifest(tmp_path / "models", tmp_path / "models" / "models.toml")
    assert loading.detect_architecture(pth) == "sd15"
    net = loading.load_controlnet("controlnet-color", manifest=m, device="cpu")
    want = ControlNetModel.from_pretrained(folder).state_dict()
    got = net.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    loading.clear_cache()


# -- kohya LoRA as a style LoRA -----------------------------------------------------------------------------
def test_a_kohya_lora_loads_as_a_style_lora_with_its_alpha(sd):
    """The UNet and text encoder with the kohya file loaded at weight w compute exactly W + w * alpha / rank *
    up @ down on every layer sd-scripts names."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd["base"], safety_checker=None, requires_safety_checker=False)
    ref = StableDiffusionPipeline.from_pretrained(sd["base"], safety_checker=None, requires_safety_checker=False)
    weight, rank, alpha = 0.7, 4, 2.0
    loading.set_identity_lora(pipe, None, style_lora=sd["kohya"], style_weight=weight)
    assert "style" in pipe.get_active_adapters()
    factors = tiny_release.kohya_factors(sd["base"], rank=rank, alpha=alpha)
    assert any(kind == "te" for *_, kind in factors.values())
    with torch.no_grad():
        for down, up, a, path, kind in factors.values():
            owner = ref.unet if kind == "unet" else ref.text_encoder
            if kind == "te" and not hasattr(owner, "text_model"):  # transformers 5 dropped the text_model level
                path = path.removeprefix("text_model.")
            module = owner.get_submodule(path)
            module.weight += weight * a / rank * (up @ down)
        g = torch.Generator().manual_seed(0)
        sample = torch.randn(1, 4, 8, 8, generator=g)
        ids = torch.tensor([[0, 5, 9, 200, 513] + [513] * 72])
        te_got, te_want = pipe.text_encoder(ids)[0], ref.text_encoder(ids)[0]
        torch.testing.assert_close(te_got, te_want, rtol=1e-4, atol=1e-4)
        got = pipe.unet(sample, 10, encoder_hidden_states=te_want).sample
        want = ref.unet(sample, 10, encoder_hidden_states=te_want).sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - StableDiffusionPipeline.from_pretrained(sd["base"], safety_checker=None,
                                                          requires_safety_checker=False).unet(
        sample, 10, encoder_hidden_states=te_want).sample).abs().max() > 1e-3


# -- InstantID: the released layout, the raw embedding and its recogniser ------------------------------------
@pytest.fixture(scope="module")
def xl(tmp_path_factory, sd):
    root = tmp_path_factory.mktemp("instantx")
    sdxl = tiny.build_tiny_sdxl(root / "sdxl")
    canny = tiny.build_tiny_controlnet(sdxl, root / "controlnet" / "sdxl-canny", seed=5)
    released = tiny_release.build_instantid_release(sdxl, root / "InstantX" / "checkpoints", seed=7)
    adapter = _convert(released["instantid-adapter"], root / "instantid" / "ip-adapter.safetensors")
    (root / "models.toml").write_text(
        f'[models.sdxl]\npath = "{sdxl}"\n[models.controlnet-canny-sdxl]\npath = "{canny}"\n'
        f'[models.instantid-adapter]\npath = "{adapter}"\n'
        f'[models.instantid-controlnet]\npath = "{released["instantid-controlnet"]}"\n')
    m = Manifest(root, root / "models.toml")
    models = InpaintModels.load("sdxl", ["canny"], manifest=m, instantid=True, device="cpu")
    return {"models": models, "root": root}


def _capture_image_embeds(unet):
    seen = []

    def grab(module, args, kwargs):
        seen.append([t.detach().clone() for t in (args[0] if args else kwargs["image_embeds"])])

    return seen, unet.register_forward_pre_hook(lambda m, a, k: grab(m, a, k), with_kwargs=True)


def test_instantid_receives_the_raw_antelopev2_embedding_at_its_recorded_norm(xl, scene, antelope, grace_hopper):
    flipped = np.ascontiguousarray(grace_hopper[:, ::-1])
    face = embed_identity([grace_hopper, flipped], face_analysis=antelope)
    assert face.engine == "arcface-antelopev2"
    # The recorded norm is the raw vectors' mean length, measured here separately through the recogniser.
    raw = [antelope.analyze(img)[0].embedding for img in (grace_hopper, flipped)]
    assert face.norm == pytest.approx(float(np.mean([np.linalg.norm(v) for v in raw])), rel=1e-5)
    assert abs(face.norm - 1.0) > 0.5
    models = xl["models"]
    pipe = models.pipeline(("canny", "identitynet"))
    from portrait.generate.pipelines import load_faceid_adapter

    load_faceid_adapter(pipe, models.instantid_adapter, face.dim, 0.8, face.engine)  # its projection exists now
    seen, hook = _capture_image_embeds(pipe.unet.encoder_hid_proj)
    try:
        tpl, tface, ref, rface = scene
        TemplateInpaint(models, crop_size=CROP)(_job(scene), Sitter(face=face, engine="instantid"), ref, rface)
    finally:
        hook.remove()
    assert seen
    fed = seen[0][0].reshape(2, -1).numpy()  # unconditional (zeros) first, then the face
    assert not fed[0].any()
    np.testing.assert_allclose(fed[1], face.embedding * face.norm, rtol=1e-5)
    assert np.linalg.norm(fed[1]) == pytest.approx(face.norm, rel=1e-5)


def test_a_buffalo_embedding_is_refused_by_instantid_naming_both(xl, scene, buffalo, grace_hopper):
    face = embed_identity([grace_hopper], face_analysis=buffalo)
    tpl, tface, ref, rface = scene
    with pytest.raises(ConfigError, match=r"InstantID.*'arcface-antelopev2'.*'arcface-buffalo'"):
        TemplateInpaint(xl["models"], crop_size=CROP)(_job(scene), Sitter(face=face, engine="instantid"), ref, rface)


def test_an_old_unit_length_identity_is_refused_by_instantid(xl, scene, antelope, grace_hopper):
    """Identity files written when ArcFace vectors were normalised carry norm 1: InstantID would get a face 20x
    too weak, so it asks for a new embedding instead."""
    from dataclasses import replace as dc_replace

    face = dc_replace(embed_identity([grace_hopper], face_analysis=antelope), norm=1.0)
    tpl, tface, ref, rface = scene
    with pytest.raises(ConfigError, match="portrait embed --embedder arcface-antelopev2"):
        TemplateInpaint(xl["models"], crop_size=CROP)(_job(scene), Sitter(face=face, engine="instantid"), ref, rface)


def test_faceid_plusv2_is_chosen_where_its_file_and_the_image_encoder_are_present(sd, tmp_path):
    """run, generate and create load FaceID-PlusV2 (id tokens plus the face's CLIP crop) when both files are
    there; without either, plain FaceID; SDXL never takes the SD 1.5 Plus file."""
    import shutil

    from portrait.generate.pipelines import FACEID_PLUS_NAME, faceid_adapter_name

    full = Manifest(sd["models"], sd["models"] / "models.toml")
    assert faceid_adapter_name(full, "sd15") == FACEID_PLUS_NAME
    assert faceid_adapter_name(full, "sdxl") == "ip-adapter-faceid"
    partial = tmp_path / "models"
    shutil.copytree(sd["models"], partial)
    shutil.rmtree(partial / "ip-adapter" / "image_encoder")
    assert faceid_adapter_name(Manifest(partial, partial / "models.toml"), "sd15") == "ip-adapter-faceid"
