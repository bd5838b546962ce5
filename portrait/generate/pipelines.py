"""Inpaint pipelines and what loads into them: the base + ControlNets (InpaintModels), the pipeline per
ControlNet set, and the identity adapters (IP-Adapter FaceID, InstantID's adapter and IdentityNet).

    models = InpaintModels.load("sd15", ["canny", "tile"])   # base + ControlNets named in the manifest
    pipe = models.pipeline(("canny", "tile"))                 # shares the base's modules: no weights copied
    load_faceid_adapter(pipe, "ip-adapter-faceid_sd15.safetensors", 128)
    pipe(..., ip_adapter_image_embeds=faceid_embeds(ident, batch=1, guidance=True))

A face adapter takes the embeddings of the recogniser it was trained on (portrait.models.adapters): FaceID,
FaceID-Plus and PlusV2 buffalo_l's (`arcface-buffalo`, unit length, as tencent-ailab's ip_adapter_faceid
feeds `normed_embedding`), InstantID antelopev2's (`arcface-antelopev2`, raw, as InstantX's pipeline feeds
`embedding`). Another recogniser's identity, or another size, raises ConfigError naming both.

A released FaceID file carries its own LoRA, which diffusers' load_ip_adapter loads as the adapter
`faceid_0`: it stays active beside the identity and style LoRAs (loading.activate_loras) and goes with the
adapter when it is unloaded. FaceID-Plus / PlusV2 files also read CLIP ViT-H hidden states of the face
crop (insightface's norm_crop at 224 px, `faceid_plus_clip_embeds`); PlusV2 adds the id tokens back
(`shortcut`).

InstantID (SDXL) is built from diffusers parts: its `ip-adapter` file loads natively through
`load_ip_adapter` (a perceiver resampler, the IP-Adapter Plus layout) and its IdentityNet is a plain
`ControlNetModel` on a 5-keypoint drawing; the one thing diffusers' pipelines do not do is give the
ControlNet the projected face tokens instead of the text embeddings, which `identitynet_hook`
adds with a forward pre-hook on that ControlNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, PortraitError
from ..identity.face_embedding import FaceIdentity
from ..models import loading
from ..models.adapters import adapter_id_dim, adapter_token_dim, is_resampler_adapter


# Which manifest model serves each control, per base architecture (overridable per InpaintModels).
CONTROLNET_MODELS_BY_ARCH = {
    "sd15": {"canny": "controlnet-canny", "openpose": "controlnet-openpose", "color": "controlnet-color",
             "tile": "controlnet-tile"},
    # No SDXL colour ControlNet has a public release: an SDXL template sets color = 0 (the SDXL recipe runs none).
    "sdxl": {"canny": "controlnet-canny-sdxl", "openpose": "controlnet-openpose-sdxl",
             "tile": "controlnet-tile-sdxl"},
}
CONTROLNET_MODELS = CONTROLNET_MODELS_BY_ARCH["sd15"]  # the SD 1.5 names (kept for callers of the old table)


def controlnet_model(arch: str, control: str, overrides: Mapping[str, str] | None = None) -> str:
    """The manifest name (or path) of the ControlNet serving `control` on an `arch` base: `overrides` first,
    then CONTROLNET_MODELS_BY_ARCH; a ConfigError when neither knows one."""
    if overrides and control in overrides:
        return overrides[control]
    names = CONTROLNET_MODELS_BY_ARCH.get(arch, {})
    if control not in names:
        raise ConfigError(f"no {arch} ControlNet is known for control '{control}': pass controlnet_models="
                          f"{{'{control}': NAME_OR_PATH}} or set that control's scale to 0 in the template")
    return names[control]


WORKING_SIZE = {"sd15": 512, "sdxl": 1024}
# Sampler name -> (diffusers scheduler class, its extra config), for templates (--scheduler) and styles.
SAMPLERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpm++2m-sde-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
# The two-pass recipe's sampler per base when none is asked for: EasyPhoto's (easyphoto_infer.py: DPM++ 2M
# SDE Karras on SD 1.5; Euler on SDXL, as InstantX's pipeline runs too).
DEFAULT_SAMPLER = {"sd15": "dpm++2m-sde-karras", "sdxl": "euler"}


def make_scheduler(sampler: str, config):
    """The diffusers scheduler for `sampler`, from the base's scheduler config."""
    import diffusers

    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    name, extra = SAMPLERS[sampler]
    return getattr(diffusers, name).from_config(config, **extra)
# InstantID (SDXL): the IdentityNet ControlNet and the image-prompt adapter, by manifest name.
INSTANTID_MODELS = {"controlnet": "instantid-controlnet", "adapter": "instantid-adapter"}
IDENTITYNET = "identitynet"  # the pass-1 control name InstantID's IdentityNet runs under


def _quiet_prompt_notice() -> None:
    """Drop diffusers' "You have N ControlNets and you have passed M prompts. The conditionings will be
    fixed across the prompts." (logged on every multi-ControlNet call with a list of prompts: our control
    images are per image already), and nothing else those loggers say."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            return not ("ControlNets and you have passed" in msg and "conditionings will be fixed" in msg)

    for name in ("diffusers.pipelines.controlnet.pipeline_controlnet_inpaint",
                 "diffusers.pipelines.controlnet.pipeline_controlnet_inpaint_sd_xl"):
        logger = logging.getLogger(name)
        if not any(type(f).__name__ == "_Drop" for f in logger.filters):
            logger.addFilter(_Drop())


# -- models -----------------------------------------------------------------------------------------

def _architecture(unet) -> str:
    return "sdxl" if getattr(unet.config, "addition_embed_type", None) == "text_time" else "sd15"


class InpaintModels:
    """A base model and ControlNets by control name; inpaint pipelines are built per ControlNet set
    from the base's shared components (no weights copied) and cached, so one load serves every job."""

    def __init__(self, base, controlnets: Mapping[str, Any], *, faceid_adapter: str | Path | None = None,
                 identitynet=None, instantid_adapter: str | Path | None = None, image_encoder=None):
        from ..models.adapters import FACEID_PLUS, adapter_kind, plus_shortcut

        self.base = base
        self.controlnets = dict(controlnets)
        self.faceid_adapter = Path(faceid_adapter) if faceid_adapter else None
        self.faceid_kind = adapter_kind(self.faceid_adapter) if self.faceid_adapter else None
        if self.faceid_kind == FACEID_PLUS and image_encoder is None:
            raise ConfigError(f"the FaceID-Plus adapter {self.faceid_adapter.name} reads the face crop with a CLIP "
                              f"image encoder: load one ({loading.IMAGE_ENCODER}) and pass image_encoder=")
        self.image_encoder = image_encoder
        self.faceid_shortcut = self.faceid_kind == FACEID_PLUS and plus_shortcut(self.faceid_adapter)
        self.identitynet = identitynet
        self.instantid_adapter = Path(instantid_adapter) if instantid_adapter else None
        self._pipes: dict[tuple[str, ...], Any] = {}
        self._loader: dict | None = None  # set by load(): how ensure_controlnets loads more nets
        self.arch = getattr(base, "arch", None) or _architecture(self.components["unet"])
        unet_dim = self.components["unet"].config.cross_attention_dim
        for n, net in self.controlnets.items():
            self._check_controlnet(n, net)
        if (identitynet is None) != (instantid_adapter is None):
            raise ConfigError("InstantID needs both its IdentityNet ControlNet and its ip-adapter file")
        if identitynet is not None:
            self._check_instantid(unet_dim)

    def _check_controlnet(self, name: str, net) -> None:
        """An SD 1.5 ControlNet cannot steer an SDXL UNet, nor back."""
        unet_dim = self.components["unet"].config.cross_attention_dim
        net_dim = getattr(getattr(net, "config", None), "cross_attention_dim", unet_dim)
        if net_dim != unet_dim:
            raise ConfigError(f"ControlNet '{name}' attends to {net_dim}-d text embeddings but the {self.arch} base "
                              f"to {unet_dim}-d: use the '{name}' ControlNet made for {self.arch}")

    def ensure_controlnets(self, controls: Sequence[str]) -> None:
        """Load the ControlNets of `controls` not loaded yet (only for models made by `load`, which knows
        where they live); a ConfigError otherwise, a ModelMissingError naming a missing model."""
        missing = [c for c in controls if c not in self.controlnets]
        if not missing:
            return
        if self._loader is None:
            raise ConfigError(f"no ControlNet loaded for control(s) {missing}; loaded: {sorted(self.controlnets)}")
        kw = {k: self._loader[k] for k in ("manifest", "device", "dtype")}
        for c in missing:
            net = loading.load_controlnet(controlnet_model(self.arch, c, self._loader["names"]), **kw)
            self._check_controlnet(c, net)
            self.controlnets[c] = net

    def _check_instantid(self, unet_dim: int) -> None:
        if self.arch != "sdxl":
            raise ConfigError(f"InstantID is built for SDXL; the base model is {self.arch}")
        check_instantid_adapter(self.instantid_adapter, unet_dim)
        cfg = self.identitynet.config
        if cfg.cross_attention_dim != unet_dim or getattr(cfg, "addition_embed_type", None) != "text_time":
            raise ConfigError(f"the InstantID IdentityNet is not an SDXL ControlNet for this base (cross-attention "
                              f"{cfg.cross_attention_dim}-d, the base's {unet_dim}-d)")

    def clear_identity(self) -> None:
        """Take every identity off the shared UNet: the identity / style LoRAs and any IP-Adapter (FaceID,
        InstantID). A worker calls this between jobs, so nothing of one person reaches the next job."""
        base = self.base if hasattr(self.base, "unet") else None
        if base is None:
            return
        if getattr(base.unet, "_portrait_loras", None):
            loading.set_identity_lora(base, None)
        unload_faceid_adapter(base)

    def reads_face_crop(self, identity) -> bool:
        """True when painting `identity` (template_inpaint.Sitter) needs the user's face crop: a face
        embedding painted by the loaded FaceID-Plus adapter, which reads CLIP hidden states of that crop."""
        return (identity.face is not None and not identity.instantid and self.image_encoder is not None
                and self.faceid_kind == "faceid-plus")

    @property
    def has_instantid(self) -> bool:
        return self.identitynet is not None

    @classmethod
    def load(cls, base: str | Path = "sd15", controlnets: Sequence[str] = ("canny", "openpose", "color", "tile"), *,
             controlnet_models: Mapping[str, str] | None = None, manifest=None, device=None, dtype=None,
             faceid_adapter: str | Path | None = None, instantid: bool = False,
             instantid_models: Mapping[str, str] | None = None) -> "InpaintModels":
        """Load the base and the named controls' ControlNets (manifest names or paths) through M's loaders.

        Each control's ControlNet is the manifest entry for the base's architecture
        (CONTROLNET_MODELS_BY_ARCH: "controlnet-canny" for SD 1.5, "controlnet-canny-sdxl" for SDXL, ...)
        unless `controlnet_models` names another; a missing one raises ModelMissingError naming it.

        instantid=True also loads InstantID (SDXL): INSTANTID_MODELS' "instantid-controlnet" (IdentityNet)
        and "instantid-adapter" from the manifest (or the names / paths in `instantid_models`); a missing
        one raises ModelMissingError naming it, a non-SDXL base or adapter a ConfigError.
        """
        b = loading.load_base(str(base), manifest=manifest, device=device, dtype=dtype)
        arch = _architecture(b.unet) if hasattr(b, "unet") else "sd15"
        overrides = dict(controlnet_models or {})
        names = {c: controlnet_model(arch, c, overrides) for c in controlnets}
        identitynet = adapter = encoder = None
        if faceid_adapter is not None:
            from ..models.adapters import FACEID_PLUS, adapter_kind

            if adapter_kind(faceid_adapter) == FACEID_PLUS:  # a missing encoder: ModelMissingError naming it
                encoder = loading.load_image_encoder(manifest=manifest, device=device, dtype=dtype)
        if instantid:
            iid = {**INSTANTID_MODELS, **(instantid_models or {})}
            if arch != "sdxl":
                raise ConfigError(f"InstantID is built for SDXL; the base model '{base}' is {arch}")
            adapter, _ = loading.resolve_model(iid["adapter"], manifest)
            identitynet = loading.load_controlnet(iid["controlnet"], manifest=manifest, device=device, dtype=dtype)
        nets = {c: loading.load_controlnet(names[c], manifest=manifest, device=device, dtype=dtype) for c in controlnets}
        models = cls(b, nets, faceid_adapter=faceid_adapter, identitynet=identitynet, instantid_adapter=adapter,
                     image_encoder=encoder)
        models._loader = {"manifest": manifest, "device": device, "dtype": dtype, "names": overrides}
        return models

    @classmethod
    def for_engine(cls, base: str | Path, engine: str | None, controlnets: Sequence[str] = (), *, manifest,
                   device=None, dtype=None) -> "InpaintModels":
        """The models an identity engine paints with: the base, the named controls' ControlNets, and FaceID's
        adapter (`engine` "faceid", from the manifest) or InstantID's two files ("instantid"); a LoRA
        (engine "lora" or None) needs nothing more. What `run`, `generate` and `create` all load; FaceID is
        FaceID-PlusV2 where its file and the CLIP image encoder are present (faceid_adapter_name)."""
        faceid = None
        if engine == "faceid":
            arch, _ = loading.base_unet_config(base, manifest)  # a missing base: ModelMissingError naming it
            faceid = manifest.require(faceid_adapter_name(manifest, arch))
        return cls.load(base, tuple(controlnets), manifest=manifest, device=device, dtype=dtype,
                        faceid_adapter=faceid, instantid=engine == "instantid")

    @property
    def components(self) -> dict:
        return self.base.components if hasattr(self.base, "components") else dict(self.base)

    @property
    def device(self):
        return self.components["unet"].device

    @property
    def dtype(self):
        return self.components["unet"].dtype

    def _nets(self, names: Sequence[str]) -> list:
        loaded = {**self.controlnets, **({IDENTITYNET: self.identitynet} if self.has_instantid else {})}
        missing = [n for n in names if n not in loaded]
        if missing:
            raise ConfigError(f"no ControlNet loaded for control(s) {missing}; loaded: {sorted(loaded)}")
        return [loaded[n] for n in names]

    def pipeline(self, names: Sequence[str]):
        """The inpaint pipeline running exactly the ControlNets `names` (in that order)."""
        key = tuple(names)
        if key not in self._pipes:
            self._pipes[key] = loading.inpaint_pipeline(self.base, self._nets(key))
        return self._pipes[key]

    def text2img(self, names: Sequence[str]):
        """The text-to-image pipeline running exactly the ControlNets `names`: an object of its own on the
        base's modules (text_to_image sets its sampler per call without touching the inpaint pipelines')."""
        return loading.text2img_pipeline(self.base, self._nets(tuple(names)), own=True)


# -- IP-Adapter FaceID -----------------------------------------------------------------------------

FACEID_PLUS_NAME = "ip-adapter-faceid-plusv2"  # SD 1.5; it also reads the face crop through loading.IMAGE_ENCODER


def faceid_adapter_name(manifest, arch: str) -> str:
    """Which FaceID file paints a face embedding: FaceID-PlusV2 (the face's id tokens and its CLIP crop,
    tencent-ailab's stronger likeness) on SD 1.5 when it and the CLIP image encoder are present and
    allowed, else plain FaceID."""
    specs = getattr(manifest, "specs", {})
    if arch == "sd15" and all(n in specs and manifest.available(n) for n in (FACEID_PLUS_NAME, loading.IMAGE_ENCODER)):
        return FACEID_PLUS_NAME
    return "ip-adapter-faceid"

def check_adapter_dim(path: str | Path, identity_dim: int, engine: str = "") -> int:
    dim = adapter_id_dim(path)
    if dim != identity_dim:
        by = f" from the '{engine}' face engine" if engine else ""
        raise ConfigError(
            f"the IP-Adapter {path} expects {dim}-d face embeddings but the identity has {identity_dim}-d "
            f"embeddings{by}; use the face engine the adapter was trained for (512: arcface, 128: dlib-resnet)")
    return dim


def load_faceid_adapter(pipe, adapter_path: str | Path, identity_dim: int | None = None, scale: float = 1.0,
                        engine: str = "") -> None:
    """Load an IP-Adapter FaceID (-Plus, -PlusV2) or InstantID adapter file into `pipe` with diffusers' own
    loader; `engine` (the identity's face recogniser) must be the one the file was trained on.

    Build ControlNets from the UNet before this (DESIGN.md section 4). Idempotent per path. The file's own
    LoRA (faceid_0) is active afterwards beside the identity and style LoRAs.
    """
    from ..models.adapters import check_embedder

    path = Path(adapter_path)
    if not path.is_file():
        raise PortraitError(f"IP-Adapter file {path} does not exist")
    if identity_dim is not None:
        check_adapter_dim(path, identity_dim, engine)
    if engine:
        check_embedder(path, engine)
    # Pipelines built from one base share its UNet, which is what the adapter changes: track it there.
    loaded = getattr(pipe.unet, "_portrait_ip_adapter", None)
    if loaded != str(path):
        if loaded is not None:
            unload_faceid_adapter(pipe)
        with loading.offline():
            pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None)
        pipe.unet._portrait_ip_adapter = str(path)
        loading.activate_loras(pipe)  # load_ip_adapter left only faceid_0 active
    pipe.set_ip_adapter_scale(scale)


def unload_faceid_adapter(pipe) -> None:
    """Remove a loaded IP-Adapter, and the LoRA it brought (faceid_0), from the pipeline's (shared) UNet;
    no-op when none is loaded."""
    if getattr(pipe.unet, "_portrait_ip_adapter", None) is not None:
        pipe.unload_ip_adapter()
        brought = loading.ip_adapter_loras(pipe)
        if brought:
            pipe.delete_adapters(brought)
        pipe.unet._portrait_ip_adapter = None
        loading.activate_loras(pipe)


def faceid_plus_clip_embeds(image_encoder, ref_rgb: np.ndarray, ref_face):
    """FaceID-Plus's second input: CLIP hidden states (the penultimate layer) of the user's face aligned as
    insightface's norm_crop(image, kps, 224) makes it, and the unconditional ones of an all-zero image (as
    tencent-ailab's reference makes them): (cond, uncond), each (1, 1, tokens, hidden)."""
    import torch
    from transformers import CLIPImageProcessor

    from ..faces.align import align_face

    crop, _ = align_face(ref_rgb, np.asarray(ref_face.landmarks5), 224, border="constant", interpolation="linear")
    size = int(image_encoder.config.image_size)
    pixels = CLIPImageProcessor(size=size, crop_size=size)(images=crop, return_tensors="pt").pixel_values
    pixels = pixels.to(image_encoder.device, image_encoder.dtype)
    with torch.no_grad():
        cond = image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
        uncond = image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    return cond[:, None], uncond[:, None]


def faceid_plus_batch(pair, batch: int, guidance: bool):
    """(cond, uncond) from faceid_plus_clip_embeds as one call's clip_embeds: (2B | B, 1, tokens, hidden),
    unconditional half first (the order of ip_adapter_image_embeds)."""
    import torch

    cond, uncond = pair

    def rows(x):  # one pair for every image, or one row per image already
        return x if x.shape[0] == batch else x.repeat(batch, 1, 1, 1)

    embeds = rows(cond)
    return torch.cat([rows(uncond), embeds]) if guidance else embeds


def set_faceid_plus_inputs(pipe, clip_embeds, shortcut: bool) -> None:
    """Give the loaded FaceID-Plus projection its CLIP input and PlusV2's shortcut (diffusers reads both from
    the projection layer, not from the pipeline call)."""
    layer = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    layer.clip_embeds = clip_embeds.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
    layer.shortcut = bool(shortcut)
    layer.shortcut_scale = 1.0


def faceid_embeds(identity: FaceIdentity | np.ndarray, *, batch: int = 1, guidance: bool = True,
                  normalized: bool = True, device=None, dtype=None) -> list:
    """`ip_adapter_image_embeds` for a pipeline call: [(2 x batch | batch, 1, dim)] (zeros = unconditional)."""
    import torch

    vec = identity.vector(normalized) if isinstance(identity, FaceIdentity) else np.asarray(identity, np.float32)
    emb = torch.from_numpy(np.ascontiguousarray(vec, np.float32)).reshape(1, 1, -1).repeat(batch, 1, 1)
    if guidance:
        emb = torch.cat([torch.zeros_like(emb), emb])
    return [emb.to(device=device, dtype=dtype)]



def check_instantid_adapter(path: str | Path, cross_attention_dim: int, identity_dim: int | None = None,
                            engine: str = "") -> None:
    """ConfigError unless `path` is an InstantID adapter for a UNet with this cross-attention size
    (2048 for SDXL) and, when given, for `identity_dim`-d face embeddings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"InstantID adapter {path} does not exist")
    if not is_resampler_adapter(path):
        raise ConfigError(f"{path} is not an InstantID adapter (no image_proj.latents: expected InstantID's "
                          "ip-adapter with a perceiver resampler)")
    dim = adapter_token_dim(path)
    if dim != cross_attention_dim:
        arch = {768: "SD 1.5", 2048: "SDXL"}
        raise ConfigError(
            f"the InstantID adapter {path} projects to {dim}-d tokens ({arch.get(dim, 'another base')}) but the base "
            f"model's UNet attends to {cross_attention_dim}-d ({arch.get(cross_attention_dim, 'this base')}); "
            "use the adapter made for this base (InstantID is SDXL)")
    if identity_dim is not None:
        check_adapter_dim(path, identity_dim, engine)


def instantid_embeds(identity: FaceIdentity | np.ndarray, *, batch: int = 1, guidance: bool = True,
                     device=None, dtype=None) -> list:
    """`ip_adapter_image_embeds` for InstantID's resampler adapter: [(2 x batch | batch, 1, 1, dim)], one
    face token per image, the raw (unnormalised, as InstantID was trained) embedding; zeros unconditional."""
    import torch

    vec = identity.vector(normalized=False) if isinstance(identity, FaceIdentity) else np.asarray(identity, np.float32)
    emb = torch.from_numpy(np.ascontiguousarray(vec, np.float32)).reshape(1, 1, 1, -1).repeat(batch, 1, 1, 1)
    if guidance:
        emb = torch.cat([torch.zeros_like(emb), emb])
    return [emb.to(device=device, dtype=dtype)]

def identity_inputs(models: "InpaintModels", pipe, identity, *, batch: int, guidance: bool, plus=None,
                    style_lora: str | Path | None = None, style_weight: float = 0.0) -> dict:
    """Put `identity` (template_inpaint.Sitter: a LoRA, a face embedding painted by FaceID or InstantID's
    adapter, or both) on `pipe` for one call of `batch` images, with the style LoRA beside it; returns the
    call's extra keyword arguments (the adapter's `ip_adapter_image_embeds`). A face embedding's adapter is
    unloaded when the identity has none. `plus`: FaceID-Plus's (cond, uncond) CLIP pair of the face crop."""
    loading.set_identity_lora(pipe, identity.lora, weight=identity.lora_weight, style_lora=style_lora,
                              style_weight=style_weight)
    kwargs: dict = {}
    # One row (two with guidance): diffusers' pipelines repeat given ip_adapter_image_embeds for every image
    # of the call (prepare_ip_adapter_image_embeds' batch_size x num_images_per_prompt), so B rows would
    # become B x B, and the adapter would read the unconditional zeros for half of the conditional images.
    on = {"batch": 1, "guidance": guidance, "device": models.device, "dtype": models.dtype}
    if identity.instantid:
        load_faceid_adapter(pipe, models.instantid_adapter, identity.face.dim, identity.faceid_scale,
                            identity.face.engine)
        kwargs["ip_adapter_image_embeds"] = instantid_embeds(identity.face, **on)
    elif identity.face is not None:
        load_faceid_adapter(pipe, models.faceid_adapter, identity.face.dim, identity.faceid_scale, identity.face.engine)
        kwargs["ip_adapter_image_embeds"] = faceid_embeds(identity.face, **on)
        if plus is not None:
            set_faceid_plus_inputs(pipe, faceid_plus_batch(plus, batch, guidance), models.faceid_shortcut)
    else:
        unload_faceid_adapter(pipe)
    return kwargs


# -- InstantID's IdentityNet from diffusers parts ---------------------------------------------------

def identity_tokens(unet, image_embeds: list):
    """The face tokens the UNet's IP-Adapter projection makes from `image_embeds` (one adapter)."""
    import torch

    with torch.no_grad():
        tokens = unet.encoder_hid_proj(image_embeds)
    return tokens[0].reshape(tokens[0].shape[0], -1, tokens[0].shape[-1])


def identitynet_hook(controlnet, tokens):
    """Make `controlnet` (InstantID's IdentityNet) attend to the face `tokens` instead of the prompt.

    Returns the hook handle; call `.remove()` when done. The batch of `tokens` must be the
    ControlNet's (2 x batch with classifier-free guidance, unconditional first).
    """

    def swap(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = tokens.to(device=sample.device, dtype=sample.dtype)
        if t.shape[0] != sample.shape[0]:
            t = t.repeat_interleave(sample.shape[0] // t.shape[0], dim=0)
        kwargs["encoder_hidden_states"] = t
        return args, kwargs

    return controlnet.register_forward_pre_hook(swap, with_kwargs=True)

