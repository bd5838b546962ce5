"""Diffusion model manifest, CLI and loading: tiny models save and reload offline, from a folder and a single file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from portrait.cli import cli
from portrait.errors import ConfigError, ModelHashError, ModelMissingError
from portrait.models import loading, tiny
from portrait.models.manifest import Manifest


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """Every tiny diffusion model plus a models.toml naming them (built once for this module)."""
    root = tmp_path_factory.mktemp("tiny-set")
    return tiny.build_tiny_set(root)


@pytest.fixture
def models_env(tiny_set, monkeypatch):
    root = tiny_set["sd15"].parent
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(root))
    monkeypatch.delenv("PORTRAIT_MODELS_CONFIG", raising=False)
    return Manifest(root)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the hub fails loudly (loading must be offline)."""
    import huggingface_hub.file_download as fd

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(fd, "hf_hub_download", refuse)
    monkeypatch.setattr(fd, "get_hf_file_metadata", refuse, raising=False)


def _render(pipe, seed=0, size=64):
    return pipe("a photo of ohwx person", height=size, width=size, num_inference_steps=2,
                generator=torch.Generator().manual_seed(seed), output_type="np").images[0]


def test_tiny_set_is_present_in_the_manifest(models_env):
    for name in ("sd15", "sd15-single", "sdxl", "sdxl-single", "controlnet-canny", "controlnet-openpose", "controlnet-tile",
                 "controlnet-color", "ip-adapter-faceid", "instantid-adapter", "instantid-controlnet",
                 "controlnet-canny-sdxl", "controlnet-openpose-sdxl", "controlnet-tile-sdxl"):
        assert models_env.status(name).state == "present", name
    assert models_env.spec("sd15-single").extra["config"].endswith("sd15")
    assert models_env.spec("sdxl-single").extra["config"].endswith("sdxl")


def test_tiny_builds_are_deterministic(tmp_path):
    a = tiny.build_tiny_ip_adapter_faceid(tiny.build_tiny_sd15(tmp_path / "a"), tmp_path / "a.safetensors", seed=3)
    b = tiny.build_tiny_ip_adapter_faceid(tiny.build_tiny_sd15(tmp_path / "b"), tmp_path / "b.safetensors", seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        (tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_folder_and_single_file_load_offline_with_identical_weights_and_output(models_env):
    loading.clear_cache()
    folder = loading.load_base("sd15", manifest=models_env)
    single = loading.load_base("sd15-single", manifest=models_env)
    assert folder is not single and type(folder).__name__ == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(folder, part).state_dict(), getattr(single, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    # Same weights, separately built pipelines: renders agree to float rounding (kernels may sum in another
    # order per instance and CPU), not bit for bit.
    np.testing.assert_allclose(_render(folder), _render(single), rtol=0, atol=1e-4)


def test_sdxl_folder_and_single_file_load_offline_with_identical_weights_and_output(models_env, tiny_set):
    from safetensors import safe_open

    # The single file is in the original (SGM) layout: CLIP-L under embedders.0, CLIP-G in OpenCLIP's layout.
    with safe_open(str(tiny_set["sdxl-single"]), "pt") as f:
        keys = set(f.keys())
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys and "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys
    assert not any(k.startswith(("text_model.", "cond_stage_model.")) for k in keys)
    assert loading.detect_architecture(tiny_set["sdxl-single"]) == "sdxl"
    loading.clear_cache()
    folder = loading.load_base("sdxl", manifest=models_env)
    single = loading.load_base("sdxl-single", manifest=models_env)
    assert folder is not single and type(single).__name__ == "StableDiffusionXLPipeline"
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(folder, part).state_dict(), getattr(single, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    # Same weights, separately built pipelines: renders agree to float rounding (kernels may sum in another
    # order per instance and CPU), not bit for bit.
    np.testing.assert_allclose(_render(folder), _render(single), rtol=0, atol=1e-4)


def test_sdxl_single_file_by_path_picks_the_shipped_sdxl_config(empty_models_dir, tiny_set):
    # By path, with no models.toml entry, the shipped SDXL config reads it: it carries no vocabulary,
    # so the clip-tokenizer model is named (the shipped config is full size; the tiny file loads with its own).
    assert loading._config_folder(tiny_set["sdxl-single"], None, None) == loading.CONFIGS_DIR / "sdxl"
    with pytest.raises(ModelMissingError, match="clip-tokenizer"):
        loading.load_base(str(tiny_set["sdxl-single"]), manifest=Manifest(empty_models_dir))


def test_single_file_by_path_uses_shipped_config_or_given_folder(models_env, tiny_set):
    # The original layout is detected from its keys; with a folder as arch, that folder is the config.
    assert loading.detect_architecture(tiny_set["sd15-single"]) == "sd15"
    assert loading.detect_architecture(tiny_set["sdxl"]) == "sdxl"
    pipe = loading.load_base(str(tiny_set["sd15-single"]), manifest=models_env, arch=str(tiny_set["sd15"]))
    assert pipe.unet.config.block_out_channels == (32, 64) or list(pipe.unet.config.block_out_channels) == [32, 64]


def test_shipped_configs_describe_the_real_architectures():
    from diffusers import UNet2DConditionModel

    # The released UNets' defining fields (from their model cards' config.json), then their size: within
    # 0.5 % of the released parameter count, so a diffusers release that adds or drops a bias somewhere
    # does not fail it, while a wrong width, depth or cross-attention size (tens of percent) does.
    expected = {
        "sd15": ({"block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
                  "layers_per_block": 2, "attention_head_dim": 8, "in_channels": 4}, 859_520_964),
        "sdxl": ({"block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
                  "transformer_layers_per_block": [1, 2, 10], "addition_embed_type": "text_time",
                  "projection_class_embeddings_input_dim": 2816, "in_channels": 4}, 2_567_463_684),
    }
    for arch, (fields, params) in expected.items():
        cfg = UNet2DConditionModel.load_config(loading.CONFIGS_DIR / arch / "unet")
        assert {k: (list(cfg[k]) if isinstance(cfg[k], (list, tuple)) else cfg[k]) for k in fields} == fields
        with torch.device("meta"):
            n = UNet2DConditionModel.from_config(cfg).num_parameters()
        assert abs(n - params) <= 0.005 * params, (arch, n)


def test_sdxl_loads_and_renders(models_env):
    pipe = loading.load_base("sdxl", manifest=models_env)
    assert loading.is_sdxl(pipe)
    assert _render(pipe, size=64).shape == (64, 64, 3)


def test_inpaint_models_pick_the_controlnets_of_the_base_architecture(models_env):
    from portrait.generate.pipelines import InpaintModels

    xl = InpaintModels.load("sdxl", ["canny", "openpose", "tile"], manifest=models_env, device="cpu")
    for c, net in xl.controlnets.items():
        assert net is loading.load_controlnet(f"controlnet-{c}-sdxl", manifest=models_env), c
        assert net.config.addition_embed_type == "text_time"
    sd = InpaintModels.load("sd15", ["canny"], manifest=models_env, device="cpu")
    assert sd.controlnets["canny"] is loading.load_controlnet("controlnet-canny", manifest=models_env)
    assert sd.controlnets["canny"].config.addition_embed_type is None
    # controlnet_models still overrides, and missing controls load on demand with the same rule.
    over = InpaintModels.load("sdxl", [], manifest=models_env, device="cpu",
                              controlnet_models={"tile": "controlnet-canny-sdxl"})
    over.ensure_controlnets(["canny", "tile"])
    assert over.controlnets["canny"] is xl.controlnets["canny"] and over.controlnets["tile"] is xl.controlnets["canny"]


def test_sdxl_base_without_sdxl_controlnets_names_the_missing_sdxl_entry(empty_models_dir, tiny_set):
    from portrait.generate.pipelines import InpaintModels

    # Only the SD 1.5 ControlNets are configured: an SDXL template run must not fall back to them.
    (empty_models_dir / "models.toml").write_text(
        f'[models.sdxl]\npath = "{tiny_set["sdxl"]}"\n\n[models.controlnet-canny]\npath = "{tiny_set["controlnet-canny"]}"\n')
    m = Manifest(empty_models_dir)
    with pytest.raises(ModelMissingError) as err:
        InpaintModels.load("sdxl", ["canny"], manifest=m, device="cpu")
    assert err.value.model == "controlnet-canny-sdxl"
    assert str(empty_models_dir / "controlnet" / "sdxl-canny") in str(err.value)
    assert "diffusers/controlnet-canny-sdxl-1.0" in str(err.value)
    with pytest.raises(ConfigError, match="no sdxl ControlNet is known for control 'color'") as err:
        InpaintModels.load("sdxl", [], manifest=m, device="cpu").ensure_controlnets(["color"])
    assert "scale to 0" in str(err.value)  # how to run the template without it


def test_loads_are_cached_and_inpaint_pipelines_share_components(models_env):
    base = loading.load_base("sd15", manifest=models_env)
    assert loading.load_base("sd15", manifest=models_env) is base
    nets = [loading.load_controlnet(f"controlnet-{c}", manifest=models_env) for c in ("canny", "openpose")]
    assert loading.load_controlnet("controlnet-canny", manifest=models_env) is nets[0]
    pipe = loading.inpaint_pipeline(base, nets)
    assert type(pipe).__name__ == "StableDiffusionControlNetInpaintPipeline"
    assert type(pipe.controlnet).__name__ == "MultiControlNetModel"
    assert pipe.unet is base.unet and pipe.vae is base.vae
    assert loading.inpaint_pipeline(base, nets) is pipe
    assert type(loading.inpaint_pipeline(base, nets[:1]).controlnet).__name__ == "ControlNetModel"


def test_tiny_controlnet_output_depends_on_the_control_image(models_env):
    net = loading.load_controlnet("controlnet-canny", manifest=models_env)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    outs = []
    for value in (0.0, 1.0):
        cond = torch.full((1, 3, 64, 64), value)
        down, mid = net(sample, 10, encoder_hidden_states=hidden, controlnet_cond=cond, return_dict=False)
        outs.append(mid)
    assert outs[0].abs().sum() > 0 and not torch.allclose(outs[0], outs[1])


def test_swapping_identity_loras_never_reloads_the_base(models_env, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    base = loading.load_base("sd15", manifest=models_env)
    loras = [_random_lora(base, tmp_path / f"id{i}.safetensors", seed=i) for i in range(2)]
    calls = []
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", classmethod(lambda *a, **k: calls.append(a)))
    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", classmethod(lambda *a, **k: calls.append(a)))
    plain = _render(base)
    outs = []
    for path in (*loras, *loras):
        loading.set_identity_lora(loading.load_base("sd15", manifest=models_env), path)
        outs.append(_render(base))
    assert calls == []
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], plain)
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[3])
    loading.set_identity_lora(base, loras[0], style_lora=loras[1], style_weight=0.5)
    assert sorted(base.get_active_adapters()) == ["identity", "style"]
    loading.set_identity_lora(base, None)
    np.testing.assert_array_equal(_render(base), plain)
    assert base.get_list_adapters().get("unet", []) == []


def _random_lora(pipe, path, seed):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                          adapter_name="tmp")
    try:
        for n, p in pipe.unet.named_parameters():
            if "lora_B.tmp" in n:
                torch.nn.init.normal_(p, std=0.3)
        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet, adapter_name="tmp"))
    finally:
        pipe.unet.delete_adapters("tmp")
    type(pipe).save_lora_weights(str(path.parent), unet_lora_layers=state, weight_name=path.name)
    return path


def test_missing_and_bad_hash_models_raise_clear_errors(empty_models_dir, tiny_set):
    m = Manifest(empty_models_dir)
    with pytest.raises(ModelMissingError) as exc:
        loading.load_base("sd15", manifest=m)
    assert "sd15" in str(exc.value) and str(empty_models_dir / "diffusion" / "sd15") in str(exc.value)
    with pytest.raises(ModelMissingError, match="controlnet-tile"):
        loading.load_controlnet("controlnet-tile", manifest=m)
    with pytest.raises(ModelMissingError, match="no/such/model"):
        loading.load_base("no/such/model", manifest=m)
    (empty_models_dir / "models.toml").write_text(
        f'[models.sd15]\npath = "{tiny_set["sd15-single"]}"\nsha256 = "{"0" * 64}"\n')
    with pytest.raises(ModelHashError, match="sd15"):
        loading.load_base("sd15", manifest=Manifest(empty_models_dir))


def test_single_file_without_a_tokenizer_names_the_clip_tokenizer(empty_models_dir, tiny_set):
    # The shipped SD 1.5 config has no vocabulary: loading a real single file needs the clip-tokenizer model.
    with pytest.raises(ModelMissingError, match="clip-tokenizer"):
        loading.load_base(str(tiny_set["sd15-single"]), manifest=Manifest(empty_models_dir))


def test_pick_device_defaults_and_overrides(monkeypatch):
    from portrait.errors import ConfigError
    from portrait.models.device import pick_device

    monkeypatch.delenv("PORTRAIT_DEVICE", raising=False)
    monkeypatch.delenv("PORTRAIT_DTYPE", raising=False)
    dev, dt = pick_device("cpu")
    assert dev.type == "cpu" and dt == torch.float32
    assert pick_device("cpu", "bf16")[1] == torch.bfloat16
    monkeypatch.setenv("PORTRAIT_DTYPE", "fp16")
    assert pick_device("cpu")[1] == torch.float16
    with pytest.raises(ConfigError):
        pick_device("cpu", "int3")


# -- CLI ------------------------------------------------------------------------------------------
def test_models_list_json_shows_states_licences_and_fixes(empty_models_dir):
    res = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)["models"]}
    assert rows["dlib-5pt"]["state"] == "present" and rows["dlib-5pt"]["commercial_use"] == "yes"
    assert rows["dlib-68pt"]["commercial_use"] == "no"
    assert rows["sd15"]["state"] == "missing" and "models.toml" in rows["sd15"]["fix"]
    assert rows["instantid-adapter"]["commercial_use"] == "check"


def test_models_verify_exit_codes(models_env, tiny_set):
    runner = CliRunner()
    ok = runner.invoke(cli, ["models", "verify", "sd15", "sd15-single", "ip-adapter-faceid", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    missing = runner.invoke(cli, ["models", "verify", "arcface", "--json"])
    assert missing.exit_code == 2 and json.loads(missing.output)["models"][0]["state"] == "missing"
    adapter = tiny_set["ip-adapter-faceid"]
    original = adapter.read_bytes()
    try:
        adapter.write_bytes(original + b"corrupt")
        bad = runner.invoke(cli, ["models", "verify", "--json"])
    finally:
        adapter.write_bytes(original)
    rows = {r["name"]: r for r in json.loads(bad.output)["models"]}
    assert rows["ip-adapter-faceid"]["state"] == "bad_hash" and "sha256" in rows["ip-adapter-faceid"]["fix"]
    assert bad.exit_code == 2, bad.output


@pytest.mark.slow
def test_models_tiny_cli_builds_a_usable_set(tmp_path, monkeypatch):
    out = tmp_path / "t"
    res = CliRunner().invoke(cli, ["models", "tiny", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert (out / "models.toml").is_file() and (out / "sd15" / "model_index.json").is_file()
    monkeypatch.setenv("PORTRAIT_MODELS_DIR", str(out))
    rows = {r["name"]: r["state"] for r in json.loads(CliRunner().invoke(cli, ["models", "list", "--json"]).output)["models"]}
    assert rows["sd15"] == rows["sd15-single"] == rows["controlnet-color"] == "present"
