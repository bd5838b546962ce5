"""Tiny random weights in the exact layouts of the real released files, for tests and smoke tests.

`tiny.py` builds models in the layouts our own code writes; the files a user downloads differ, and a
loader that only ever saw our layouts can break on the real ones without any test noticing. Each builder
here writes a small random model in the layout of one released file, so it goes through the same
loading code the real file takes:

  build_faceid_release       h94/IP-Adapter-FaceID `ip-adapter-faceid_sd15.bin` (and -plus / -plusv2): a torch
                             pickle {"image_proj": {...}, "ip_adapter": {...}} whose `ip_adapter` section holds
                             the adapter's own LoRA (`{i}.to_{q,k,v,out}_lora.{down,up}.weight` for every
                             attention processor i) beside `{i}.to_k_ip / to_v_ip` of the cross-attentions
  build_instantid_release    InstantX/InstantID: `ip-adapter.bin` (the same pickle layout, a perceiver resampler
                             in `image_proj`) and the IdentityNet `ControlNetModel/` diffusers folder
  build_clip_image_encoder   h94/IP-Adapter `models/image_encoder/` (CLIPVisionModelWithProjection folder), the
                             image encoder FaceID-Plus reads its face crop with
  save_a1111_controlnet      an A1111 / lllyasviel single-file ControlNet `.pth` (`control_model.*` original keys,
                             like EasyPhoto's control_sd15_random_color.pth)
  build_kohya_lora           a LoRA in kohya sd-scripts' layout (`lora_unet_*` / `lora_te_*` with `.lora_down`,
                             `.lora_up` and `.alpha`, `ss_*` metadata), as style LoRAs from Civitai come

Layouts were read from the reference code (tencent-ailab/IP-Adapter ip_adapter_faceid.py and
attention_processor_faceid.py, diffusers' IP-Adapter and single-file loaders, kohya-ss/sd-scripts
networks/lora.py); nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from .tiny import attention_layers


def _unet(base_dir: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(Path(base_dir) / "unet"))


def _ip_adapter_section(unet, lora_rank: int | None, gen) -> dict:
    """The released `ip_adapter` section: per processor i, LoRA factors (FaceID) and, for cross-attention,
    to_k_ip / to_v_ip (Linear weights, no bias)."""
    import torch

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    out = {}
    for i, (_, hidden, cross) in enumerate(attention_layers(unet)):
        if lora_rank:
            kv_in = cross or hidden
            for proj, n_in in (("to_q", hidden), ("to_k", kv_in), ("to_v", kv_in), ("to_out", hidden)):
                out[f"{i}.{proj}_lora.down.weight"] = rnd(lora_rank, n_in, scale=1 / lora_rank)
                out[f"{i}.{proj}_lora.up.weight"] = rnd(hidden, lora_rank, scale=0.5)
        if cross is not None:
            out[f"{i}.to_k_ip.weight"] = rnd(hidden, cross, scale=cross**-0.5)
            out[f"{i}.to_v_ip.weight"] = rnd(hidden, cross, scale=cross**-0.5)
    return out


def _perceiver(prefix: str, dim: int, in_dim: int, out_dim: int, depth: int, heads: int, gen) -> dict:
    """IP-Adapter's perceiver resampler (Resampler / FacePerceiverResampler) keys under `prefix`: proj_in,
    proj_out, norm_out and per layer `{i}.0` attention (norm1, norm2, to_q, to_kv, to_out) and `{i}.1`
    feed-forward (LayerNorm 0, Linear 1, Linear 3; no biases), dim_head 64."""
    import torch

    inner, ff = heads * 64, dim * 4

    def rnd(*shape):
        return torch.randn(*shape, generator=gen) / shape[-1] ** 0.5

    state = {f"{prefix}proj_in.weight": rnd(dim, in_dim), f"{prefix}proj_in.bias": torch.zeros(dim),
             f"{prefix}proj_out.weight": rnd(out_dim, dim), f"{prefix}proj_out.bias": torch.zeros(out_dim),
             f"{prefix}norm_out.weight": torch.ones(out_dim), f"{prefix}norm_out.bias": torch.zeros(out_dim)}
    for i in range(depth):
        p = f"{prefix}layers.{i}"
        state.update({
            f"{p}.0.norm1.weight": torch.ones(dim), f"{p}.0.norm1.bias": torch.zeros(dim),
            f"{p}.0.norm2.weight": torch.ones(dim), f"{p}.0.norm2.bias": torch.zeros(dim),
            f"{p}.0.to_q.weight": rnd(inner, dim), f"{p}.0.to_kv.weight": rnd(2 * inner, dim),
            f"{p}.0.to_out.weight": rnd(dim, inner),
            f"{p}.1.0.weight": torch.ones(dim), f"{p}.1.0.bias": torch.zeros(dim),
            f"{p}.1.1.weight": rnd(ff, dim), f"{p}.1.3.weight": rnd(dim, ff),
        })
    return state


def save_release_pickle(sections: dict[str, dict], path: str | Path) -> Path:
    """torch.save of {"image_proj": {...}, "ip_adapter": {...}}: how the released .bin files are written."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: {n: t.contiguous() for n, t in v.items()} for k, v in sections.items()}, str(path))
    return path


def build_faceid_release(base_dir: str | Path, out_file: str | Path, *, id_dim: int = 512, lora_rank: int = 4,
                         plus_clip_dim: int | None = None, num_tokens: int = 4, seed: int = 0) -> Path:
    """`ip-adapter-faceid_sd15.bin` for the base's UNet (`plus_clip_dim`: the -plus / -plusv2 layout, whose
    `image_proj` adds `perceiver_resampler.*` reading CLIP hidden states of that width). The plain file's
    `image_proj` is MLPProjModel: proj.0 (id_dim -> 2 id_dim), GELU, proj.2 (-> cross x num_tokens), norm."""
    import torch

    unet = _unet(Path(base_dir))
    cross = unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(seed)
    proj = {"proj.0.weight": torch.randn(2 * id_dim, id_dim, generator=gen) / id_dim**0.5,
            "proj.0.bias": torch.zeros(2 * id_dim),
            "proj.2.weight": torch.randn(cross * num_tokens, 2 * id_dim, generator=gen) / (2 * id_dim) ** 0.5,
            "proj.2.bias": torch.zeros(cross * num_tokens),
            "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)}
    if plus_clip_dim:  # ProjPlusModel: resampler dim = cross-attention dim, heads = dim / 64 (at least 1)
        proj.update(_perceiver("perceiver_resampler.", cross, plus_clip_dim, cross, 4, max(1, cross // 64), gen))
    return save_release_pickle({"image_proj": proj, "ip_adapter": _ip_adapter_section(unet, lora_rank, gen)}, out_file)


def build_instantid_release(sdxl_dir: str | Path, out_dir: str | Path, *, id_dim: int = 512, num_tokens: int = 16,
                            hidden: int = 64, seed: int = 0) -> dict[str, Path]:
    """InstantX/InstantID's checkpoints folder: OUT/ip-adapter.bin (Resampler: latents, proj_in id_dim -> hidden,
    4 layers, proj_out -> cross, norm_out; ip_adapter to_k_ip / to_v_ip) and OUT/ControlNetModel (IdentityNet)."""
    import torch

    from .tiny import build_tiny_controlnet

    out = Path(out_dir)
    unet = _unet(Path(sdxl_dir))
    cross = unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(seed)
    proj = {"latents": torch.randn(1, num_tokens, hidden, generator=gen) / hidden**0.5}
    proj.update(_perceiver("", hidden, id_dim, cross, 4, hidden // 64, gen))
    adapter = save_release_pickle({"image_proj": proj, "ip_adapter": _ip_adapter_section(unet, None, gen)},
                                  out / "ip-adapter.bin")
    return {"instantid-adapter": adapter,
            "instantid-controlnet": build_tiny_controlnet(sdxl_dir, out / "ControlNetModel", seed + 1)}


def build_clip_image_encoder(out_dir: str | Path, *, hidden: int = 32, image_size: int = 224, patch: int = 32,
                             projection_dim: int = 16, seed: int = 0) -> Path:
    """A CLIPVisionModelWithProjection folder (config.json + model.safetensors), the layout of h94/IP-Adapter's
    models/image_encoder (ViT-H/14: hidden 1280, 224 px)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=3, num_attention_heads=2,
                           image_size=image_size, patch_size=patch, projection_dim=projection_dim, hidden_act="gelu")
    model = CLIPVisionModelWithProjection(cfg)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _controlnet_to_ldm(sd: dict, config: dict) -> dict:
    """diffusers ControlNetModel keys -> the original ControlNet keys (inverse of diffusers'
    convert_controlnet_checkpoint): the UNet encoder as in SD, input_hint_block.{0, 2, ..., 14} for the
    conditioning embedding, zero_convs.{i}.0 and middle_block_out.0 for the zero convolutions."""
    from .tiny import unet_to_ldm

    out, rest = {}, {}
    n_blocks = len(config.get("conditioning_embedding_out_channels", (16, 32, 96, 256)))
    last_hint = 2 * (2 * (n_blocks - 1) + 1)
    for key, value in sd.items():
        head, _, tail = key.partition(".")
        if key.startswith("controlnet_cond_embedding.conv_in."):
            out["input_hint_block.0." + key.split(".")[-1]] = value
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            out[f"input_hint_block.{last_hint}." + key.split(".")[-1]] = value
        elif key.startswith("controlnet_cond_embedding.blocks."):
            i, param = key.split(".")[2], key.split(".")[-1]
            out[f"input_hint_block.{2 * (int(i) + 1)}.{param}"] = value
        elif head == "controlnet_down_blocks":
            i, param = tail.split(".")
            out[f"zero_convs.{i}.0.{param}"] = value
        elif head == "controlnet_mid_block":
            out[f"middle_block_out.0.{tail}"] = value
        else:
            rest[key] = value
    unet_like = {**config, "up_block_types": config.get("up_block_types") or ["UpBlock2D"] * len(config["block_out_channels"])}
    for key, value in unet_to_ldm(rest, unet_like).items():
        out[key[len("model.diffusion_model."):]] = value
    return out


def save_a1111_controlnet(controlnet_dir: str | Path, out_file: str | Path, prefix: str = "control_model.") -> Path:
    """A diffusers ControlNet folder written as an A1111 / lllyasviel `.pth` (a torch pickle of original-layout
    tensors under `prefix`; "" for the bare layout some releases use)."""
    import torch
    from safetensors.torch import load_file

    folder = Path(controlnet_dir)
    sd = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(f))
    config = json.loads((folder / "config.json").read_text())
    state = {prefix + k: v.contiguous() for k, v in _controlnet_to_ldm(sd, config).items()}
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(out))
    return out


KOHYA_UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                      "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
KOHYA_TE_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def kohya_factors(base_dir: str | Path, *, rank: int = 4, alpha: float = 2.0, seed: int = 0) -> dict:
    """{kohya module name: (down, up, alpha, module path, 'unet' | 'te')} for an SD 1.5 base: sd-scripts' LoRA on
    every transformer block's attention and feed-forward Linear layers and on the CLIP text encoder's layers."""
    import torch
    from transformers import CLIPTextConfig

    base_dir = Path(base_dir)
    unet = _unet(base_dir)
    te_cfg = CLIPTextConfig.from_pretrained(base_dir / "text_encoder")
    gen = torch.Generator().manual_seed(seed)
    factors = {}
    modules = dict(unet.named_modules())
    for name, module in modules.items():
        if any(name.endswith(t) for t in KOHYA_UNET_TARGETS) and ".transformer_blocks." in name:
            factors["lora_unet_" + name.replace(".", "_")] = (
                torch.randn(rank, module.in_features, generator=gen) / module.in_features**0.5,
                torch.randn(module.out_features, rank, generator=gen) * 0.5, alpha, name, "unet")
    width, ff = te_cfg.hidden_size, te_cfg.intermediate_size
    for layer in range(te_cfg.num_hidden_layers):
        for target in KOHYA_TE_TARGETS:
            n_in = ff if target == "mlp.fc2" else width
            n_out = ff if target == "mlp.fc1" else width
            path = f"text_model.encoder.layers.{layer}.{target}"
            factors["lora_te_" + path.replace(".", "_")] = (
                torch.randn(rank, n_in, generator=gen) / n_in**0.5, torch.randn(n_out, rank, generator=gen) * 0.5,
                alpha, path, "te")
    return factors


def build_kohya_lora(base_dir: str | Path, out_file: str | Path, *, rank: int = 4, alpha: float = 2.0,
                     seed: int = 0) -> Path:
    """A LoRA in kohya sd-scripts' layout for an SD 1.5 base (see kohya_factors), safetensors with ss_* metadata."""
    import torch
    from safetensors.torch import save_file

    state = {}
    for name, (down, up, a, _, _) in kohya_factors(base_dir, rank=rank, alpha=alpha, seed=seed).items():
        state[f"{name}.lora_down.weight"] = down.contiguous()
        state[f"{name}.lora_up.weight"] = up.contiguous()
        state[f"{name}.alpha"] = torch.tensor(float(a))
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                                         "ss_network_alpha": str(alpha), "ss_base_model_version": "sd_v1"})
    return out
