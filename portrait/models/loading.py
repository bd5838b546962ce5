"""Loading diffusion models from local files only, once per process.

    pipe = load_base("sd15")                                  # a manifest name, a diffusers folder or a .safetensors
    canny = load_controlnet("controlnet-canny")
    inpaint = inpaint_pipeline(pipe, [canny])                 # shares the base's components: no reload
    set_identity_lora(pipe, "user1/identity.safetensors")     # swap identities on the same cached base

A name is looked up in the manifest (`portrait models list`); anything else is a path. Single-file
checkpoints are read with a local diffusers config (shipped in portrait/models/configs/<arch>/, or the
`config` folder a models.toml entry names), so nothing is fetched from the hub: loading sets
HF_HUB_OFFLINE and passes local_files_only. Models are cached per (path, device, dtype).
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, ModelMissingError
from .device import pick_device
from .manifest import Manifest, ModelSpec, get_manifest

CONFIGS_DIR = Path(__file__).parent / "configs"
ARCHITECTURES = ("sd15", "sdxl")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")

_CACHE: dict[tuple, Any] = {}


def _dtype_kw(dt) -> dict:
    """diffusers >= 0.42 takes `dtype=` (and warns on `torch_dtype=`); older ones only `torch_dtype=`."""
    import diffusers
    from packaging.version import Version

    return {"dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype": dt}
_LOCK = threading.RLock()


@contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the duration (every from_pretrained also gets local_files_only=True).

    The libraries' own tqdm bars are switched off: our commands report loading through their own
    progress bar, and stray bars on stderr would corrupt `--json` output read from a merged stream."""
    _quiet_library_bars()
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _quiet_library_bars() -> None:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is part of the ml extra
        pass


def clear_cache() -> None:
    """Forget every loaded model (the next load reads the files again)."""
    with _LOCK:
        _CACHE.clear()


# -- resolving names and architectures --------------------------------------------------------------
def resolve_model(name_or_path: str | Path, manifest: Manifest | None = None) -> tuple[Path, ModelSpec | None]:
    """(path, manifest spec or None) for a manifest name or a path; ModelMissingError / ModelHashError."""
    manifest = manifest or get_manifest()
    name = str(name_or_path)
    if name in manifest.specs:
        return manifest.require(name), manifest.spec(name)
    path = Path(name).expanduser()
    if path.exists():
        return path, None
    raise ModelMissingError(
        name, path, "It is neither an existing file or folder nor a model name from `portrait models list` "
        f"(known diffusion models: {', '.join(s.name for s in manifest.all() if s.kind == 'diffusion_base')}). "
        "Give a diffusers folder, a single .safetensors checkpoint, or add it to models.toml.")


def _single_file_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    return list(sd.get("state_dict", sd).keys())


def detect_architecture(path: str | Path) -> str:
    """'sd15' or 'sdxl' for a diffusers folder (model_index.json) or an original-layout checkpoint (keys)."""
    path = Path(path)
    if path.is_dir():
        index = path / "model_index.json"
        if index.is_file():
            cls = json.loads(index.read_text()).get("_class_name", "")
            return "sdxl" if "XL" in cls else "sd15"
        cfg = path / "config.json"  # a ControlNet / UNet folder
        if cfg.is_file():
            return "sdxl" if json.loads(cfg.read_text()).get("addition_embed_type") == "text_time" else "sd15"
        raise ConfigError(f"{path}: not a diffusers folder (no model_index.json or config.json)")
    keys = _single_file_keys(path)
    if any(k.startswith("input_hint_block.") for k in keys):  # a ControlNet saved without its control_model. prefix
        return "sdxl" if any(k.startswith("label_emb.") for k in keys) else "sd15"
    if any(k.startswith("conditioner.embedders.1.") or k.endswith("label_emb.0.0.weight") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.transformer.") or k.startswith("control_model.") for k in keys):
        return "sd15"
    raise ConfigError(f"{path}: cannot tell the architecture from its keys; pass arch='sd15' or 'sdxl' "
                      "(or set architecture in models.toml). Supported: SD 1.5 and SDXL.")


def _config_folder(path: Path, spec: ModelSpec | None, arch: str | None, prefix: str = "") -> Path:
    """The local diffusers config that reads single file `path`: the models.toml `config` folder, a folder
    given as `arch`, or the shipped configs/<prefix><arch>/ (arch detected from the keys if not given)."""
    if spec is not None and spec.extra.get("config"):
        return Path(spec.extra["config"])
    if arch and Path(arch).is_dir():
        return Path(arch)
    arch = arch or detect_architecture(path)
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unsupported architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    return CONFIGS_DIR / f"{prefix}{arch}"


def base_unet_config(name_or_path: str | Path, manifest: Manifest | None = None) -> tuple[str, dict]:
    """(architecture, UNet config) of a base model without loading weights: from a diffusers folder's
    unet/config.json, or from the local config folder a single file is read with. ModelMissingError /
    ConfigError as load_base would raise them."""
    manifest = manifest or get_manifest()
    path, spec = resolve_model(name_or_path, manifest)
    folder = path if path.is_dir() else _config_folder(path, spec, spec.architecture if spec else None)
    arch = detect_architecture(folder)
    cfg = folder / "unet" / "config.json"
    return arch, (json.loads(cfg.read_text()) if cfg.is_file() else {})


def _pipeline_class(arch: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if arch not in ARCHITECTURES:
        raise ConfigError(f"unsupported architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    return StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()


def _clip_tokenizers(config: Path, arch: str, manifest: Manifest) -> dict:
    """Tokenizers to pass to from_single_file when the config folder carries no vocabulary."""
    from transformers import CLIPTokenizer

    kwargs = {}
    for sub, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        if sub == "tokenizer_2" and arch != "sdxl":
            continue
        if _has_tokenizer(config / sub):
            continue
        vocab = manifest.require("clip-tokenizer")
        kwargs[sub] = CLIPTokenizer.from_pretrained(str(vocab), pad_token=pad, model_max_length=77,
                                                    local_files_only=True)
    return kwargs


def _cached(key: tuple, make):
    """The model under `key`, made once (offline: the Hub is never asked) and kept for the process."""
    with _LOCK:
        if key not in _CACHE:
            with offline():
                _CACHE[key] = make()
        return _CACHE[key]


# -- base pipelines ----------------------------------------------------------------------------------
def load_base(name_or_path: str | Path, *, manifest: Manifest | None = None, device: str | None = None,
              dtype: str | None = None, arch: str | None = None):
    """The StableDiffusionPipeline / StableDiffusionXLPipeline for a manifest name or path, cached per
    (resolved path, device, dtype)."""
    manifest = manifest or get_manifest()
    path, spec = resolve_model(name_or_path, manifest)
    dev, dt = pick_device(device, dtype)
    config = spec.extra.get("config") if spec else None
    key = ("base", str(path.resolve()), str(dev), str(dt), str(arch), config)  # a single file read two ways is two models

    def make():
        pipe = _load_base(path, spec, arch or (spec.architecture if spec else None), dt, manifest)
        _fp16_vae(pipe, manifest, dt)
        pipe.to(dev)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return _cached(key, make)


FP16_VAE = "sdxl-vae-fp16-fix"


def _fp16_vae(pipe, manifest: Manifest, dt) -> None:
    """An SDXL base in fp16 takes the fp16-fix VAE where it is installed: SDXL's own VAE overflows in fp16, so
    its config says force_upcast and every decode (and training's encodes) runs it in fp32; the fix runs in
    fp16. vae_name(pipe) says which VAE the base has."""
    if not takes_fp16_vae("sdxl" if "text_encoder_2" in pipe.components else "sd15", dt, manifest):
        return
    import torch
    from diffusers import AutoencoderKL

    pipe.vae = AutoencoderKL.from_pretrained(str(manifest.require(FP16_VAE)), torch_dtype=torch.float16,
                                             local_files_only=True)  # (load_base's cache runs this offline)
    pipe.__dict__["_portrait_vae"] = FP16_VAE


def takes_fp16_vae(arch: str, dt, manifest: Manifest) -> bool:
    """Whether a base of `arch` loaded in torch dtype `dt` takes the fp16-fix VAE (_fp16_vae)."""
    import torch

    return dt == torch.float16 and arch == "sdxl" and manifest.available(FP16_VAE)


def planned_vae(name_or_path: str | Path, manifest: Manifest, device: str | None = None,
                dtype: str | None = None) -> str:
    """The VAE load_base will give this base on (device, dtype), as vae_name names it, without loading it:
    what a run records before its models load."""
    _, dt = pick_device(device, dtype)
    arch, _ = base_unet_config(name_or_path, manifest)
    return FP16_VAE if takes_fp16_vae(arch, dt, manifest) else "base"


def vae_name(pipe) -> str:
    """"sdxl-vae-fp16-fix" where _fp16_vae swapped it in, else "base" (the base model's own VAE)."""
    return pipe.__dict__.get("_portrait_vae", "base")


def _load_base(path: Path, spec: ModelSpec | None, arch: str | None, dt, manifest: Manifest):
    if path.is_dir():
        arch = detect_architecture(path)
        cls = _pipeline_class(arch)
        extra = {"safety_checker": None, "requires_safety_checker": False} if arch == "sd15" else {}
        return cls.from_pretrained(str(path), **_dtype_kw(dt), local_files_only=True, **extra)
    if path.suffix not in _SINGLE_FILE_SUFFIXES:
        raise ConfigError(f"{path}: a base model is a diffusers folder or a .safetensors / .ckpt file")
    config = _config_folder(path, spec, arch)
    arch = detect_architecture(config)
    cls = _pipeline_class(arch)
    kwargs = _clip_tokenizers(config, arch, manifest)
    if arch == "sd15":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return cls.from_single_file(str(path), config=str(config), **_dtype_kw(dt), local_files_only=True, **kwargs)


# -- ControlNets -------------------------------------------------------------------------------------
def load_controlnet(name_or_path: str | Path, *, manifest: Manifest | None = None, device: str | None = None,
                    dtype: str | None = None):
    """A ControlNetModel from a manifest name, a diffusers folder or a single file; cached likewise."""
    from diffusers import ControlNetModel

    manifest = manifest or get_manifest()
    path, spec = resolve_model(name_or_path, manifest)
    dev, dt = pick_device(device, dtype)
    key = ("controlnet", str(path.resolve()), str(dev), str(dt))

    def make():
        if path.is_dir():
            net = ControlNetModel.from_pretrained(str(path), **_dtype_kw(dt), local_files_only=True)
        else:
            config = _config_folder(path, spec, spec.architecture if spec else None, "controlnet-")
            net = ControlNetModel.from_single_file(str(path), config=str(config), **_dtype_kw(dt),
                                                   local_files_only=True)
        return net.to(dev)

    return _cached(key, make)


# -- CLIP image encoder (FaceID-Plus) ----------------------------------------------------------------
IMAGE_ENCODER = "clip-vision-vit-h"


def load_image_encoder(name_or_path: str | Path = IMAGE_ENCODER, *, manifest: Manifest | None = None,
                       device: str | None = None, dtype: str | None = None):
    """A CLIPVisionModelWithProjection folder (h94/IP-Adapter models/image_encoder); cached likewise."""
    from transformers import CLIPVisionModelWithProjection

    manifest = manifest or get_manifest()
    path, _ = resolve_model(name_or_path, manifest)
    dev, dt = pick_device(device, dtype)
    key = ("image_encoder", str(path.resolve()), str(dev), str(dt))
    return _cached(key, lambda: CLIPVisionModelWithProjection.from_pretrained(
        str(path), dtype=dt, local_files_only=True).to(dev).eval())


# -- derived pipelines (share the base's modules) ----------------------------------------------------
def is_sdxl(pipe) -> bool:
    return "text_encoder_2" in pipe.components


def _derived(base, kind: str, controlnets: list, plain: tuple, with_net: tuple):
    """A pipeline of `kind` built on the base's modules (no weights reloaded), cached on the base by the
    ControlNets' identities: `plain` (SD, SDXL) classes without ControlNets, `with_net` with them (one
    net as is, several as a MultiControlNetModel)."""
    from diffusers import MultiControlNetModel

    derived = base.__dict__.setdefault("_portrait_derived", {})
    key = (kind, tuple(id(c) for c in controlnets))
    if key in derived:
        return derived[key][0]
    xl = int(is_sdxl(base))
    # from_pipe casts every shared module to its dtype argument, float32 by default: pass the base's own, or
    # an fp16 / bf16 base (--dtype, or any GPU) silently becomes float32 on its first call.
    keep = _dtype_kw(base.unet.dtype)
    if not controlnets:
        pipe = plain[xl].from_pipe(base, **keep)
    else:
        net = controlnets[0] if len(controlnets) == 1 else MultiControlNetModel(controlnets)
        pipe = with_net[xl].from_pipe(base, controlnet=net, **keep)
    pipe.set_progress_bar_config(disable=True)
    derived[key] = (pipe, controlnets)  # keep the nets alive so their ids stay unique
    return pipe


def text2img_pipeline(base, controlnets: list | tuple = (), *, own: bool = False):
    """The text-to-image pipeline: the base itself (load_base returns text2img pipelines), or with
    ControlNets a (SDXL) ControlNet pipeline on the base's modules. `own=True` gives a pipeline object of
    its own even without ControlNets (same modules), whose scheduler a caller may swap without touching
    the base's."""
    from diffusers import (StableDiffusionControlNetPipeline, StableDiffusionPipeline,
                           StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline)

    if not controlnets and not own:
        return base
    return _derived(base, "text2img", list(controlnets), (StableDiffusionPipeline, StableDiffusionXLPipeline),
                    (StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline))


def inpaint_pipeline(base, controlnets: list | tuple = ()):
    """An SD / SDXL (ControlNet) inpaint pipeline built on the base's modules (no weights are reloaded).

    One ControlNet is passed as is; several as a MultiControlNetModel; none gives the plain inpaint
    pipeline. Derived pipelines are cached on the base, keyed by the ControlNets' identities.
    """
    from diffusers import (StableDiffusionControlNetInpaintPipeline, StableDiffusionInpaintPipeline,
                           StableDiffusionXLControlNetInpaintPipeline, StableDiffusionXLInpaintPipeline)

    return _derived(base, "inpaint", list(controlnets), (StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline),
                    (StableDiffusionControlNetInpaintPipeline, StableDiffusionXLControlNetInpaintPipeline))


# -- LoRAs -------------------------------------------------------------------------------------------
def _lora_key(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise ModelMissingError(p.name, p, "The LoRA file does not exist: train one with `portrait train` or "
                                "check the path.")
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def set_identity_lora(pipe, lora_path: str | Path | None, weight: float = 1.0, style_lora: str | Path | None = None,
                      style_weight: float = 0.0) -> None:
    """Load, replace or (None) unload the identity and style LoRAs on `pipe` without reloading the base.

    Adapters are named "identity" and "style" and combined with set_adapters. The state lives on the
    UNet, so pipelines derived from the same base (inpaint_pipeline) see the same LoRAs. A LoRA that an
    IP-Adapter file brought (FaceID's `faceid_0`, loaded by diffusers' load_ip_adapter) stays active beside
    them: see activate_loras.
    """
    loaded: dict[str, str] = pipe.unet.__dict__.setdefault("_portrait_loras", {})
    wanted = {"identity": lora_path, "style": style_lora if style_weight else None}
    with offline():
        for name, path in wanted.items():
            key = _lora_key(path) if path is not None else None
            if loaded.get(name) == key:
                continue
            if name in loaded:
                pipe.delete_adapters(name)
                del loaded[name]
            if path is not None:
                pipe.load_lora_weights(str(path), adapter_name=name)
                loaded[name] = key
    pipe.unet.__dict__["_portrait_lora_weights"] = {"identity": weight, "style": style_weight}
    activate_loras(pipe)


IP_ADAPTER_LORA_PREFIX = "faceid_"  # diffusers names an IP-Adapter file's own LoRA faceid_<index>


def ip_adapter_loras(pipe) -> list[str]:
    """The LoRAs on the UNet that came with an IP-Adapter file (FaceID's faceid_0)."""
    return [n for n in getattr(pipe.unet, "peft_config", {}) or {} if n.startswith(IP_ADAPTER_LORA_PREFIX)]


def activate_loras(pipe) -> None:
    """Make every loaded LoRA active at its weight: identity and style at the weights set_identity_lora was
    given, an IP-Adapter's own LoRA (faceid_0) at 1.0 as diffusers loads it. diffusers' set_adapters (and
    load_ip_adapter, which calls it with faceid_0 alone) switches off every adapter not named, so this runs
    after any of them changes."""
    loaded = pipe.unet.__dict__.get("_portrait_loras", {})
    weights = pipe.unet.__dict__.get("_portrait_lora_weights", {})
    names = [n for n in ("identity", "style") if n in loaded] + ip_adapter_loras(pipe)
    if names:
        pipe.set_adapters(names, adapter_weights=[float(weights.get(n, 1.0)) for n in names])
