"""Tiny random models shaped like the real ones: SD 1.5 / SDXL pipelines, ControlNets, IP-Adapter FaceID, InstantID.

They have the real models' structure (the same classes, key layouts and pipelines) with small configs
and random weights, so every code path runs offline in seconds: tests build them once per session,
and a user can smoke-test an install with `portrait models tiny DIR` and `PORTRAIT_MODELS_DIR=DIR`.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..progress import ProgressCallback, report

TINY_TEXT_DIM = 32  # hidden size of the tiny CLIP text encoders
SD15_SINGLE_FILE = "sd15.safetensors"
SDXL_SINGLE_FILE = "sdxl.safetensors"
SDXL_TEXT_DIMS = (24, 40)  # CLIP-L / CLIP-G widths of the tiny SDXL; their sum is the UNet's cross-attention


# -- building blocks ---------------------------------------------------------------------------------
def _byte_chars() -> list[str]:
    """CLIP's byte → unicode table (the 256 base symbols of its byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def tiny_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIP tokenizer with CLIP's byte-level alphabet and no merges (514 tokens, one per character)."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token=pad_token)


def _text_config(projection_dim: int = TINY_TEXT_DIM, hidden_act: str = "quick_gelu", hidden: int = TINY_TEXT_DIM):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=1000, hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=5, max_position_embeddings=77, layer_norm_eps=1e-5, hidden_act=hidden_act,
        bos_token_id=512, eos_token_id=513, pad_token_id=513, projection_dim=projection_dim,
    )


def _tiny_vae():
    from diffusers import AutoencoderKL

    # Four blocks like the real VAE, so latents are 1/8 of the image as in SD (ControlNets rely on it).
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
        block_out_channels=(16, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215,
    )


def _scheduler_kwargs() -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1)


def _read_index(pipe_dir: Path) -> dict:
    try:
        return json.loads((Path(pipe_dir) / "model_index.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{pipe_dir} is not a diffusers pipeline folder (no model_index.json)") from None


def architecture_of(pipe_dir: str | Path) -> str:
    """'sd15' or 'sdxl' from a diffusers folder's model_index.json."""
    return "sdxl" if "XL" in _read_index(Path(pipe_dir))["_class_name"] else "sd15"


# -- pipelines ---------------------------------------------------------------------------------------
def build_tiny_sd15(out_dir: str | Path, seed: int = 0) -> Path:
    """An SD 1.5-shaped pipeline (UNet 32/64 channels, 4 in-channels, DDIM) saved as a diffusers folder.

    A 4-channel UNet is what StableDiffusion(ControlNet)InpaintPipeline uses with SD 1.5 bases (it
    blends the masked latents each step), so this base serves text2img, img2img and inpainting.
    """
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=64, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM, attention_head_dim=8,
    )
    torch.manual_seed(seed + 1)
    vae = _tiny_vae()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **_scheduler_kwargs())
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    out = Path(out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_sdxl(out_dir: str | Path, seed: int = 0) -> Path:
    """An SDXL-shaped pipeline (two text encoders, text_time conditioning, Euler) as a diffusers folder.

    The two text encoders have different widths (24 + 40 = the UNet's 64-d cross-attention), as the real
    ones do (768 + 1280): diffusers' single-file loader tells CLIP-L from CLIP-G by that width.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=128, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + TINY_TEXT_DIM, cross_attention_dim=sum(SDXL_TEXT_DIMS),
    )
    torch.manual_seed(seed + 1)
    vae = _tiny_vae()
    vae.register_to_config(scaling_factor=0.13025, sample_size=1024)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config(hidden=SDXL_TEXT_DIMS[0]))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden_act="gelu", hidden=SDXL_TEXT_DIMS[1]))
    scheduler = EulerDiscreteScheduler(timestep_spacing="leading", **_scheduler_kwargs())
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(pad_token="!"),
                                     unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)
    out = Path(out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# -- original (LDM / A1111) single-file layout -------------------------------------------------------
def unet_to_ldm(sd: dict, config: dict) -> dict:
    """diffusers UNet2DConditionModel keys → original `model.diffusion_model.*` keys (inverse of
    diffusers' convert_ldm_unet_checkpoint)."""
    lpb = config["layers_per_block"]
    n = len(config["block_out_channels"])
    renames = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
               ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),
               ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
               ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
               ("mid_block.resnets.1.", "middle_block.2.")]
    for i in range(n):
        for j in range(lpb):
            renames += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{1 + i * (lpb + 1) + j}.0."),
                        (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{1 + i * (lpb + 1) + j}.1.")]
        renames.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (lpb + 1)}.0.op."))
        has_attn = "CrossAttn" in config["up_block_types"][i]
        for j in range(lpb + 1):
            renames += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * (lpb + 1) + j}.0."),
                        (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * (lpb + 1) + j}.1.")]
        renames.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * (lpb + 1) + lpb}.{2 if has_attn else 1}."))
    resnet_parts = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
                    ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."), ("conv_shortcut.", "skip_connection.")]
    out = {}
    for key, value in sd.items():
        new = key
        for old, ldm in renames:
            if key.startswith(old):
                new = ldm + key[len(old):]
                if ".resnets." in old:
                    for a, b in resnet_parts:
                        if key[len(old):].startswith(a):
                            new = ldm + b + key[len(old) + len(a):]
                break
        else:
            raise ValueError(f"no original-layout name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(sd: dict, config: dict) -> dict:
    """diffusers AutoencoderKL keys → original `first_stage_model.*` keys (attention as 1x1 convs)."""
    n = len(config["block_out_channels"])
    renames = [("encoder.mid_block.resnets.0.", "encoder.mid.block_1."), ("encoder.mid_block.resnets.1.", "encoder.mid.block_2."),
               ("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
               ("decoder.mid_block.resnets.0.", "decoder.mid.block_1."), ("decoder.mid_block.resnets.1.", "decoder.mid.block_2."),
               ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
               ("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for i in range(n):
        renames += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                    (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                    (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."),
                    (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")]
    attn_parts = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    out = {}
    for key, value in sd.items():
        new = key
        for old, ldm in renames:
            if key.startswith(old):
                rest = key[len(old):]
                if ldm.endswith("attn_1."):
                    for a, b in attn_parts:
                        if rest.startswith(a):
                            rest = b + rest[len(a):]
                            break
                    if rest.endswith("weight") and value.ndim == 2:
                        value = value[:, :, None, None]
                new = ldm + rest.replace("conv_shortcut.", "nin_shortcut.")
                break
        out["first_stage_model." + new] = value
    return out


def _clip_to_ldm(sd: dict, prefix: str) -> dict:
    """HF CLIPTextModel keys under `prefix` + `text_model.` (transformers 5 saves them without `text_model.`)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()
            if not k.endswith("position_ids")}


def _open_clip_to_ldm(sd: dict, prefix: str) -> dict:
    """HF CLIPTextModelWithProjection keys → OpenCLIP's layout under `prefix` (SDXL's CLIP-G:
    `conditioner.embedders.1.model.`): token_embedding, positional_embedding, transformer.resblocks.N.{ln_1,
    attn.in_proj_* (q, k, v stacked), attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final and
    text_projection (stored hidden x projection, the transpose of the Linear weight)."""
    import torch

    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in sd.items()
          if not k.endswith("position_ids")}
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight",
           "text_model.final_layer_norm.bias": "ln_final.bias"}
    parts = [("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
             ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]
    out: dict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    layers = "text_model.encoder.layers."
    for key, value in sd.items():
        if key in top:
            out[prefix + top[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key.startswith(layers):
            index, _, rest = key[len(layers):].partition(".")
            block = f"{prefix}transformer.resblocks.{index}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                _, proj, kind = rest.split(".")
                qkv.setdefault((block, kind), {})[proj[0]] = value
                continue
            for hf, oc in parts:
                if rest.startswith(hf):
                    out[block + oc + rest[len(hf):]] = value
                    break
            else:
                raise ValueError(f"no OpenCLIP name for text encoder key {key}")
        else:
            raise ValueError(f"no OpenCLIP name for text encoder key {key}")
    for (block, kind), p in qkv.items():
        out[f"{block}attn.in_proj_{kind}"] = torch.cat([p["q"], p["k"], p["v"]], dim=0)
    return out


def save_single_file(pipe_dir: str | Path, out_file: str | Path) -> Path:
    """Write an SD 1.5 or SDXL diffusers folder as one original-layout .safetensors: UNet
    (`model.diffusion_model.`), VAE (`first_stage_model.`) and the text encoder(s): SD 1.5's CLIP under
    `cond_stage_model.transformer.`; SDXL's CLIP-L under `conditioner.embedders.0.transformer.` and CLIP-G
    in OpenCLIP's layout under `conditioner.embedders.1.model.`.

    `from_single_file(out_file, config=pipe_dir)` (what `loading.load_base` does) reads it back offline.
    """
    from safetensors.torch import load_file, save_file

    pipe_dir, out_file = Path(pipe_dir), Path(out_file)
    arch = architecture_of(pipe_dir)

    def component(name: str) -> tuple[dict, dict]:
        files = sorted((pipe_dir / name).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{pipe_dir / name} has no .safetensors weights")
        sd = {}
        for f in files:
            sd.update(load_file(f))
        return sd, json.loads((pipe_dir / name / "config.json").read_text())

    unet_sd, unet_cfg = component("unet")
    vae_sd, vae_cfg = component("vae")
    te_sd, _ = component("text_encoder")
    state = unet_to_ldm(unet_sd, unet_cfg)
    state.update(_vae_to_ldm(vae_sd, vae_cfg))
    if arch == "sdxl":
        state.update(_clip_to_ldm(te_sd, "conditioner.embedders.0.transformer."))
        state.update(_open_clip_to_ldm(component("text_encoder_2")[0], "conditioner.embedders.1.model."))
    else:
        state.update(_clip_to_ldm(te_sd, "cond_stage_model.transformer."))
    state = {k: v.contiguous() for k, v in state.items()}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_file), metadata={"format": "pt"})
    return out_file


# -- ControlNet and IP-Adapter -----------------------------------------------------------------------
def build_tiny_controlnet(base_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """A ControlNet made from the base's UNet, with its zero-initialised output convolutions randomised.

    A fresh `ControlNetModel.from_unet` adds exactly zero to the UNet (zero convs), so a test could not
    tell a wired control from a dropped one; random output convs make the control image matter.
    """
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(base_dir) / "unet")
    controlnet = ControlNetModel.from_unet(unet)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                      controlnet.controlnet_cond_embedding.conv_out]
        for conv in zero_convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.01)
    out = Path(out_dir)
    controlnet.save_pretrained(out, safe_serialization=True)
    return out


def _embedder_meta(id_dim: int) -> dict:
    """The file's one metadata key (safetensors writes several in no fixed order, which would break the builds'
    determinism): 128-d tiny adapters take dlib's ResNet descriptors and say so
    (portrait.models.adapters.trained_on); 512-d ones take the recogniser their real counterpart was trained on."""
    return {"face_embedder": "dlib-resnet" if id_dim == 128 else "default"}


def attention_layers(unet) -> list[tuple[str, int, int | None]]:
    """(processor name, hidden size, cross-attention dim or None for self-attention) for every attention
    processor of `unet`, in `attn_processors` order: the shapes an IP-Adapter's per-layer weights take."""
    blocks = list(unet.config.block_out_channels)
    layers = []
    for name in unet.attn_processors:
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = blocks[::-1][int(name.split(".")[1])]
        else:
            hidden = blocks[int(name.split(".")[1])]
        layers.append((name, hidden, None if name.endswith("attn1.processor") else unet.config.cross_attention_dim))
    return layers


def _ip_attention_state(unet) -> dict:
    """`ip_adapter.{k}.to_k_ip/to_v_ip` for every cross-attention layer of `unet` (global torch RNG)."""
    import torch

    state = {}
    key_id = 1  # diffusers numbers the cross-attention processors 1, 3, 5, ... in attn_processors order
    for _, hidden, cross in attention_layers(unet):
        if cross is None:
            continue
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) / cross**0.5
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) / cross**0.5
        key_id += 2
    return state


def build_tiny_ip_adapter_faceid(base_dir: str | Path, out_file: str | Path, id_dim: int = 128, seed: int = 0,
                                 num_tokens: int = 4) -> Path:
    """An IP-Adapter FaceID file for the base's UNet: `image_proj.*` (id_dim → num_tokens × cross dim)
    and `ip_adapter.{k}.to_k_ip/to_v_ip` per cross-attention layer, in the layout that diffusers'
    `load_ip_adapter(dir, subfolder="", weight_name=..., image_encoder_folder=None)` reads.

    id_dim is the face embedding's size: 128 for dlib's ResNet, 512 for ArcFace.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet_cfg = UNet2DConditionModel.load_config(Path(base_dir) / "unet")
    unet = UNet2DConditionModel.from_config(unet_cfg)
    cross = unet.config.cross_attention_dim
    torch.manual_seed(seed)
    mult = 2
    state = {
        "image_proj.proj.0.weight": torch.randn(id_dim * mult, id_dim) / id_dim**0.5,
        "image_proj.proj.0.bias": torch.zeros(id_dim * mult),
        "image_proj.proj.2.weight": torch.randn(cross * num_tokens, id_dim * mult) / (id_dim * mult) ** 0.5,
        "image_proj.proj.2.bias": torch.zeros(cross * num_tokens),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    state.update(_ip_attention_state(unet))
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata=_embedder_meta(id_dim))
    return out


def build_tiny_instantid_adapter(sdxl_dir: str | Path, out_file: str | Path, id_dim: int = 512, seed: int = 0,
                                 num_tokens: int = 16, hidden: int = 64, depth: int = 4) -> Path:
    """An InstantID `ip-adapter` file for an SDXL base's UNet, in InstantID's own (IP-Adapter Plus) layout:
    `image_proj.*` is a perceiver resampler (latents, proj_in: id_dim → hidden, `depth` layers of
    attention `layers.i.0.{norm1,norm2,to_q,to_kv,to_out}` and feed-forward `layers.i.1.{0,1,3}`, proj_out
    → cross-attention dim, norm_out) and `ip_adapter.{k}.to_k_ip/to_v_ip` per cross-attention layer.
    diffusers' `load_ip_adapter` reads it natively (IPAdapterPlusImageProjection; heads = hidden / 64,
    depth 4 as diffusers assumes).

    id_dim is the face embedding's size: 512 for ArcFace (the real InstantID), 128 for dlib's ResNet.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    if hidden % 64:
        raise ValueError(f"hidden must be a multiple of 64 (diffusers reads heads = hidden / 64), got {hidden}")
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(Path(sdxl_dir) / "unet"))
    cross = unet.config.cross_attention_dim
    torch.manual_seed(seed)
    ff = hidden * 4
    state = {
        "image_proj.latents": torch.randn(1, num_tokens, hidden) / hidden**0.5,
        "image_proj.proj_in.weight": torch.randn(hidden, id_dim) / id_dim**0.5,
        "image_proj.proj_in.bias": torch.zeros(hidden),
        "image_proj.proj_out.weight": torch.randn(cross, hidden) / hidden**0.5,
        "image_proj.proj_out.bias": torch.zeros(cross),
        "image_proj.norm_out.weight": torch.ones(cross),
        "image_proj.norm_out.bias": torch.zeros(cross),
    }
    for i in range(depth):
        p = f"image_proj.layers.{i}"
        state.update({
            f"{p}.0.norm1.weight": torch.ones(hidden), f"{p}.0.norm1.bias": torch.zeros(hidden),
            f"{p}.0.norm2.weight": torch.ones(hidden), f"{p}.0.norm2.bias": torch.zeros(hidden),
            f"{p}.0.to_q.weight": torch.randn(hidden, hidden) / hidden**0.5,
            f"{p}.0.to_kv.weight": torch.randn(2 * hidden, hidden) / hidden**0.5,
            f"{p}.0.to_out.weight": torch.randn(hidden, hidden) / hidden**0.5,
            f"{p}.1.0.weight": torch.ones(hidden), f"{p}.1.0.bias": torch.zeros(hidden),
            f"{p}.1.1.weight": torch.randn(ff, hidden) / hidden**0.5,
            f"{p}.1.3.weight": torch.randn(hidden, ff) / ff**0.5,
        })
    state.update(_ip_attention_state(unet))
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out),
              metadata=_embedder_meta(id_dim))
    return out


def build_tiny_instantid(sdxl_dir: str | Path, out_dir: str | Path, id_dim: int = 512, seed: int = 0) -> dict[str, Path]:
    """A tiny InstantID for an SDXL base: the IdentityNet (a ControlNet from the base's UNet with randomised
    output convolutions) in OUT/ControlNetModel and the adapter in OUT/ip-adapter.safetensors (the
    layout of InstantX/InstantID). Returns {"instantid-controlnet": folder, "instantid-adapter": file}."""
    out = Path(out_dir)
    return {"instantid-controlnet": build_tiny_controlnet(sdxl_dir, out / "ControlNetModel", seed),
            "instantid-adapter": build_tiny_instantid_adapter(sdxl_dir, out / "ip-adapter.safetensors", id_dim,
                                                              seed + 1)}


# -- the whole set -----------------------------------------------------------------------------------
CONTROLNET_NAMES = ("canny", "openpose", "tile", "color")


def build_tiny_set(out_dir: str | Path, seed: int = 0, progress: ProgressCallback | None = None,
                   id_dim: int = 128, sdxl: bool = True) -> dict[str, Path]:
    """Every diffusion model the manifest names, tiny, plus a models.toml pointing the names at them
    (with `sdxl`: the SDXL base, its three ControlNets controlnet-{canny,openpose,tile}-sdxl and InstantID too).

    With `PORTRAIT_MODELS_DIR=out_dir`, `portrait models list` shows them present. Returns name → path.
    """
    from .manifest import sha256_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd15 = out / "sd15"
    steps: list[tuple[str, Callable[[], Path]]] = [
        ("sd15", lambda: build_tiny_sd15(sd15, seed)),
        ("sd15-single", lambda: save_single_file(sd15, out / SD15_SINGLE_FILE)),
        *[(f"controlnet-{c}", lambda c=c, i=i: build_tiny_controlnet(sd15, out / "controlnet" / f"sd15-{c}", seed + 10 + i))
          for i, c in enumerate(CONTROLNET_NAMES)],
        ("ip-adapter-faceid", lambda: build_tiny_ip_adapter_faceid(
            sd15, out / "ip-adapter" / "ip-adapter-faceid-tiny.safetensors", id_dim=id_dim, seed=seed + 20)),
    ]
    if sdxl:
        steps.append(("sdxl", lambda: build_tiny_sdxl(out / "sdxl", seed)))
        steps.append(("sdxl-single", lambda: save_single_file(out / "sdxl", out / SDXL_SINGLE_FILE)))
        steps += [(f"controlnet-{c}-sdxl", lambda c=c, i=i: build_tiny_controlnet(
            out / "sdxl", out / "controlnet" / f"sdxl-{c}", seed + 40 + i))
            for i, c in enumerate(CONTROLNET_NAMES) if c != "color"]  # no SDXL colour ControlNet is released
        steps += [("instantid-controlnet", lambda: build_tiny_controlnet(out / "sdxl", out / "instantid" / "ControlNetModel",
                                                                         seed + 30)),
                  ("instantid-adapter", lambda: build_tiny_instantid_adapter(
                      out / "sdxl", out / "instantid" / "ip-adapter.safetensors", id_dim=id_dim, seed=seed + 31))]
    built: dict[str, Path] = {}
    for i, (name, make) in enumerate(steps):
        report(progress, "tiny models", i, len(steps))
        built[name] = make()
    report(progress, "tiny models", len(steps), len(steps))

    lines = ["# Tiny random models built by `portrait models tiny` (for tests and smoke tests only).", ""]
    for name, path in built.items():
        rel = path.relative_to(out).as_posix()
        lines.append(f"[models.{name}]")
        if name in ("sd15-single", "sdxl-single"):  # read with the tiny folder's config (the shipped one is full size)
            arch = name.split("-")[0]
            lines += ['kind = "diffusion_base"', f'architecture = "{arch}"', f'config = "{arch}"']
        lines += ['licence = "random weights (tiny test model)"', "commercial_use = true"]
        lines.append(f'path = "{rel}"')
        if path.is_file():
            lines.append(f'sha256 = "{sha256_file(path)}"')
        lines.append("")
    (out / "models.toml").write_text("\n".join(lines))
    built["models.toml"] = out / "models.toml"
    return built
