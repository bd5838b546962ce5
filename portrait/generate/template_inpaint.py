"""Two-pass template inpainting: the user's identity painted into a template's face (EasyPhoto's recipe).

    models = InpaintModels.load("sd15")                      # base + ControlNets named in the manifest
    inpaint = TemplateInpaint(models)
    [result] = inpaint(InpaintJob(template_rgb, template_face, prompt="..."),
                       identity=Identity.from_path("identity.safetensors"), ref_rgb=ref, ref_face=face)

Per job: crop around the template face (face box x 3, SD 1.5 512 / SDXL 1024 px) → fusion #1 →
5-point paste ("replaced image") → pass 1: ControlNet inpaint of the face mask (canny from the fused
image, face keypoints from the replaced one, colour map), identity LoRA (+ style LoRA) or FaceID →
colour transfer to the template → fusion #2 → pass 2: tile + canny inpaint of the ring around the
face edge at low denoise → paste back into the full template through the mask: pixels outside it
are the template's, bit for bit.

A ControlNet with scale 0 is dropped, not run (diffusers still runs a zero-scaled net). Pipelines
are built once per ControlNet set from the base's shared components and reused across jobs and
templates; jobs whose pass settings match run in one batched call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, PortraitError
from ..faces.types import Face
from ..progress import ProgressCallback, report
from . import controls

# Which manifest model serves each control, per base architecture (overridable per InpaintModels).
CONTROLNET_MODELS_BY_ARCH = {
    "sd15": {"canny": "controlnet-canny", "openpose": "controlnet-openpose", "color": "controlnet-color",
             "tile": "controlnet-tile"},
    "sdxl": {"canny": "controlnet-canny-sdxl", "openpose": "controlnet-openpose-sdxl", "color": "controlnet-color-sdxl",
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
# InstantID (SDXL): the IdentityNet ControlNet and the image-prompt adapter, by manifest name.
INSTANTID_MODELS = {"controlnet": "instantid-controlnet", "adapter": "instantid-adapter"}
IDENTITYNET = "identitynet"  # the pass-1 control name InstantID's IdentityNet runs under
IDENTITY_ENGINES = ("faceid", "instantid")  # how a face-embedding identity is painted


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


@dataclass(frozen=True)
class PassSettings:
    """One inpaint pass: denoise strength, scheduler steps, ControlNets by name with their scales."""

    strength: float
    steps: int
    controlnets: Mapping[str, float]
    guidance_scale: float = 7.0

    def active(self) -> tuple[tuple[str, float], ...]:
        """The ControlNets that run: scale 0 drops a net (a zero-scaled net still costs its full compute)."""
        return tuple((n, float(s)) for n, s in self.controlnets.items() if float(s) != 0.0)

    def check(self, what: str) -> None:
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"{what}: strength must be in (0, 1], got {self.strength}")
        if self.steps < 1:
            raise ValueError(f"{what}: steps must be >= 1, got {self.steps}")
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"{what}: steps x strength = {self.steps * self.strength:.2f} leaves no denoising step")
        unknown = [n for n in self.controlnets if n not in controls.CONTROL_NAMES]
        if unknown:
            raise ValueError(f"{what}: unknown ControlNet(s) {unknown}; choose from {', '.join(controls.CONTROL_NAMES)}")


PASS1 = PassSettings(0.45, 30, {"canny": 0.5, "openpose": 0.3, "color": 0.5})
PASS2 = PassSettings(0.3, 20, {"tile": 0.8, "canny": 0.8})


@dataclass
class Identity:
    """Who to paint: an identity LoRA, a face embedding, or both.

    A face embedding is painted by `engine`: "faceid" (IP-Adapter FaceID, SD 1.5 or SDXL) or "instantid"
    (SDXL: InstantID's adapter at `faceid_scale` plus its IdentityNet ControlNet in pass 1 at
    `identitynet_scale`, driven by the face tokens and a 5-keypoint drawing).
    """

    lora: Path | None = None
    lora_weight: float = 0.9
    face: Any = None  # portrait.identity.face_embedding.FaceIdentity
    faceid_scale: float = 0.8  # the image-prompt adapter's scale (FaceID or InstantID)
    engine: str = "faceid"
    identitynet_scale: float = 0.8

    @property
    def instantid(self) -> bool:
        return self.face is not None and self.engine == "instantid"

    @classmethod
    def from_path(cls, path: str | Path, **kwargs) -> "Identity":
        """A LoRA file, or a face-identity file written by `portrait embed`."""
        from ..identity.face_embedding import FaceIdentity, is_face_identity_file

        p = Path(path)
        if p.is_dir():
            candidates = [p / "identity.safetensors", p / "identity_embedding.safetensors"]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise ConfigError(f"{p} holds neither identity.safetensors (LoRA) nor identity_embedding.safetensors")
            p = found[0]
        if not p.is_file():
            raise ConfigError(f"identity {p} does not exist (a LoRA from `portrait train` or a file from `portrait embed`)")
        if is_face_identity_file(p):
            return cls(face=FaceIdentity.load(p), **kwargs)
        return cls(lora=p, **kwargs)

    @property
    def kind(self) -> str:
        face = "instantid" if self.engine == "instantid" else "faceid"
        return "+".join(k for k, v in (("lora", self.lora), (face, self.face)) if v is not None) or "none"


@dataclass
class InpaintJob:
    """One template face to paint. Unset pass settings come from the template or the defaults."""

    template_rgb: np.ndarray
    template_face: Face
    prompt: str = ""
    negative_prompt: str = ""
    pass1: PassSettings = PASS1
    pass2: PassSettings = PASS2
    seed: int = 0
    style_lora: str | Path | None = None
    style_weight: float = 0.0
    name: str = ""
    color_strength: float = 1.0  # colour transfer of pass 1's face to the template's skin
    fusion2_blend: float = 0.5  # opacity of the second fusion


@dataclass
class InpaintResult:
    image: np.ndarray  # uint8 RGB, the template's size
    mask: np.ndarray  # uint8 0/255, template-sized: the only pixels that may differ from the template
    name: str
    seed: int
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # crop-sized intermediates
    crop: controls.FaceCrop | None = None
    details: dict = field(default_factory=dict)


# -- models -----------------------------------------------------------------------------------------

def _loading():
    """M's portrait.models.loading when present (the cached, manifest-aware loaders)."""
    try:
        from ..models import loading
    except ImportError:
        return None
    return loading


def _architecture(unet) -> str:
    return "sdxl" if getattr(unet.config, "addition_embed_type", None) == "text_time" else "sd15"


class InpaintModels:
    """A base model and ControlNets by control name; inpaint pipelines are built per ControlNet set
    from the base's shared components (no weights copied) and cached, so one load serves every job."""

    def __init__(self, base, controlnets: Mapping[str, Any], *, faceid_adapter: str | Path | None = None,
                 identitynet=None, instantid_adapter: str | Path | None = None):
        self.base = base
        self.controlnets = dict(controlnets)
        self.faceid_adapter = Path(faceid_adapter) if faceid_adapter else None
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
        loading = _loading()
        kw = {k: self._loader[k] for k in ("manifest", "device", "dtype")}
        for c in missing:
            net = loading.load_controlnet(controlnet_model(self.arch, c, self._loader["names"]), **kw)
            self._check_controlnet(c, net)
            self.controlnets[c] = net

    def _check_instantid(self, unet_dim: int) -> None:
        from ..identity.face_embedding import check_instantid_adapter

        if self.arch != "sdxl":
            raise ConfigError(f"InstantID is built for SDXL; the base model is {self.arch}")
        check_instantid_adapter(self.instantid_adapter, unet_dim)
        cfg = self.identitynet.config
        if cfg.cross_attention_dim != unet_dim or getattr(cfg, "addition_embed_type", None) != "text_time":
            raise ConfigError(f"the InstantID IdentityNet is not an SDXL ControlNet for this base (cross-attention "
                              f"{cfg.cross_attention_dim}-d, the base's {unet_dim}-d)")

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
        loading = _loading()
        if loading is None:
            raise PortraitError("portrait.models.loading is not available (install portrait[ml])")
        b = loading.load_base(str(base), manifest=manifest, device=device, dtype=dtype)
        arch = _architecture(b.unet) if hasattr(b, "unet") else "sd15"
        overrides = dict(controlnet_models or {})
        names = {c: controlnet_model(arch, c, overrides) for c in controlnets}
        identitynet = adapter = None
        if instantid:
            iid = {**INSTANTID_MODELS, **(instantid_models or {})}
            if arch != "sdxl":
                raise ConfigError(f"InstantID is built for SDXL; the base model '{base}' is {arch}")
            adapter, _ = loading.resolve_model(iid["adapter"], manifest)
            identitynet = loading.load_controlnet(iid["controlnet"], manifest=manifest, device=device, dtype=dtype)
        nets = {c: loading.load_controlnet(names[c], manifest=manifest, device=device, dtype=dtype) for c in controlnets}
        models = cls(b, nets, faceid_adapter=faceid_adapter, identitynet=identitynet, instantid_adapter=adapter)
        models._loader = {"manifest": manifest, "device": device, "dtype": dtype, "names": overrides}
        return models

    @property
    def components(self) -> dict:
        return self.base.components if hasattr(self.base, "components") else dict(self.base)

    @property
    def device(self):
        return self.components["unet"].device

    @property
    def dtype(self):
        return self.components["unet"].dtype

    def pipeline(self, names: Sequence[str]):
        """The inpaint pipeline running exactly the ControlNets `names` (in that order)."""
        key = tuple(names)
        if key not in self._pipes:
            loaded = {**self.controlnets, **({IDENTITYNET: self.identitynet} if self.has_instantid else {})}
            missing = [n for n in key if n not in loaded]
            if missing:
                raise ConfigError(f"no ControlNet loaded for control(s) {missing}; loaded: {sorted(loaded)}")
            nets = [loaded[n] for n in key]
            loading = _loading()
            if loading is not None and hasattr(loading, "inpaint_pipeline") and nets:
                pipe = loading.inpaint_pipeline(self.base, nets)
            else:
                pipe = _inpaint_pipeline(self.components, nets, self.arch)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[key] = pipe
        return self._pipes[key]


def _inpaint_pipeline(components: dict, nets: list, arch: str):
    """(SDXL)ControlNetInpaintPipeline from shared components; the plain inpaint pipeline with no nets."""
    import inspect

    import diffusers

    if nets:
        cls = diffusers.StableDiffusionXLControlNetInpaintPipeline if arch == "sdxl" else \
            diffusers.StableDiffusionControlNetInpaintPipeline
    else:
        cls = diffusers.StableDiffusionXLInpaintPipeline if arch == "sdxl" else diffusers.StableDiffusionInpaintPipeline
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in components.items() if k in params and k != "controlnet"}
    for opt in ("safety_checker", "feature_extractor", "image_encoder"):
        if opt in params:
            kwargs.setdefault(opt, None)
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    if nets:
        kwargs["controlnet"] = nets[0] if len(nets) == 1 else diffusers.MultiControlNetModel(nets)
    return cls(**kwargs)


def _set_loras(models: InpaintModels, pipe, identity: Identity, style_lora, style_weight: float) -> None:
    """Identity LoRA (+ style LoRA) on the shared UNet, through M's set_identity_lora when present."""
    state = (str(identity.lora), identity.lora_weight, str(style_lora), style_weight)
    if getattr(models, "_lora_state", None) == state:
        return
    loading = _loading()
    if loading is not None and hasattr(loading, "set_identity_lora"):
        loading.set_identity_lora(pipe, identity.lora, weight=identity.lora_weight,
                                  style_lora=style_lora, style_weight=style_weight)
    else:  # minimal stand-in with diffusers' own adapter API
        loaded = set(pipe.get_list_adapters().get("unet", [])) if hasattr(pipe, "get_list_adapters") else set()
        names, weights = [], []
        for path, name, w in ((identity.lora, "identity", identity.lora_weight), (style_lora, "style", style_weight)):
            if path is None or w == 0:
                continue
            tag = f"{name}_{abs(hash(str(path))) % 10**8}"
            if tag not in loaded:
                pipe.load_lora_weights(str(Path(path).parent), weight_name=Path(path).name, adapter_name=tag)
            names.append(tag)
            weights.append(w)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, weights)
        elif loaded:
            pipe.disable_lora()
    models._lora_state = state


# -- the recipe -------------------------------------------------------------------------------------

def _pil(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(a)


def _to_uint8(x) -> np.ndarray:
    return np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class _Work:
    job: InpaintJob
    crop: controls.FaceCrop
    face: Face  # template face in crop coordinates
    template_crop: np.ndarray
    stages: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


class TemplateInpaint:
    """The two-pass recipe as one callable. Set `interrupt = True` (from another thread) to stop early."""

    def __init__(self, models: InpaintModels, *, fusion_engine: str = "classic", crop_size: int | None = None,
                 max_batch: int = 4):
        self.models = models
        self.fusion_engine = fusion_engine
        self.crop_size = crop_size or WORKING_SIZE.get(models.arch, 512)
        self.max_batch = max_batch
        self.interrupt = False
        _quiet_prompt_notice()

    # -- validation --------------------------------------------------------------------------------
    def check_inputs(self, jobs: Sequence[InpaintJob], identity: Identity, ref_rgb: np.ndarray, ref_face: Face) -> None:
        if not jobs:
            raise ValueError("no jobs given")
        if not isinstance(identity, Identity):
            raise ValueError(f"identity must be an Identity, got {type(identity).__name__}")
        if identity.lora is None and identity.face is None:
            raise ValueError("identity has neither a LoRA nor a face embedding")
        if identity.face is not None and identity.engine not in IDENTITY_ENGINES:
            raise ConfigError(f"unknown identity engine {identity.engine!r}; choose from {', '.join(IDENTITY_ENGINES)}")
        if identity.instantid:
            if not self.models.has_instantid:
                raise ConfigError("the InstantID engine needs InpaintModels.load(..., instantid=True) "
                                  f"(models {', '.join(INSTANTID_MODELS.values())})")
            from ..identity.face_embedding import check_adapter_dim

            dim = getattr(identity.face, "dim", None)
            if dim is not None:
                check_adapter_dim(self.models.instantid_adapter, dim, getattr(identity.face, "engine", ""))
        elif identity.face is not None and self.models.faceid_adapter is None:
            raise ValueError("a face-embedding identity needs InpaintModels(faceid_adapter=...)")
        if identity.lora is not None and not Path(identity.lora).is_file():
            raise ValueError(f"identity LoRA {identity.lora} does not exist")
        for what, img in (("ref_rgb", ref_rgb), *((f"job {i} template_rgb", j.template_rgb) for i, j in enumerate(jobs))):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"{what} must be uint8 RGB (H, W, 3)")
        if ref_face is None or np.asarray(ref_face.landmarks5).shape != (5, 2):
            raise ValueError("ref_face needs landmarks5 of shape (5, 2)")
        for i, j in enumerate(jobs):
            if j.template_face is None or np.asarray(j.template_face.landmarks5).shape != (5, 2):
                raise ValueError(f"job {i}: template_face needs landmarks5 of shape (5, 2)")
            j.pass1.check(f"job {i} pass 1")
            j.pass2.check(f"job {i} pass 2")
            for n, _ in (*j.pass1.active(), *j.pass2.active()):
                if n not in self.models.controlnets:
                    raise ValueError(f"job {i}: ControlNet '{n}' is not loaded (loaded: {sorted(self.models.controlnets)}); "
                                     "load it or set its scale to 0")
            if j.style_lora is not None and j.style_weight and not Path(j.style_lora).is_file():
                raise ValueError(f"job {i}: style LoRA {j.style_lora} does not exist")
        if self.crop_size % 8:
            raise ValueError(f"crop_size must be a multiple of 8, got {self.crop_size}")

    # -- the call ----------------------------------------------------------------------------------
    def __call__(self, jobs: InpaintJob | Sequence[InpaintJob], identity: Identity, ref_rgb: np.ndarray,
                 ref_face: Face, *, callback: ProgressCallback | None = None,
                 keep_stages: bool = False) -> list[InpaintResult]:
        from ..post.color import reinhard_transfer
        from ..post.fusion import fuse, paste_5pt, transform_face
        from ..faces.align import similarity_transform

        jobs = [jobs] if isinstance(jobs, InpaintJob) else list(jobs)
        self.check_inputs(jobs, identity, ref_rgb, ref_face)
        self.interrupt = False
        works: list[_Work] = []
        for i, job in enumerate(jobs):
            t0 = time.perf_counter()
            crop = controls.face_crop(job.template_rgb.shape[:2], job.template_face, self.crop_size)
            w = _Work(job, crop, crop.face(job.template_face), crop.crop(job.template_rgb))
            h_w = w.template_crop.shape[:2]
            fused = fuse(w.template_crop, w.face, ref_rgb, ref_face, engine=self.fusion_engine,
                         source_embedding=ref_face.embedding)
            replaced, _ = paste_5pt(w.template_crop, w.face, ref_rgb, ref_face)
            # The user's landmarks carried onto the template face (what the keypoint control draws).
            user_face = transform_face(ref_face, similarity_transform(ref_face.landmarks5, w.face.landmarks5))
            w.masks["pass1"] = np.maximum(controls.inpaint_mask(h_w, w.face), fused.mask)
            w.stages.update(fused=fused.image, replaced=replaced)
            w.stages["controls1"] = controls.make_controls([n for n, _ in job.pass1.active()], fused=fused.image,
                                                           replaced=replaced, faces=user_face)
            if identity.instantid:  # IdentityNet's input: InstantID's 5 coloured keypoints of the replaced face
                w.stages["controls1"].append(controls.face_keypoints(h_w, user_face, style="kps"))
            w.timings["prepare"] = time.perf_counter() - t0
            works.append(w)
            report(callback, "fusion", i + 1, len(jobs))
        self._run_pass(works, "pass1", identity, ref_rgb, callback)
        for w in works:
            t0 = time.perf_counter()
            out1 = w.stages["pass1"]
            m1 = w.masks["pass1"]
            if w.job.color_strength > 0:
                recoloured = reinhard_transfer(out1, w.template_crop, m1, m1, strength=w.job.color_strength)
                out1 = np.where(m1[..., None] > 0, recoloured, out1)
            w.stages["color"] = out1
            fused2 = fuse(out1, w.face, ref_rgb, ref_face, engine=self.fusion_engine, blend=w.job.fusion2_blend,
                          source_embedding=ref_face.embedding)
            w.stages["fused2"] = fused2.image
            r = max(2, round(w.face.size * 0.06))
            w.masks["pass2"] = controls.edge_ring(m1, r, r)
            w.stages["controls2"] = controls.make_controls([n for n, _ in w.job.pass2.active()], fused=fused2.image,
                                                           replaced=fused2.image, faces=w.face)
            w.timings["between"] = time.perf_counter() - t0
        self._run_pass(works, "pass2", identity, ref_rgb, callback)
        results = []
        for w in works:
            final_mask = np.maximum(w.masks["pass1"], w.masks["pass2"])
            # Inside pass 1's mask keep pass 2's result only on the ring; elsewhere pass 1's colour-fixed face.
            ring = w.masks["pass2"][..., None] > 0
            crop_out = np.where(ring, w.stages["pass2"], w.stages["fused2"])
            image = w.crop.paste(w.job.template_rgb, crop_out, final_mask, feather_px=0)
            stages = {k: v for k, v in w.stages.items() if not k.startswith("controls")} if keep_stages else {}
            results.append(InpaintResult(
                image, w.crop.full_mask(w.job.template_rgb.shape[:2], final_mask), w.job.name, w.job.seed, stages,
                w.crop, {"identity": identity.kind, "crop": [w.crop.x0, w.crop.y0, w.crop.side, w.crop.size],
                         "controlnets": {"pass1": {**dict(w.job.pass1.active()),
                                                   **({IDENTITYNET: identity.identitynet_scale} if identity.instantid else {})},
                                         "pass2": dict(w.job.pass2.active())},
                         "timings": {k: round(v, 3) for k, v in w.timings.items()}}))
        return results

    # -- one pass over all jobs, batched where settings match ---------------------------------------
    def _run_pass(self, works: list[_Work], which: str, identity: Identity, ref_rgb, callback) -> None:
        groups: dict[tuple, list[_Work]] = {}
        for w in works:
            s: PassSettings = getattr(w.job, which)
            key = (s.active(), s.strength, s.steps, s.guidance_scale, str(w.job.style_lora), w.job.style_weight)
            groups.setdefault(key, []).append(w)
        done = 0
        for (active, strength, steps, guidance, _, _), members in groups.items():
            for start in range(0, len(members), self.max_batch):
                if self.interrupt:
                    raise InterruptedError("generation interrupted")
                batch = members[start:start + self.max_batch]
                t0 = time.perf_counter()
                images = self._diffuse(batch, which, active, strength, steps, guidance, identity, callback)
                dt = (time.perf_counter() - t0) / len(batch)
                for w, img in zip(batch, images):
                    w.stages[which] = img
                    w.timings[which] = dt
                done += len(batch)
                report(callback, which, done, len(works))

    def _diffuse(self, batch: list[_Work], which: str, active, strength, steps, guidance, identity, callback):
        import torch

        identitynet = identity.instantid and which == "pass1"
        if identitynet:  # InstantID: IdentityNet joins pass 1's ControlNets (its control image is last)
            active = (*active, (IDENTITYNET, float(identity.identitynet_scale)))
        names = tuple(n for n, _ in active)
        pipe = self.models.pipeline(names)
        job0 = batch[0].job
        _set_loras(self.models, pipe, identity, job0.style_lora, job0.style_weight)
        kwargs: dict = {}
        if identity.instantid:
            from ..identity.face_embedding import instantid_embeds, load_faceid_adapter

            load_faceid_adapter(pipe, self.models.instantid_adapter, identity.face.dim, identity.faceid_scale,
                                identity.face.engine)
            kwargs["ip_adapter_image_embeds"] = instantid_embeds(identity.face, batch=len(batch), guidance=guidance > 1,
                                                                 device=self.models.device, dtype=self.models.dtype)
        elif identity.face is not None:
            from ..identity.face_embedding import faceid_embeds, load_faceid_adapter

            load_faceid_adapter(pipe, self.models.faceid_adapter, identity.face.dim, identity.faceid_scale,
                                identity.face.engine)
            kwargs["ip_adapter_image_embeds"] = faceid_embeds(identity.face, batch=len(batch), guidance=guidance > 1,
                                                              device=self.models.device, dtype=self.models.dtype)
        else:
            from ..identity.face_embedding import unload_faceid_adapter

            unload_faceid_adapter(pipe)
        key_img = "fused" if which == "pass1" else "fused2"
        key_ctl = "controls1" if which == "pass1" else "controls2"
        if names:
            # One (B, 3, H, W) tensor in 0..1 per net: MultiControlNet refuses nested lists of images.
            per_net = [torch.from_numpy(np.stack([w.stages[key_ctl][k] for w in batch])).permute(0, 3, 1, 2).float() / 255
                       for k in range(len(names))]
            kwargs["control_image"] = per_net if len(names) > 1 else per_net[0]
            scales = [s for _, s in active]
            kwargs["controlnet_conditioning_scale"] = scales if len(names) > 1 else scales[0]
        total = max(1, int(steps * strength))
        stage = f"inpaint {which[-1]}"

        def on_step(p, i, t, cb_kwargs):
            report(callback, stage, i + 1, total)
            if self.interrupt:
                p._interrupt = True
            return cb_kwargs

        size = self.crop_size
        hook = None
        if identitynet:
            from ..identity.face_embedding import identity_tokens, identitynet_hook

            hook = identitynet_hook(self.models.identitynet,
                                    identity_tokens(pipe.unet, kwargs["ip_adapter_image_embeds"]))
        try:
            out = self._call_pipe(pipe, batch, which, key_img, size, strength, steps, guidance, on_step, kwargs)
        finally:
            if hook is not None:
                hook.remove()
        if self.interrupt:
            raise InterruptedError("generation interrupted")
        return [_to_uint8(img) for img in out]

    @staticmethod
    def _call_pipe(pipe, batch, which, key_img, size, strength, steps, guidance, on_step, kwargs):
        import torch

        return pipe(
            prompt=[w.job.prompt for w in batch], negative_prompt=[w.job.negative_prompt for w in batch],
            image=[_pil(w.stages[key_img]) for w in batch], mask_image=[_pil(w.masks[which]) for w in batch],
            height=size, width=size, strength=strength, num_inference_steps=steps, guidance_scale=guidance,
            generator=[torch.Generator("cpu").manual_seed(w.job.seed + (0 if which == "pass1" else 1)) for w in batch],
            output_type="np", callback_on_step_end=on_step, **kwargs,
        ).images


# -- templates ----------------------------------------------------------------------------------------

def _field(obj, name: str, default=None):
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _pass_from(section, base: PassSettings) -> PassSettings:
    if section is None:
        return base
    nets = _field(section, "controlnets")
    return PassSettings(
        strength=float(_field(section, "strength", base.strength) or base.strength),
        steps=int(_field(section, "steps", base.steps) or base.steps),
        controlnets=dict(nets) if nets else dict(base.controlnets),
        guidance_scale=float(_field(section, "guidance_scale", base.guidance_scale) or base.guidance_scale),
    )


def template_controls(template, controlnets: Mapping[str, float] | None = None) -> list[str]:
    """The controls (ControlNet names) a template's two passes run, pass 1's first; `controlnets`
    overrides pass-1 scales as in job_from_template."""
    p1 = _pass_from(_field(template, "inpaint"), PASS1)
    if controlnets is not None:
        p1 = replace(p1, controlnets={**p1.controlnets, **controlnets})
    p2 = _pass_from(_field(template, "edge"), PASS2)
    return list(dict.fromkeys(n for n, _ in (*p1.active(), *p2.active())))


def template_slots(template, face_analysis=None) -> dict[int, Face]:
    """The template's face slots to paint: portrait.templates.Template.slot_faces(), or a mapping's 'faces'."""
    if hasattr(template, "slot_faces"):
        return dict(template.slot_faces(face_analysis))
    return dict(enumerate(_field(template, "faces") or []))


def job_from_template(template, *, slot: int | None = None, steps: int | None = None, seed: int | None = None,
                      strength: float | None = None, controlnets: Mapping[str, float] | None = None,
                      image: np.ndarray | None = None, face_analysis=None) -> InpaintJob:
    """An InpaintJob from a portrait.templates.Template (or a mapping with the same fields: image, faces,
    prompt, negative_prompt, inpaint / edge pass settings, style_lora, style_weight, seed) for face `slot`
    (default: the first slot). `steps`, `seed`, `strength` (pass 1) and `controlnets` (pass-1 scales)
    override; `image` replaces the template image (to chain slots)."""
    slots = template_slots(template, face_analysis)
    name = str(_field(template, "name", ""))
    if not slots:
        raise ConfigError(f"template {name or '?'} has no face to paint")
    slot = min(slots) if slot is None else slot
    if slot not in slots:
        raise ConfigError(f"template {name or '?'} has no face slot {slot} (slots: {sorted(slots)})")
    if image is None:
        image = _field(template, "image")
        image = image() if callable(image) else image
    p1 = _pass_from(_field(template, "inpaint"), PASS1)
    p2 = _pass_from(_field(template, "edge"), PASS2)
    if steps is not None:
        p1, p2 = replace(p1, steps=steps), replace(p2, steps=steps)
    if strength is not None:
        p1 = replace(p1, strength=strength)
    if controlnets is not None:
        p1 = replace(p1, controlnets={**p1.controlnets, **controlnets})
    style = _field(template, "style_lora")
    style_weight = _field(template, "style_weight", 0.0) if style else 0.0
    tseed = _field(template, "seed", 0)
    return InpaintJob(
        template_rgb=image, template_face=slots[slot], prompt=_field(template, "prompt", "") or "",
        negative_prompt=_field(template, "negative_prompt", "") or "", pass1=p1, pass2=p2,
        seed=int(seed if seed is not None else (tseed or 0)), style_lora=style, style_weight=float(style_weight or 0.0),
        name=name,
    )


def generate_on_template(models: InpaintModels, template, identity: Identity | str | Path, ref_rgb: np.ndarray,
                         ref_face: Face, *, callback: ProgressCallback | None = None, inpaint: TemplateInpaint | None = None,
                         slot: int | None = None, face_analysis=None, image: np.ndarray | None = None,
                         **overrides) -> InpaintResult:
    """`identity` painted on `template` (what LoRA validation calls). With `slot=None` every face slot
    of the template is painted in turn (each on the previous result); `image` replaces the template's
    image as the starting point (to paint several people slot by slot); overrides as job_from_template."""
    ident = identity if isinstance(identity, Identity) else Identity.from_path(identity)
    runner = inpaint or TemplateInpaint(models)
    slots = [slot] if slot is not None else sorted(template_slots(template, face_analysis))
    result = None
    for s in slots:
        job = job_from_template(template, slot=s, face_analysis=face_analysis,
                                image=image if result is None else result.image, **overrides)
        r = runner(job, ident, ref_rgb, ref_face, callback=callback)[0]
        if result is not None:
            r.mask = np.maximum(r.mask, result.mask)
        result = r
    return result
