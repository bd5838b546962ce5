"""Portraits without a template: style packs, text-to-image with the identity (LoRA, FaceID, InstantID),
the style's ControlNet pose, the face-detail pass, N candidates ranked, and the fast exact failure when
the weights are missing. Tiny random models in the released layouts stand in for the real weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from portrait.errors import StyleError
from portrait.generate.template_inpaint import Sitter
from portrait.generate.text_to_image import (SceneRender, SceneRequest, SceneSettings, control_drawing, head_face,
                                             scene_size)
from portrait.styles import add_style, bundled_dir, list_styles, load_style, parse_style

STYLES = {"formal-headshot", "business", "vintage-film", "winter-outdoor", "fantasy-armour", "astronaut",
          "watercolour", "black-and-white"}
STEPS = 3


def _cli(args):
    from click.testing import CliRunner

    from portrait.cli import cli

    return CliRunner().invoke(cli, args)


# -- style packs ------------------------------------------------------------------------------------

def test_the_eight_bundled_styles_are_valid_free_packs_for_both_bases():
    found = {s.name: s for s in list_styles([bundled_dir()])}
    assert STYLES <= set(found)
    for s in found.values():
        assert "{subject}" in s.prompt and s.prompt_for("ohwx person").count("ohwx person") == 1
        assert s.licence.startswith("CC0") and s.source and s.tags
        assert s.preview is not None and "tiny random models" in s.source  # previews say what made them
        for arch in ("sd15", "sdxl"):
            w, h = s.size(arch)
            assert w % 64 == 0 and h % 64 == 0
            side = {"sd15": 512, "sdxl": 1024}[arch]
            assert 0.85 < w * h / side ** 2 < 1.15  # the base's working area
            assert (w > h) == (s.aspect[0] > s.aspect[1]) or w == h
        if s.pose is not None:
            assert s.pose.control == "openpose" and s.pose.head is not None
    assert any(s.pose for s in found.values()) and not all(s.pose for s in found.values())


def _pack(root: Path, body: str, name: str = "mine", files: dict | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "style.toml").write_text(body)
    for fname, data in (files or {}).items():
        (d / fname).write_bytes(data)
    return d


@pytest.mark.parametrize("body, key, words", [
    ('prompt = "a portrait"\n', "prompt", "{subject}"),
    ('prompt = "a portrait of {subject}"\ncolour = 1\n', "colour", "unknown"),
    ('prompt = "a portrait of {subject}"\naspect = "9:1"\n', "aspect", "at most 3:1"),
    ('prompt = "a portrait of {subject}"\n[sd15]\nsampler = "magic"\n', "sd15.sampler", "dpm++2m"),
    ('prompt = "a portrait of {subject}"\n[sdxl]\nsteps = 0\n', "sdxl.steps", "[1, 500]"),
    ('prompt = "a portrait of {subject}"\n[pose]\ncontrol = "canny"\nhead = [0.5, 0.4, 0.3]\n', "pose.image", "canny"),
    ('prompt = "a portrait of {subject}"\n[pose]\nimage = "../etc/passwd"\n', "pose.image", "inside the pack"),
    ('prompt = "a portrait of {subject}"\n[pose]\nimage = "gone.png"\n', "pose.image", "does not exist"),
    ('prompt = "a portrait of {subject}"\n[pose]\nhead = [0.5, 1.5, 0.3]\n', "pose.head", "fractions"),
    ('prompt = "a portrait of {subject}"\n[style]\nweight = 3.0\n', "style.weight", "[0.0, 2.0]"),
    ('prompt = "a portrait of {subject}"\ntags = ["Bad Tag"]\n', "tags", "lower-case"),
])
def test_a_bad_style_toml_names_the_file_and_the_key(tmp_path, body, key, words):
    d = _pack(tmp_path, body)
    with pytest.raises(StyleError) as info:
        parse_style(d)
    msg = str(info.value)
    assert str(d / "style.toml") in msg and f"'{key}'" in msg and words in msg
    assert info.value.code == "bad_style"


def test_styles_cli_adds_a_pack_with_its_pose_image_lists_and_shows_it(tmp_path, monkeypatch):
    import cv2

    monkeypatch.setenv("PORTRAIT_STYLES_DIR", str(tmp_path / "mine"))
    edges = np.zeros((96, 64, 3), np.uint8)
    cv2.circle(edges, (32, 40), 20, (255, 255, 255), 1)
    ok, png = cv2.imencode(".png", edges)
    src = _pack(tmp_path / "src", 'name = "arch-window"\nprompt = "{subject} by an arched window"\naspect = "2:3"\n'
                'licence = "CC0-1.0"\nsource = "drawn by the test"\n[pose]\ncontrol = "canny"\nimage = "edges.png"\n'
                'scale = 0.5\n', "arch", {"edges.png": png.tobytes()})
    res = _cli(["styles", "add", str(src), "--json"])
    assert res.exit_code == 0, res.output
    added = json.loads(res.output)
    assert added["name"] == "arch-window" and added["pose"]["control"] == "canny"
    assert Path(added["pose"]["image"]).is_file() and Path(added["directory"]).parent == tmp_path / "mine"
    listed = json.loads(_cli(["styles", "list", "--json"]).output)
    names = {s["name"] for s in listed["styles"]}
    assert "arch-window" in names and STYLES <= names
    shown = json.loads(_cli(["styles", "show", "arch-window", "--json"]).output)
    assert shown["aspect"] == "2:3" and shown["bases"]["sd15"]["size"][0] < shown["bases"]["sd15"]["size"][1]
    # A bundled name is refused without --force; a missing style names the search path and what is there.
    res = _cli(["styles", "add", str(src), "--name", "vintage-film"])
    assert res.exit_code == 2 and "hide the bundled style" in res.output
    res = _cli(["styles", "show", "no-such-style"])
    assert res.exit_code == 2 and "not found" in res.output and "vintage-film" in res.output
    assert add_style(src, "vintage-film", force=True).directory.parent == tmp_path / "mine"
    assert load_style("vintage-film").directory.parent == tmp_path / "mine"  # the user's pack wins


def test_scene_size_keeps_the_area_and_the_aspect():
    assert scene_size(512, (1, 1)) == (512, 512)
    assert scene_size(1024, (3, 4)) == (896, 1152)
    w, h = scene_size(512, (2, 3))
    assert w < h and abs(w * h - 512 * 512) / 512 ** 2 < 0.15


# -- the renderer on tiny SD 1.5 --------------------------------------------------------------------

from test_faceid import hopper_identity, models, tiny  # noqa: E402,F401  (the tiny SD 1.5 set's fixtures)


def _request(**kw) -> SceneRequest:
    kw.setdefault("settings", SceneSettings(steps=STEPS, size=64))
    return SceneRequest("a photo of ohwx person, winter coat", 64, 96, **kw)


def test_one_call_renders_the_n_candidates_and_the_same_seed_gives_the_same_picture(models, tiny):
    unet = models.components["unet"]
    batches = []
    handle = unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        images = SceneRender(models)(_request(seeds=(1, 2, 3)), Sitter(lora=tiny["lora"]))
    finally:
        handle.remove()
    assert len(images) == 3 and all(i.shape == (96, 64, 3) and i.dtype == np.uint8 for i in images)
    assert batches == [6] * STEPS  # one UNet call per step for all three (x2: classifier-free guidance)
    assert not np.array_equal(images[0], images[1])
    # Seed 2 alone is seed 2's picture in the batch, up to float noise: a CPU's matrix kernels may sum in
    # another order for another batch size (AMD EPYC here), a level or two in a few pixels.
    again = SceneRender(models)(_request(seeds=(2,)), Sitter(lora=tiny["lora"]))
    diff = np.abs(again[0].astype(int) - images[1].astype(int))
    print("batched vs alone: max", diff.max(), "mean", diff.mean())
    assert diff.max() <= 4 and diff.mean() < 0.5
    assert np.abs(again[0].astype(int) - images[0].astype(int)).mean() > 5 * max(diff.mean(), 0.1)  # not seed 1's
    # The same request twice is the same picture, exactly.
    twice = SceneRender(models)(_request(seeds=(2,)), Sitter(lora=tiny["lora"]))
    assert np.array_equal(twice[0], again[0])


def test_the_identity_lora_reaches_the_unet(models, tiny):
    on = SceneRender(models)(_request(seeds=(4,)), Sitter(lora=tiny["lora"], lora_weight=1.0))[0]
    off = SceneRender(models)(_request(seeds=(4,)), Sitter(lora=tiny["lora"], lora_weight=0.0))[0]
    assert np.abs(on.astype(int) - off.astype(int)).mean() > 0.5


def test_the_face_embedding_reaches_the_unet_as_the_adapters_image_embeds(models, hopper_identity):
    unet = models.components["unet"]
    seen = []

    def grab(module, args, kwargs):
        seen.append(kwargs["added_cond_kwargs"]["image_embeds"][0].detach().clone())

    handle = unet.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        SceneRender(models)(_request(seeds=(1, 2)), Sitter(face=hopper_identity, faceid_scale=1.0))
    finally:
        handle.remove()
    assert len(seen) == STEPS
    embeds = seen[0].numpy().reshape(4, -1)  # unconditional half first, then one row per candidate
    assert np.allclose(embeds[:2], 0) and np.allclose(embeds[2:], hopper_identity.vector(True), atol=1e-5)
    on = SceneRender(models)(_request(seeds=(3,)), Sitter(face=hopper_identity, faceid_scale=1.0))[0]
    off = SceneRender(models)(_request(seeds=(3,)), Sitter(face=hopper_identity, faceid_scale=0.0))[0]
    assert np.abs(on.astype(int) - off.astype(int)).mean() > 0.5


def test_the_styles_controlnet_reads_the_pose_drawing(models, tiny):
    import torch

    drawing = control_drawing(64, 96, head=(0.5, 0.4, 0.3))
    assert drawing.shape == (96, 64, 3) and drawing.any()
    net = models.controlnets["openpose"]
    conds = []
    handle = net.register_forward_pre_hook(
        lambda m, args, kwargs: conds.append(kwargs["controlnet_cond"].detach().clone()), with_kwargs=True)
    try:
        req = _request(seeds=(1, 2), control="openpose", control_image=drawing, control_scale=1.0)
        posed = SceneRender(models)(req, Sitter(lora=tiny["lora"]))
    finally:
        handle.remove()
    assert len(conds) == STEPS
    want = torch.from_numpy(drawing).permute(2, 0, 1).float() / 255
    assert conds[0].shape[0] == 4 and all(torch.allclose(c, want, atol=1e-6) for c in conds[0])
    plain = SceneRender(models)(_request(seeds=(1,)), Sitter(lora=tiny["lora"]))[0]
    assert not np.array_equal(plain, posed[0])  # the pose changes the picture


def test_the_face_detail_pass_changes_only_pixels_inside_the_face_mask(models, tiny, grace_hopper, face_analysis):
    import cv2

    image = cv2.resize(grace_hopper, (128, 160), interpolation=cv2.INTER_AREA)
    face = face_analysis.analyze(grace_hopper)[0].scaled(128 / grace_hopper.shape[1])
    render = SceneRender(models, detail_size=64)
    out, mask = render.detail(image, face, Sitter(lora=tiny["lora"]), _request(detail_strength=0.6), seed=3)
    inside = mask > 0
    assert out.shape == image.shape and 0.02 < inside.mean() < 0.6
    assert np.array_equal(out[~inside], image[~inside])  # outside the mask: bit for bit the candidate
    assert np.abs(out.astype(int) - image.astype(int))[inside].mean() > 1.0
    x0, y0, x1, y1 = face.box  # the mask sits on the face
    ys, xs = np.nonzero(inside)
    assert x0 - 10 < xs.mean() < x1 + 10 and y0 - 10 < ys.mean() < y1 + 10
    same, none = render.detail(image, face, Sitter(lora=tiny["lora"]), _request(detail_strength=0.0), seed=3)
    assert np.array_equal(same, image) and not none.any()


def test_a_head_placement_is_a_frontal_face_where_the_style_says():
    f = head_face(200, 300, (0.5, 0.4, 0.3))
    assert np.allclose(f.center, (100, 120), atol=1) and abs(f.width - 60) < 1
    left_eye, right_eye = f.landmarks5[0], f.landmarks5[1]
    assert left_eye[0] < right_eye[0] and abs(left_eye[1] - right_eye[1]) < 1


# -- the job and the command ------------------------------------------------------------------------

def test_without_weights_create_fails_at_once_naming_every_missing_model(empty_models_dir, tmp_path, hopper_identity,
                                                                        grace_hopper):
    from PIL import Image

    ident = hopper_identity.save(tmp_path / "identity_embedding.safetensors")
    Image.fromarray(grace_hopper).save(tmp_path / "reference.png")
    res = _cli(["create", "--identity", str(ident), "--style", "formal-headshot", "--out", str(tmp_path / "out"),
                "--json"])
    assert res.exit_code == 2, res.output
    err = json.loads(res.output.strip().splitlines()[-1])
    assert err["error"] == "model_missing" and err["model"] == "sd15"
    for name in ("sd15", "ip-adapter-faceid", "controlnet-openpose"):
        assert f"'{name}'" in err["message"] and f"portrait models fetch {name}" in err["message"], name
    assert not (tmp_path / "out").exists()  # nothing written, no placeholder
    res = _cli(["create", "--identity", str(ident), "--style", "no-such-style", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "style 'no-such-style' not found" in res.output


@pytest.mark.slow
def test_create_end_to_end_on_the_tiny_set_ranks_n_candidates_per_style(tmp_path, tiny, grace_hopper, monkeypatch):
    from PIL import Image

    from portrait.models import loading, manifest as manifest_mod
    from portrait.models.tiny import build_tiny_set

    models_dir = tmp_path / "models"
    build_tiny_set(models_dir, sdxl=False)
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    manifest_mod._MANIFESTS.clear()
    Image.fromarray(grace_hopper).save(tmp_path / "hopper.png")
    try:
        res = _cli(["create", "--identity", str(tiny["lora"]), "--style", "formal-headshot", "--style", "vintage-film",
                    "--count", "3", "--seed", "7", "--size", "128", "--steps", str(STEPS), "--reference",
                    str(tmp_path / "hopper.png"), "--prompt", "red scarf", "--out", str(tmp_path / "out"), "--json"])
        bar = _cli(["create", "--identity", str(tiny["lora"]), "--style", "watercolour", "--count", "2", "--size", "64",
                    "--steps", "2", "--likeness-bar", "0.5", "--retries", "1", "--reference",
                    str(tmp_path / "hopper.png"), "--out", str(tmp_path / "bar"), "--json"])
    finally:
        manifest_mod._MANIFESTS.clear()
        loading.clear_cache()
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["identity_kind"] == "lora" and [s["style"] for s in info["styles"]] == ["formal-headshot", "vintage-film"]
    saved = json.loads((tmp_path / "out" / "create.json").read_text())
    assert saved["styles"] == info["styles"]
    for s in info["styles"]:
        assert "ohwx person" in s["prompt"] and s["prompt"].endswith("red scarf")
        outs = s["outputs"]
        assert [o["rank"] for o in outs] == [1, 2, 3] and sorted(o["seed"] for o in outs) == [7, 8, 9]
        dists = [o["distance"] for o in outs]
        known = [d for d in dists if d is not None]
        assert known == sorted(known) and dists[:len(known)] == known  # most alike first, no face last
        for o in outs:
            img = np.asarray(Image.open(o["path"]))
            assert img.shape == (128, 128, 3) and Path(o["path"]).name == f"{o['rank']:02d}.png"
            assert o["distance"] is not None or (o["reason"] == "no_face" and o["similarity"] is None)
    a, b = (np.asarray(Image.open(o["path"])) for o in info["styles"][0]["outputs"][:2])
    assert not np.array_equal(a, b)
    # The bar: no random-model picture holds a face, so every round runs: 2 candidates, then 2 new seeds.
    assert bar.exit_code == 0, bar.output
    outs = json.loads(bar.stdout)["styles"][0]["outputs"]
    assert sorted(o["seed"] for o in outs) == [0, 1, 2, 3] and sorted(o["round"] for o in outs) == [0, 0, 1, 1]
    assert not any(o["passed_bar"] for o in outs)


@pytest.mark.slow
def test_a_batch_csv_row_with_styles_makes_new_scenes_and_resumes(tmp_path, tmp_path_factory, tiny_models_dir,
                                                                    monkeypatch):
    from helpers_photos import small_photo_set

    from portrait.models import loading, manifest as manifest_mod

    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(tiny_models_dir))
    manifest_mod._MANIFESTS.clear()
    photos = small_photo_set(tmp_path_factory)
    csv = tmp_path / "customers.csv"
    csv.write_text(f"photos,templates,styles,name\n{photos},,watercolour,ada\n{photos},,no-such-style,bob\n"
                   f"{photos},studio-grey,watercolour,cy\n")
    args = ["batch", str(csv), "--out", str(tmp_path / "out"), "--count", "2", "--json"]
    try:
        res = _cli(args)
        again = _cli([*args, "--resume"])
    finally:
        manifest_mod._MANIFESTS.clear()
        loading.clear_cache()
    assert res.exit_code == 1, res.output  # one row done, two refused before anything ran
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["ada"]["status"] == "done" and rows["ada"]["outputs"] == 2
    assert rows["bob"]["status"] == "failed" and rows["bob"]["error"] == "bad_style"
    assert rows["cy"]["status"] == "failed" and "templates or styles, not both" in rows["cy"]["message"]
    made = json.loads((tmp_path / "out" / "ada" / "create.json").read_text())
    assert made["identity_kind"] == "faceid" and [s["style"] for s in made["styles"]] == ["watercolour"]
    assert (tmp_path / "out" / "ada" / "identity" / "identity_embedding.safetensors").is_file()
    assert json.loads(again.stdout)[0].get("resumed") is True  # the finished row is not run again


# -- InstantID on a tiny SDXL -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_xl_set(tmp_path_factory):
    """The whole tiny set with SDXL and InstantID (128-d, dlib-sized adapter) and a models.toml."""
    from portrait.models.tiny import build_tiny_set

    d = tmp_path_factory.mktemp("tiny-xl-set")
    build_tiny_set(d, sdxl=True)
    return d


@pytest.mark.slow
def test_instantid_creates_with_identitynet_reading_the_heads_keypoints_and_the_face_tokens(
        tiny_xl_set, hopper_identity, grace_hopper, tmp_path, monkeypatch):
    import torch
    from PIL import Image

    from portrait.generate import controls
    from portrait.generate.pipelines import InpaintModels
    from portrait.models import loading, manifest as manifest_mod

    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(tiny_xl_set))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    manifest_mod._MANIFESTS.clear()
    try:
        models = InpaintModels.load("sdxl", [], manifest=manifest_mod.get_manifest(), instantid=True, device="cpu")
        seen = []
        handle = models.identitynet.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append((kwargs["controlnet_cond"].detach().clone(),
                                                 kwargs["encoder_hidden_states"].detach().clone())), with_kwargs=True)
        req = SceneRequest("a portrait of a person", 128, 128, (1, 2), settings=SceneSettings(steps=2, size=128),
                           head=(0.5, 0.4, 0.3))
        try:
            images = SceneRender(models)(req, Sitter(face=hopper_identity, engine="instantid"))
        finally:
            handle.remove()
        assert len(images) == 2 and images[0].shape == (128, 128, 3)
        cond, text = seen[0]
        kps = controls.face_keypoints((128, 128), head_face(128, 128, (0.5, 0.4, 0.3)), style="kps")
        want = torch.from_numpy(kps).permute(2, 0, 1).float() / 255
        assert cond.shape[0] == 4 and all(torch.allclose(c, want, atol=1e-6) for c in cond)
        # IdentityNet attends to the projected face tokens (unconditional half from zeros), not to the prompt
        assert text.shape[0] == 4 and torch.allclose(text[2], text[3]) and not torch.allclose(text[0], text[2])

        # The command: auto picks InstantID on the SDXL base; the result says so.
        ident = hopper_identity.save(tmp_path / "identity_embedding.safetensors")
        Image.fromarray(grace_hopper).save(tmp_path / "reference.png")
        res = _cli(["create", "--identity", str(ident), "--style", "formal-headshot", "--base-model", "sdxl",
                    "--count", "1", "--size", "128", "--steps", "2", "--out", str(tmp_path / "out"), "--json"])
        assert res.exit_code == 0, res.output
        info = json.loads(res.stdout)
        assert info["engine"] == "instantid" and info["identity_kind"] == "instantid"
        assert Path(info["styles"][0]["outputs"][0]["path"]).is_file()
    finally:
        manifest_mod._MANIFESTS.clear()
        loading.clear_cache()
