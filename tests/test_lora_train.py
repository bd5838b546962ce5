"""Identity LoRA training on a tiny SD 1.5: loss falls, checkpoints are scored and chosen as training.json
says, the LoRA reloads in plain diffusers (both formats) and changes the output; merging; CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from portrait.cli import cli
from portrait.identity import lora_select
from portrait.identity.lora_train import LoraTraining, read_trainset, train_lora
from portrait.models import tiny

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return tiny.build_tiny_sd15(tmp_path_factory.mktemp("tiny-lora") / "sd15")


@pytest.fixture(scope="module")
def trainset(tmp_path_factory, astronaut) -> Path:
    """A preprocess-shaped output: four 128 px aligned crops of the astronaut + metadata.jsonl + report.json."""
    from portrait.faces import get_face_analysis
    from portrait.faces.align import align_face

    root = tmp_path_factory.mktemp("trainset")
    (root / "train").mkdir()
    face = get_face_analysis().analyze(astronaut)[0]
    rows = []
    for i, (frac, flip) in enumerate(((0.5, False), (0.55, False), (0.6, False), (0.5, True))):
        crop, _ = align_face(astronaut, face.landmarks5, size=128, face_fraction=frac)
        Image.fromarray(np.ascontiguousarray(crop[:, ::-1] if flip else crop)).save(root / "train" / f"{i:02d}.png")
        rows.append({"file_name": f"{i:02d}.png", "text": "a photo of ohwx woman"})
    (root / "train" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "report.json").write_text(json.dumps({"photos": [], "selected": [r["file_name"] for r in rows],
                                                  "reference": "00.png", "engines": {}}))
    return root


@pytest.fixture(scope="module")
def trained(tiny_base, trainset, tmp_path_factory):
    """30 steps, checkpoints every 10, a validator that prefers step 20 (so the choice is not 'the last')."""
    out = tmp_path_factory.mktemp("identity")
    seen = []

    def validate(pipe, step, path):
        seen.append((step, Path(path).name))
        return -abs(step - 20) / 10

    cfg = LoraTraining(trainset=trainset, base_model=str(tiny_base), out_dir=out, steps=30, rank=4, alpha=2,
                      lr=3e-3, resolution=128, validate_every=10, seed=0)
    result = train_lora(cfg, validate=validate)
    return result, seen


def _render(pipe, seed=0):
    return pipe("a photo of ohwx woman", height=64, width=64, num_inference_steps=3,
                generator=torch.Generator().manual_seed(seed), output_type="np").images[0]


@pytest.mark.slow
def test_training_writes_identity_files_and_its_loss_falls(trained):
    result, _ = trained
    rep = json.loads(result.report_path.read_text())
    assert result.lora_path.name == "identity.safetensors" and result.kohya_path.is_file()
    assert len(rep["loss"]) == 30 and rep["config"]["rank"] == 4 and rep["photos"] == 4
    # The fixed-probe denoising loss (same latents, noise and timesteps each time) falls checkpoint by checkpoint.
    probe = [rep["eval_loss_start"]] + [c["eval_loss"] for c in rep["checkpoints"]]
    assert all(b < a for a, b in zip(probe, probe[1:])), probe
    assert set(rep["timings"]) >= {"cache_s", "train_s", "validate_s", "total_s", "steps_per_s"}


def test_checkpoints_are_scored_and_chosen_as_training_json_says(trained):
    result, seen = trained
    rep = result.report
    assert seen == [(10, "step-000010.safetensors"), (20, "step-000020.safetensors"), (30, "step-000030.safetensors")]
    assert [c["step"] for c in rep["checkpoints"]] == [10, 20, 30]
    assert [c["score"] for c in rep["checkpoints"]] == [-1.0, 0.0, -1.0]
    assert rep["chosen"] == [20] and rep["merged"] is False
    # The identity is the chosen checkpoint, byte for byte in its tensors.
    from safetensors.torch import load_file

    chosen = load_file(str(result.lora_path.parent / rep["checkpoints"][1]["file"]))
    final = load_file(str(result.lora_path))
    assert chosen.keys() == final.keys() and all(torch.equal(chosen[k], final[k]) for k in final)


@pytest.mark.slow
def test_saved_lora_reloads_in_plain_diffusers_and_changes_output(trained, tiny_base):
    from diffusers import StableDiffusionPipeline

    result, _ = trained
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_base), safety_checker=None, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    plain = _render(pipe)
    pipe.load_lora_weights(str(result.lora_path.parent), weight_name=result.lora_path.name, adapter_name="d")
    # EasyPhoto's target set loads whole: the attention projections and the transformer blocks' proj_in /
    # proj_out and feed-forward layers (an older key layout loaded the attention alone)
    loaded = {n.rsplit(".", 1)[0] if n.endswith(".0") and "to_out" in n else n
              for n, m in pipe.unet.named_modules() if hasattr(m, "lora_A") and "d" in m.lora_A}
    for part in ("attn1.to_q", "attn2.to_k", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"):
        assert any(n.endswith(part) for n in loaded), part
    with_diffusers = _render(pipe)
    pipe.delete_adapters("d")
    np.testing.assert_array_equal(_render(pipe), plain)
    pipe.load_lora_weights(str(result.kohya_path), adapter_name="k")  # kohya layout (A1111 / ComfyUI)
    with_kohya = _render(pipe)
    assert np.abs(with_diffusers - plain).max() > 1e-3
    np.testing.assert_allclose(with_kohya, with_diffusers, atol=1e-4)


def _prompt_embedding(pipe):
    ids = pipe.tokenizer(["a photo of ohwx woman"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


@pytest.mark.slow
def test_the_text_encoder_lora_is_trained_saved_exported_to_kohya_and_reloaded(trained, tiny_base):
    """EasyPhoto's recipe trains the text encoder too (CLIPAttention and CLIPMLP, at half the UNet's lr): on by
    default for SD 1.5; its factors are in both files (text_encoder.* and kohya's lora_te_*), plain diffusers
    loads either into the text encoder with the same result, and they alone change the prompt's embedding."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from portrait.models import loading

    result, _ = trained
    assert result.report["text_encoder"] == {"trained": True, "lr": 3e-3 / 2,
                                             "targets": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]}
    te_keys = [k for k in load_file(str(result.lora_path)) if k.startswith("text_encoder.")]
    for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"):
        assert any(f".{part}.lora_A" in k for k in te_keys), part
    kohya = load_file(str(result.kohya_path))
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down") for k in kohya)
    assert not any(k.startswith("lora_te1_") for k in kohya)  # SD 1.5's one text encoder: kohya's lora_te_

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_base), safety_checker=None, local_files_only=True)
    plain = _prompt_embedding(pipe)
    pipe.load_lora_weights(str(result.lora_path.parent), weight_name=result.lora_path.name, adapter_name="d")
    with_diffusers = _prompt_embedding(pipe)
    assert (with_diffusers - plain).abs().max() > 1e-4  # the trained text-encoder factors are not zero
    pipe.delete_adapters("d")
    torch.testing.assert_close(_prompt_embedding(pipe), plain, atol=0, rtol=0)
    pipe.load_lora_weights(str(result.kohya_path), adapter_name="k")
    torch.testing.assert_close(_prompt_embedding(pipe), with_diffusers, atol=1e-5, rtol=1e-4)
    # the cached base the training used has its text encoder back as it was
    base = loading.load_base(str(tiny_base))
    assert not (getattr(base.text_encoder, "peft_config", None) or {})
    torch.testing.assert_close(_prompt_embedding(base), plain, atol=0, rtol=0)
    # ...and the product's identity loading (run, generate) puts the text encoder's part on and takes it off
    loading.set_identity_lora(base, result.lora_path)
    torch.testing.assert_close(_prompt_embedding(base), with_diffusers, atol=1e-5, rtol=1e-4)
    loading.set_identity_lora(base, None)
    torch.testing.assert_close(_prompt_embedding(base), plain, atol=0, rtol=0)


def test_without_the_text_encoder_only_the_unet_is_trained(tiny_base, trainset, tmp_path):
    from safetensors.torch import load_file

    cfg = LoraTraining(trainset=trainset, base_model=str(tiny_base), out_dir=tmp_path, steps=2, rank=4, alpha=4,
                      resolution=64, validate_every=2, train_text_encoder=False)
    result = train_lora(cfg, validate=None)
    keys = load_file(str(result.lora_path))
    assert keys and all(k.startswith("unet.") for k in keys)
    assert result.report["text_encoder"] == {"trained": False}
    assert not any(k.startswith("lora_te") for k in load_file(str(result.kohya_path)))


def test_a_text_encoder_lora_on_sdxl_is_refused_before_training(tmp_path, trainset):
    from portrait.errors import ConfigError

    xl = tiny.build_tiny_sdxl(tmp_path / "sdxl")
    cfg = LoraTraining(trainset=trainset, base_model=str(xl), out_dir=tmp_path / "out", steps=2, rank=4,
                      resolution=64, train_text_encoder=True)
    with pytest.raises(ConfigError, match="SD 1.5 only"):
        train_lora(cfg, validate=None)
    assert not (tmp_path / "out" / "checkpoints").exists() or not any((tmp_path / "out" / "checkpoints").iterdir())


def test_merge_averages_full_deltas_not_factors():
    gen = torch.Generator().manual_seed(0)
    states = [{"l.lora.down.weight": torch.randn(4, 16, generator=gen), "l.lora.up.weight": torch.randn(8, 4, generator=gen)}
              for _ in range(2)]
    merged = lora_select.merge_loras(states, rank=8)
    mean_delta = sum(s["l.lora.up.weight"] @ s["l.lora.down.weight"] for s in states) / 2
    got = merged["l.lora.up.weight"] @ merged["l.lora.down.weight"]
    torch.testing.assert_close(got, mean_delta, atol=1e-4, rtol=1e-4)  # rank 8 holds the rank-8 mean exactly
    naive = (sum(s["l.lora.up.weight"] for s in states) / 2) @ (sum(s["l.lora.down.weight"] for s in states) / 2)
    assert not torch.allclose(naive, mean_delta, atol=1e-2)
    assert merged["l.lora.down.weight"].shape == (8, 16)
    assert lora_select.choose_checkpoints({10: 0.1, 20: 0.3, 30: 0.3, 40: float("-inf")}, 2) == [30, 20]


def test_merge_top_k_writes_the_merged_delta(tiny_base, trainset, tmp_path):
    from safetensors.torch import load_file

    cfg = LoraTraining(trainset=trainset, base_model=str(tiny_base), out_dir=tmp_path, steps=4, rank=4, alpha=4,
                      lr=1e-3, resolution=64, validate_every=2, merge_top_k=2, flip=False)
    result = train_lora(cfg, validate=lambda pipe, step, path: float(step))
    assert result.report["chosen"] == [4, 2] and result.report["merged"] is True
    ckpts = [load_file(str(tmp_path / "checkpoints" / f"step-{s:06d}.safetensors")) for s in (2, 4)]
    want = {k: sum(lora_select.lora_delta(c)[k] for c in ckpts) / 2 for k in lora_select.lora_delta(ckpts[0])}
    got = lora_select.lora_delta(load_file(str(result.lora_path)))
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-3)


@pytest.mark.slow
def test_default_validator_scores_no_face_as_worst_and_keeps_the_last(tiny_base, trainset, tmp_path):
    # Tiny random models render noise: no face is found, every score is the worst, the latest checkpoint wins.
    cfg = LoraTraining(trainset=trainset, base_model=str(tiny_base), out_dir=tmp_path, steps=4, rank=2, alpha=2,
                      resolution=64, validate_every=2, validation_resolution=64, validation_steps=2)
    rep = train_lora(cfg).report
    assert [c["face_found"] for c in rep["checkpoints"]] == [False, False]
    assert rep["chosen"] == [4]


def test_bad_trainset_is_a_clear_error(tmp_path):
    from portrait.errors import ConfigError

    with pytest.raises(ConfigError, match="metadata.jsonl"):
        read_trainset(tmp_path)


def test_cli_missing_base_model_exits_2_naming_it(trainset, tmp_path, empty_models_dir):
    res = CliRunner().invoke(cli, ["train", str(trainset), "--base-model", "sd15", "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 2
    err = json.loads(res.output)
    assert err["error"] == "model_missing" and err["model"] == "sd15"
    assert str(empty_models_dir / "diffusion" / "sd15") in err["message"]


def test_cli_trains_and_reports(trainset, tiny_base, tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["train", str(trainset), "--base-model", str(tiny_base), "--out", str(out),
                                   "--steps", "2", "--rank", "2", "--resolution", "64", "--validate-every", "1",
                                   "--no-validate", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["chosen"] == [2] and Path(summary["lora"]).is_file() and Path(summary["kohya"]).is_file()
    assert json.loads((out / "training.json").read_text())["config"]["steps"] == 2


@pytest.mark.slow
def test_template_validation_paints_checkpoints_into_template_faces(tiny_base, trainset, tmp_path, monkeypatch):
    """--templates: every checkpoint goes through the real two-pass inpaint on the template's face, with
    the template's ControlNets found through the manifest; the renders are kept for the user."""
    from portrait.imageio import load_rgb
    from portrait.models import manifest as manifest_mod
    from portrait.templates import load_template

    models = tmp_path / "models"
    lines = []
    for i, control in enumerate(("canny", "openpose", "color", "tile")):
        net = tiny.build_tiny_controlnet(tiny_base, models / "controlnet" / control, seed=30 + i)
        lines.append(f'[models.controlnet-{control}]\npath = "{net}"\n')
    (models / "models.toml").write_text("\n".join(lines))
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(models))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    manifest_mod._MANIFESTS.clear()
    out = tmp_path / "identity"
    res = CliRunner().invoke(cli, ["train", str(trainset), "--base-model", str(tiny_base), "--out", str(out),
                                   "--steps", "4", "--rank", "2", "--alpha", "2", "--resolution", "64",
                                   "--validate-every", "2", "--templates", "navy-formal",
                                   "--validation-size", "96", "--json"])
    manifest_mod._MANIFESTS.clear()
    assert res.exit_code == 0, res.output
    report = json.loads((out / "training.json").read_text())
    assert [c["step"] for c in report["checkpoints"]] == [2, 4]
    template = load_template("navy-formal")
    tpl = template.image()
    face = template.slot_faces()[0]
    cx, cy = face.center
    half = max(face.width, face.height) * 1.75
    yy, xx = np.mgrid[0:tpl.shape[0], 0:tpl.shape[1]]
    outside = (np.abs(xx - cx) > half) | (np.abs(yy - cy) > half)
    for step in (2, 4):
        render = load_rgb(out / "validation" / f"step_{step:05d}_navy-formal.png")
        assert render.shape == tpl.shape
        assert np.array_equal(render[outside], tpl[outside])  # painted into the face, pasted back by mask
        assert not np.array_equal(render, tpl)


def test_face_score_ranks_the_users_face_above_another_persons(tmp_path, face_analysis):
    """Checkpoint scoring on real faces: renders of the user (held-out photos of the astronaut) score above
    renders of someone else (Grace Hopper) against the centroid of the user's other photos; no face is worst."""
    from portrait.imageio import load_rgb
    from portrait.samples import write_sample_photos

    write_sample_photos(tmp_path)
    user = [load_rgb(tmp_path / n) for n in ("astronaut_01.jpg", "astronaut_03_close.png", "astronaut_04_bright.jpg")]
    held_out = [load_rgb(tmp_path / n) for n in ("astronaut_02_mirror.jpg", "astronaut_05_warm.webp")]
    other = [load_rgb(tmp_path / "grace_hopper.jpg")]
    centroid = lora_select.user_centroid(user, face_analysis)
    mine, theirs = (lora_select.face_score(imgs, centroid, face_analysis) for imgs in (held_out, other))
    assert mine > theirs + 0.2
    assert -mine < face_analysis.same_person_threshold < -theirs  # same person / another person, by the engine
    blank = np.full((256, 256, 3), 128, np.uint8)
    assert lora_select.face_score([blank], centroid, face_analysis) == lora_select.NO_FACE < theirs


def test_sdxl_vae_encodes_in_fp32_where_fp16_overflows():
    """SDXL's VAE overflows in fp16 (diffusers' SDXL pipelines upcast it: force_upcast): training caches latents
    through an fp32 VAE and hands them back in the training dtype; the VAE is left in fp16."""
    from types import SimpleNamespace

    from portrait.identity.lora_train import _encode_latents, vae_needs_upcast

    torch.manual_seed(0)
    vae = tiny._tiny_vae()
    with torch.no_grad():
        # Activations past fp16's 65504 (as SDXL's VAE reaches on real photos) from weights that fp16 holds.
        vae.encoder.conv_in.weight.mul_(1e4)
        vae.encoder.conv_in.bias.fill_(65000.0)
    vae = vae.to(torch.float16)
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    pipe = SimpleNamespace(vae=vae)
    assert vae_needs_upcast(vae, xl=True) and not vae_needs_upcast(vae, xl=False)
    mean, std = _encode_latents(pipe, [img], False, torch.device("cpu"), torch.float16, xl=True)
    assert mean.dtype == torch.float16 and torch.isfinite(mean).all() and torch.isfinite(std).all()
    assert vae.dtype == torch.float16
    raw, _ = _encode_latents(pipe, [img], False, torch.device("cpu"), torch.float16, xl=False)
    assert not torch.isfinite(raw).all()  # what training read before: the overflow is real


def test_an_fp16_sdxl_base_takes_the_fp16_fix_vae_where_it_is_installed(tmp_path):
    """The fp16-fix VAE (a manifest entry, madebyollin's layout: config.json + diffusion_pytorch_model.safetensors)
    replaces SDXL's own VAE when the base runs in fp16, so nothing is upcast to fp32; in fp32, or without the
    file, the base keeps its own."""
    from diffusers import AutoencoderKL

    from portrait.identity.lora_train import vae_needs_upcast
    from portrait.models import loading
    from portrait.models.manifest import Manifest

    root = tmp_path / "models"
    xl = tiny.build_tiny_sdxl(root / "diffusion" / "sdxl")
    bare = Manifest(root)
    own = loading.load_base("sdxl", manifest=bare, device="cpu", dtype="float16")
    assert loading.vae_name(own) == "base" and vae_needs_upcast(own.vae, xl=True)

    fix = AutoencoderKL.from_pretrained(str(xl / "vae"))
    with torch.no_grad():
        for p in fix.parameters():
            p.mul_(0.5)  # other weights than the base's own, so the test can tell which was loaded
    fix.register_to_config(force_upcast=False)
    fix.save_pretrained(str(root / "diffusion" / "sdxl-vae-fp16-fix"), safe_serialization=True)
    assert {p.name for p in (root / "diffusion" / "sdxl-vae-fp16-fix").iterdir()} == {
        "config.json", "diffusion_pytorch_model.safetensors"}
    loading.clear_cache()
    m = Manifest(root)
    half = loading.load_base("sdxl", manifest=m, device="cpu", dtype="float16")
    assert loading.vae_name(half) == "sdxl-vae-fp16-fix" and not vae_needs_upcast(half.vae, xl=True)
    assert half.vae.dtype == torch.float16
    w = half.vae.encoder.conv_in.weight.float()
    torch.testing.assert_close(w, fix.encoder.conv_in.weight.half().float())
    full = loading.load_base("sdxl", manifest=m, device="cpu", dtype="float32")
    assert loading.vae_name(full) == "base"
    assert m.spec("sdxl-vae-fp16-fix").commercial_use and m.spec("sdxl-vae-fp16-fix").download.repo == \
        "madebyollin/sdxl-vae-fp16-fix"


@pytest.mark.slow
def test_fp16_mixed_precision_training_scales_the_loss(tiny_base, trainset, tmp_path):
    cfg = LoraTraining(trainset=trainset, base_model=str(tiny_base), out_dir=tmp_path, steps=4, rank=4, alpha=2,
                      lr=1e-3, resolution=64, validate_every=4, seed=0, dtype="float16", mixed_precision=True,
                      device="cpu")
    result = train_lora(cfg, validate=None)
    report = json.loads((tmp_path / "training.json").read_text())
    assert report["mixed_precision"] and report["grad_scaler"] and report["dtype"] == "float16"
    assert len(report["loss"]) == 4 and all(np.isfinite(report["loss"]))
    assert Path(result.lora_path).is_file()


def test_gradient_checkpointing_is_on_only_where_memory_needs_it():
    """EasyPhoto checkpoints SDXL only; on a big card SD 1.5 trains faster without it; a CPU never needs it."""
    from portrait.identity.lora_train import CHECKPOINT_BELOW_GIB, checkpointing_default

    gib = 2**30
    assert checkpointing_default("sdxl", True, 80 * gib) is True
    assert checkpointing_default("sd15", True, 80 * gib) is False
    assert checkpointing_default("sd15", True, (CHECKPOINT_BELOW_GIB - 1) * gib) is True
    assert checkpointing_default("sd15", True, None) is True  # a GPU that reports no free memory
    assert checkpointing_default("sd15", False, None) is False and checkpointing_default("sdxl", False, None) is False


def test_each_step_accumulates_the_gradients_of_four_samples(tiny_base, trainset, tmp_path):
    """EasyPhoto's recipe: 4 samples' gradients per optimiser step (--gradient-accumulation)."""
    from portrait.models import loading

    calls = []
    base = loading.load_base(str(tiny_base))
    handle = base.unet.register_forward_pre_hook(lambda m, a: calls.append(base.unet.training))
    try:
        for acc in (4, 1):
            calls.clear()
            cfg = LoraTraining(trainset=trainset, base_model=str(tiny_base), out_dir=tmp_path / str(acc), steps=2, rank=4,
                              alpha=4, resolution=64, validate_every=100, gradient_accumulation=acc)
            rep = train_lora(cfg, validate=None).report
            assert sum(calls) == 2 * acc  # UNet forwards in training mode: steps x samples per step
            assert rep["config"]["gradient_accumulation"] == acc and len(rep["loss"]) == 2
    finally:
        handle.remove()


def test_validation_scores_with_the_face_engines_the_training_set_was_judged_with(tmp_path):
    from portrait.identity.lora_train import trainset_face_config

    (tmp_path / "report.json").write_text(json.dumps({"engines": {"detector": "scrfd", "landmarks": "dlib5",
                                                                  "embedder": "arcface-buffalo", "decoder": "pillow"}}))
    cfg = trainset_face_config(tmp_path)
    assert (cfg.detector, cfg.embedder) == ("scrfd", "arcface-buffalo")
    (tmp_path / "report.json").write_text(json.dumps({"engines": {"embedder": "no-such-engine"}}))
    assert trainset_face_config(tmp_path).embedder == "dlib-resnet"  # unknown: the defaults
    assert trainset_face_config(tmp_path / "missing").embedder == "dlib-resnet"
