"""Tiny diffusion models for the generation tests, built once per test session (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_BUILT: dict[str, dict] = {}


def tiny_models(root: Path) -> dict:
    """Tiny SD 1.5 + four ControlNets + a dlib-sized FaceID adapter + a random identity LoRA under `root`."""
    key = str(root)
    if key in _BUILT:
        return _BUILT[key]
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from portrait.models import tiny

    root.mkdir(parents=True, exist_ok=True)
    base = tiny.build_tiny_sd15(root / "sd15")
    nets = {c: tiny.build_tiny_controlnet(base, root / "controlnet" / c, seed=10 + i)
            for i, c in enumerate(("canny", "openpose", "color", "tile"))}
    faceid = tiny.build_tiny_ip_adapter_faceid(base, root / "faceid-128.safetensors", id_dim=128)
    faceid512 = tiny.build_tiny_ip_adapter_faceid(base, root / "faceid-512.safetensors", id_dim=512)
    # A random identity LoRA: peft adapters on the attention projections with non-zero up weights.
    unet = StableDiffusionPipeline.from_pretrained(root / "sd15").unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=gen) * 0.3 for k, v in get_peft_model_state_dict(unet).items()}
    StableDiffusionPipeline.save_lora_weights(root, unet_lora_layers=convert_state_dict_to_diffusers(state),
                                              weight_name="identity.safetensors")
    _BUILT[key] = {"root": root, "base": base, "controlnets": nets, "faceid": faceid, "faceid512": faceid512,
                   "lora": root / "identity.safetensors"}
    return _BUILT[key]


def load_models(paths: dict, faceid: bool = False):
    """InpaintModels over the tiny files, loaded with plain diffusers (no manifest)."""
    from diffusers import ControlNetModel, StableDiffusionPipeline

    from portrait.generate.pipelines import InpaintModels

    base = StableDiffusionPipeline.from_pretrained(paths["base"], safety_checker=None, requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    nets = {c: ControlNetModel.from_pretrained(p) for c, p in paths["controlnets"].items()}
    return InpaintModels(base, nets, faceid_adapter=paths["faceid"] if faceid else None)


def small_template(astronaut: np.ndarray, face_analysis, size: int = 256):
    """The astronaut portrait at `size` px and its face (found at full size, then scaled)."""
    import cv2

    face = face_analysis.analyze(astronaut)[0]
    s = size / astronaut.shape[0]
    return cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA), face.scaled(s)
