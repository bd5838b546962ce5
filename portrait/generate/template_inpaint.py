"""Two-pass template inpainting: the user's identity painted into a template's face (EasyPhoto's recipe).

    models = InpaintModels.load("sd15")                      # portrait.generate.pipelines
    inpaint = TemplateInpaint(models)
    [result] = inpaint(InpaintJob(template_rgb, template_face, prompt="..."),
                       identity=Sitter.from_path("identity.safetensors"), ref_rgb=ref, ref_face=face)

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

from ..errors import Cancelled, ConfigError
from ..faces.types import Face
from ..progress import ProgressCallback, report
from . import controls
from .pipelines import (DEFAULT_SAMPLER, IDENTITYNET, INSTANTID_MODELS, SAMPLERS, WORKING_SIZE, InpaintModels,
                        _quiet_prompt_notice, check_adapter_dim, faceid_plus_clip_embeds, identity_inputs, identity_tokens,
                        identitynet_hook, make_scheduler)

IDENTITY_ENGINES = ("faceid", "instantid")  # how a face-embedding identity is painted


@dataclass(frozen=True)
class PassSettings:
    """One inpaint pass: denoise strength, scheduler steps, guidance and ControlNets by name with their
    scales. The one definition of a pass: template.toml's [inpaint] / [edge] tables read into it, and
    `problem()` holds its limits, which template validation and the recipe's input check both use."""

    strength: float
    steps: int
    controlnets: Mapping[str, float] | None = field(default_factory=dict)  # None: the base's recipe (RECIPES)
    guidance_scale: float | None = None  # None: the identity engine's (ENGINE_GUIDANCE)

    def active(self) -> tuple[tuple[str, float], ...]:
        """The ControlNets that run: scale 0 drops a net (a zero-scaled net still costs its full compute)."""
        if self.controlnets is None:
            raise ConfigError("these pass settings take their ControlNets from the base's recipe: resolve them with "
                              "for_arch(arch) first")
        return tuple((n, float(s)) for n, s in self.controlnets.items() if float(s) != 0.0)

    def for_arch(self, arch: str, which: int) -> "PassSettings":
        """These settings with the base architecture's default ControlNets (pass `which`: 1 or 2) where none
        were set."""
        if self.controlnets is not None:
            return self
        return replace(self, controlnets=dict(recipe(arch)[which - 1].controlnets))

    def problem(self) -> tuple[str, str] | None:
        """(key, what is wrong) for the first value out of its limits, None when all are valid."""
        if not 0.0 < self.strength <= 1.0:
            return "strength", f"must be in (0, 1], got {self.strength!r}"
        if not 1 <= self.steps <= MAX_STEPS:
            return "steps", f"must be in [1, {MAX_STEPS}], got {self.steps!r}"
        if self.guidance_scale is not None and not 0.0 <= self.guidance_scale <= MAX_GUIDANCE:
            return "guidance_scale", f"must be in [0, {MAX_GUIDANCE:g}], got {self.guidance_scale!r}"
        for n, scale in (self.controlnets or {}).items():
            if n not in controls.CONTROL_NAMES:
                return f"controlnets.{n}", f"is an unknown ControlNet; choose from {', '.join(controls.CONTROL_NAMES)}"
            if not 0.0 <= float(scale) <= MAX_CONTROL_SCALE:
                return f"controlnets.{n}", f"must be in [0, {MAX_CONTROL_SCALE:g}], got {scale!r}"
        if int(self.steps * self.strength) < 1:
            return "steps", f"x strength = {self.steps * self.strength:.2f} leaves no denoising step"
        return None

    def for_engine(self, identity: "Sitter") -> "PassSettings":
        """These settings with the identity engine's guidance where none was set."""
        if self.guidance_scale is not None:
            return self
        engine = "instantid" if identity.instantid else ("faceid" if identity.face is not None else "lora")
        return replace(self, guidance_scale=ENGINE_GUIDANCE.get(engine, DEFAULT_GUIDANCE))

    def check(self, what: str) -> None:
        """ConfigError naming `what` and the key when a value is out of its limits."""
        bad = self.problem()
        if bad is not None:
            raise ConfigError(f"{what}: {bad[0]} {bad[1]}")


MAX_STEPS, MAX_GUIDANCE, MAX_CONTROL_SCALE = 500, 50.0, 2.0
# Classifier-free guidance where a template sets none: InstantID's reference runs at 5 (InstantX infer.py,
# as EasyPhoto's SDXL path); the SD 1.5 identity LoRA and FaceID at EasyPhoto's 7.
DEFAULT_GUIDANCE = 7.0
ENGINE_GUIDANCE = {"instantid": 5.0}
# EasyPhoto's current scales (easyphoto_infer.py): pass 1 canny 0.5, openpose 0.5, colour 0.85; pass 2 tile and
# canny at 1.0. Its units also run sd-webui-controlnet's control_mode 1 ("my prompt is more important"),
# which diffusers has no equivalent of: the scales apply uniformly here.
PASS1 = PassSettings(0.45, 30, {"canny": 0.5, "openpose": 0.5, "color": 0.85})
PASS2 = PassSettings(0.3, 20, {"tile": 1.0, "canny": 1.0})
# SDXL, as EasyPhoto's SDXL recipe (easyphoto_infer.py: sdxl_canny_mid alone in both diffusions): canny only.
# No colour ControlNet has a standard SDXL release, and the SD 1.5 openpose / tile ones cannot steer SDXL.
PASS1_SDXL = PassSettings(0.45, 30, {"canny": 0.5})
PASS2_SDXL = PassSettings(0.3, 20, {"canny": 1.0})
RECIPES = {"sd15": (PASS1, PASS2), "sdxl": (PASS1_SDXL, PASS2_SDXL)}


def recipe(arch: str) -> tuple[PassSettings, PassSettings]:
    """The default (pass 1, pass 2) settings for a base architecture (SD 1.5's for anything unknown)."""
    return RECIPES.get(arch, RECIPES["sd15"])


@dataclass
class Sitter:
    """Who to paint (the sitter of the portrait): an identity LoRA, a face embedding, or both. Not the
    service's Identity row (a person's photos and jobs) nor the portrait.identity package (what makes these
    files).

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
    def from_path(cls, path: str | Path, **kwargs) -> "Sitter":
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
    reference: tuple | None = None  # (rgb, face) of this job's own reference photo; None: the call's

    def __post_init__(self):
        """The passes' settings are checked here, once, where a job is made (ConfigError naming the job's
        template and the pass): no job with a pass out of its limits reaches the recipe."""
        what = f"template {self.name}" if self.name else "inpaint job"
        self.pass1.check(f"{what} pass 1")
        self.pass2.check(f"{what} pass 2")


@dataclass
class InpaintResult:
    image: np.ndarray  # uint8 RGB, the template's size
    mask: np.ndarray  # uint8 0/255, template-sized: the only pixels that may differ from the template
    name: str
    seed: int
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # crop-sized intermediates
    crop: controls.FaceCrop | None = None
    details: dict = field(default_factory=dict)




# -- the recipe -------------------------------------------------------------------------------------

def _pil(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(a)


def _to_uint8(x) -> np.ndarray:
    return np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class Stop:
    """One call's stop condition: the runner's `interrupt` flag or the caller's cancel token."""

    def __init__(self, runner: "TemplateInpaint", cancel):
        self.runner, self.cancel = runner, cancel

    def is_set(self) -> bool:
        return bool(self.runner.interrupt) or (self.cancel is not None and self.cancel.is_set())

    def check(self) -> None:
        if self.is_set():
            raise Cancelled("generation cancelled")


@dataclass
class _Work:
    job: InpaintJob
    crop: controls.FaceCrop
    face: Face  # template face in crop coordinates
    template_crop: np.ndarray
    ref: tuple = ()  # (rgb, face): the reference photo this job fuses and whose face FaceID-Plus reads
    plus: tuple | None = None  # FaceID-Plus: (cond, uncond) CLIP hidden states of that face
    stages: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


class TemplateInpaint:
    """The two-pass recipe as one callable. A call stops within one diffusion step when its `cancel`
    (anything with `is_set()`) is set, or once `interrupt` is set to True (from another thread; it stays
    set until the caller clears it), raising portrait.errors.Cancelled. No call keeps state on the
    instance: it holds only the models, the settings and that flag."""

    def __init__(self, models: InpaintModels, *, fusion_engine: str = "classic", crop_size: int | None = None,
                 max_batch: int = 4, sampler: str | None = None):
        self.models = models
        self.sampler = sampler or DEFAULT_SAMPLER.get(models.arch, DEFAULT_SAMPLER["sd15"])
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        self.fusion_engine = fusion_engine
        self.crop_size = crop_size or WORKING_SIZE.get(models.arch, 512)
        self.max_batch = max_batch
        self.interrupt = False
        from ..models.device import onnx_device

        self._onnx_device = onnx_device(str(models.device))  # the swapper (fusion #1 / #2) on the same GPU
        _quiet_prompt_notice()

    # -- validation --------------------------------------------------------------------------------
    def check_inputs(self, jobs: Sequence[InpaintJob], identity: Sitter, ref_rgb: np.ndarray, ref_face: Face) -> None:
        if not jobs:
            raise ConfigError("no jobs given")
        if not isinstance(identity, Sitter):
            raise ConfigError(f"identity must be an Sitter, got {type(identity).__name__}")
        if identity.lora is None and identity.face is None:
            raise ConfigError("identity has neither a LoRA nor a face embedding")
        if identity.face is not None and identity.engine not in IDENTITY_ENGINES:
            raise ConfigError(f"unknown identity engine {identity.engine!r}; choose from {', '.join(IDENTITY_ENGINES)}")
        if identity.instantid:
            if not self.models.has_instantid:
                raise ConfigError("the InstantID engine needs InpaintModels.load(..., instantid=True) "
                                  f"(models {', '.join(INSTANTID_MODELS.values())})")
        elif identity.face is not None and self.models.faceid_adapter is None:
            raise ConfigError("a face-embedding identity needs InpaintModels(faceid_adapter=...)")
        if identity.face is not None:  # the adapter's embedding size and recogniser (models.adapters)
            from ..models.adapters import check_embedder

            adapter = self.models.instantid_adapter if identity.instantid else self.models.faceid_adapter
            dim, engine = getattr(identity.face, "dim", None), getattr(identity.face, "engine", "")
            if dim is not None:
                check_adapter_dim(adapter, dim, engine)
            if engine:
                check_embedder(adapter, engine)
            norm = float(getattr(identity.face, "norm", 0.0) or 0.0)
            if identity.instantid and str(engine).startswith("arcface") and abs(norm - 1.0) < 1e-3:
                raise ConfigError("this identity file holds unit-length ArcFace vectors only (written before raw "
                                  "embeddings were kept), and InstantID needs the raw ones at their length: run "
                                  "`portrait embed --embedder arcface-antelopev2` again")
        if identity.lora is not None and not Path(identity.lora).is_file():
            raise ConfigError(f"identity LoRA {identity.lora} does not exist")
        own = [(f"job {i} reference", j.reference) for i, j in enumerate(jobs) if j.reference is not None]
        for what, ref in own:
            if not isinstance(ref, tuple) or len(ref) != 2 or ref[1] is None \
                    or np.asarray(ref[1].landmarks5).shape != (5, 2):
                raise ConfigError(f"{what} must be (rgb, face) with the face's landmarks5 of shape (5, 2)")
        for what, img in (("ref_rgb", ref_rgb), *((f"{w} rgb", r[0]) for w, r in own),
                          *((f"job {i} template_rgb", j.template_rgb) for i, j in enumerate(jobs))):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ConfigError(f"{what} must be uint8 RGB (H, W, 3)")
        if ref_face is None or np.asarray(ref_face.landmarks5).shape != (5, 2):
            raise ConfigError("ref_face needs landmarks5 of shape (5, 2)")
        for i, j in enumerate(jobs):
            if j.template_face is None or np.asarray(j.template_face.landmarks5).shape != (5, 2):
                raise ConfigError(f"job {i}: template_face needs landmarks5 of shape (5, 2)")
            for n, _ in (*j.pass1.active(), *j.pass2.active()):
                if n not in self.models.controlnets:
                    raise ConfigError(f"job {i}: ControlNet '{n}' is not loaded (loaded: {sorted(self.models.controlnets)}); "
                                     "load it or set its scale to 0")
            if j.style_lora is not None and j.style_weight and not Path(j.style_lora).is_file():
                raise ConfigError(f"job {i}: style LoRA {j.style_lora} does not exist")
        if self.crop_size % 8:
            raise ConfigError(f"crop_size must be a multiple of 8, got {self.crop_size}")

    # -- the call ----------------------------------------------------------------------------------
    def __call__(self, jobs: InpaintJob | Sequence[InpaintJob], identity: Sitter, ref_rgb: np.ndarray,
                 ref_face: Face, *, progress: ProgressCallback | None = None,
                 keep_stages: bool = False, cancel=None) -> list[InpaintResult]:
        from ..post.color import reinhard_transfer
        from ..post.fusion import fuse, paste_5pt, transform_face
        from ..faces.align import similarity_transform

        jobs = [jobs] if isinstance(jobs, InpaintJob) else list(jobs)
        arch = self.models.arch  # passes without ControlNets of their own run the base's recipe
        jobs = [replace(j, pass1=j.pass1.for_arch(arch, 1).for_engine(identity),
                        pass2=j.pass2.for_arch(arch, 2).for_engine(identity)) for j in jobs]
        self.check_inputs(jobs, identity, ref_rgb, ref_face)
        stop = Stop(self, cancel)
        works: list[_Work] = []
        for i, job in enumerate(jobs):
            stop.check()
            t0 = time.perf_counter()
            crop = controls.face_crop(job.template_rgb.shape[:2], job.template_face, self.crop_size)
            r_rgb, r_face = job.reference or (ref_rgb, ref_face)
            w = _Work(job, crop, crop.face(job.template_face), crop.crop(job.template_rgb), (r_rgb, r_face))
            h_w = w.template_crop.shape[:2]
            fused = fuse(w.template_crop, w.face, r_rgb, r_face, engine=self.fusion_engine, skin="template",
                         source_embedding=r_face.embedding, device=self._onnx_device)
            replaced, _ = paste_5pt(w.template_crop, w.face, r_rgb, r_face)
            # The user's landmarks carried onto the template face (what the keypoint control draws).
            user_face = transform_face(r_face, similarity_transform(r_face.landmarks5, w.face.landmarks5))
            w.masks["pass1"] = np.maximum(controls.inpaint_mask(h_w, w.face), fused.mask)
            w.stages.update(fused=fused.image, replaced=replaced)
            w.stages["controls1"] = controls.make_controls([n for n, _ in job.pass1.active()], fused=fused.image,
                                                           replaced=replaced, faces=user_face)
            if identity.instantid:  # IdentityNet's input: InstantID's 5 coloured keypoints of the replaced face
                w.stages["controls1"].append(controls.face_keypoints(h_w, user_face, style="kps"))
            w.timings["prepare"] = time.perf_counter() - t0
            works.append(w)
            report(progress, "fusion", i + 1, len(jobs))
        # FaceID-Plus: CLIP hidden states of each reference's aligned face, once per photo (batched in _diffuse).
        if self.models.reads_face_crop(identity):
            seen: dict[int, tuple] = {}
            for w in works:
                key = id(w.ref[0])
                if key not in seen:
                    seen[key] = faceid_plus_clip_embeds(self.models.image_encoder, *w.ref)
                w.plus = seen[key]
        self._run_pass(works, "pass1", identity, progress, stop)
        for w in works:
            t0 = time.perf_counter()
            out1 = w.stages["pass1"]
            m1 = w.masks["pass1"]
            if w.job.color_strength > 0:
                recoloured = reinhard_transfer(out1, w.template_crop, m1, m1, strength=w.job.color_strength)
                out1 = np.where(m1[..., None] > 0, recoloured, out1)
            w.stages["color"] = out1
            fused2 = fuse(out1, w.face, *w.ref, engine=self.fusion_engine, skin="template", blend=w.job.fusion2_blend,
                          source_embedding=w.ref[1].embedding, device=self._onnx_device)
            w.stages["fused2"] = fused2.image
            r = max(2, round(w.face.size * 0.06))
            w.masks["pass2"] = controls.edge_ring(m1, r, r)
            w.stages["controls2"] = controls.make_controls([n for n, _ in w.job.pass2.active()], fused=fused2.image,
                                                           replaced=fused2.image, faces=w.face)
            w.timings["between"] = time.perf_counter() - t0
        self._run_pass(works, "pass2", identity, progress, stop)
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
    def _run_pass(self, works: list[_Work], which: str, identity: Sitter, progress, stop: "Stop") -> None:
        groups: dict[tuple, list[_Work]] = {}
        for w in works:
            s: PassSettings = getattr(w.job, which)
            key = (s.active(), s.strength, s.steps, s.guidance_scale, str(w.job.style_lora), w.job.style_weight)
            groups.setdefault(key, []).append(w)
        done = 0
        for (active, strength, steps, guidance, _, _), members in groups.items():
            for start in range(0, len(members), self.max_batch):
                stop.check()
                batch = members[start:start + self.max_batch]
                t0 = time.perf_counter()
                images = self._diffuse(batch, which, active, strength, steps, guidance, identity, progress, stop)
                dt = (time.perf_counter() - t0) / len(batch)
                for w, img in zip(batch, images):
                    w.stages[which] = img
                    w.timings[which] = dt
                done += len(batch)
                report(progress, which, done, len(works))

    def _diffuse(self, batch: list[_Work], which: str, active, strength, steps, guidance, identity, progress, stop):
        import torch

        # FaceID-Plus: one (cond, uncond) row per image, each from that image's own reference face.
        plus = None if batch[0].plus is None else tuple(torch.cat([w.plus[k] for w in batch]) for k in (0, 1))

        identitynet = identity.instantid and which == "pass1"
        if identitynet:  # InstantID: IdentityNet joins pass 1's ControlNets (its control image is last)
            active = (*active, (IDENTITYNET, float(identity.identitynet_scale)))
        names = tuple(n for n, _ in active)
        pipe = self.models.pipeline(names)
        pipe.scheduler = make_scheduler(self.sampler, self.models.components["scheduler"].config)
        job0 = batch[0].job
        kwargs = identity_inputs(self.models, pipe, identity, batch=len(batch), guidance=guidance > 1, plus=plus,
                                 style_lora=job0.style_lora, style_weight=job0.style_weight)
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
            report(progress, stage, i + 1, total)
            if stop.is_set():
                p._interrupt = True  # diffusers ends the denoising loop; the call raises Cancelled below
            return cb_kwargs

        size = self.crop_size
        hook = None
        if identitynet:
            hook = identitynet_hook(self.models.identitynet,
                                    identity_tokens(pipe.unet, kwargs["ip_adapter_image_embeds"]))
        try:
            out = self._call_pipe(pipe, batch, which, key_img, size, strength, steps, guidance, on_step, kwargs)
        finally:
            if hook is not None:
                hook.remove()
        stop.check()
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

