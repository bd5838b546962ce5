"""A new picture of the user from a text prompt (FaceChain's style mode, EasyPhoto's text-to-photo, the way
InstantX's infer.py and tencent-ailab's ip_adapter_faceid demos use their adapters).

    models = InpaintModels.load("sd15", ["openpose"], faceid_adapter=...)   # portrait.generate.pipelines
    render = SceneRender(models)
    images = render(SceneRequest("a photo of a person in a winter coat", 448, 576, seeds=(1, 2, 3, 4)),
                    identity=Sitter(face=face_identity))        # the N candidates, one denoising call
    image, mask = render.detail(images[0], face, identity, request, seed=1)   # the face inpainted again

The identity reaches the UNet as the two-pass inpaint carries it (pipelines.identity_inputs): an identity
LoRA, IP-Adapter FaceID / FaceID-Plus, or InstantID's adapter with its IdentityNet ControlNet reading a
five-keypoint drawing (SDXL). A style's pose or composition drawing steers the picture through its
ControlNet (openpose or canny). The face-detail pass crops around the face found in a candidate, inpaints
the face mask at the base's working size with the identity, and pastes it back: only pixels inside the
mask change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..faces.types import ARCFACE_5PT_112, Face
from ..progress import ProgressCallback, report
from . import controls
from .pipelines import (IDENTITYNET, SAMPLERS, WORKING_SIZE, InpaintModels, faceid_plus_clip_embeds, identity_inputs,
                        identity_tokens, identitynet_hook, make_scheduler)
from .template_inpaint import IDENTITY_ENGINES, Sitter, Stop

CONTROLS = ("openpose", "canny")  # the controls a style's pose or composition drawing may feed
DEFAULT_HEAD = (0.5, 0.38, 0.26)  # InstantID's keypoints without a pose: face centre x, y and width (fractions)


@dataclass(frozen=True)
class SceneSettings:
    """One base model's settings for a style: sampler, steps, guidance, and the side of the square whose
    area the picture has."""

    sampler: str = "dpm++2m"  # pipelines.SAMPLERS
    steps: int = 30
    guidance_scale: float = 6.0
    size: int = 512


def scene_size(size: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """(width, height) with about size x size pixels at `aspect` (w, h), each side a multiple of 64."""
    a = aspect[0] / aspect[1]
    w = max(64, int(round(size * a ** 0.5 / 64)) * 64)
    h = max(64, int(round(size / a ** 0.5 / 64)) * 64)
    return w, h


def head_face(width: int, height: int, head: tuple[float, float, float]) -> Face:
    """A frontal face placed by `head` (centre x, centre y, face width: fractions of the picture), with
    ArcFace's canonical five points: what a pose without a photo draws for OpenPose and InstantID."""
    cx, cy, fw = head[0] * width, head[1] * height, head[2] * width
    pts = (ARCFACE_5PT_112 / 112.0 - 0.5) * fw + np.array([cx, cy], np.float32)
    box = np.array([cx - fw / 2, cy - fw / 2, cx + fw / 2, cy + fw / 2], np.float32)
    return Face(box=box, score=1.0, landmarks5=pts.astype(np.float32))


def control_drawing(width: int, height: int, *, image: np.ndarray | None = None,
                    head: tuple[float, float, float] | None = None) -> np.ndarray:
    """The control image at the picture's size: a style's own drawing resized, or an OpenPose head."""
    import cv2

    if image is not None:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if head is None:
        raise ConfigError("a pose needs a control image or a head placement")
    return controls.openpose_face((height, width), head_face(width, height, head))


@dataclass(frozen=True)
class SceneRequest:
    """One style's candidates: the prompt, the picture's size, the base's settings and one seed each."""

    prompt: str
    width: int
    height: int
    seeds: tuple[int, ...] = (0,)
    negative_prompt: str = ""
    settings: SceneSettings = field(default_factory=SceneSettings)
    control: str | None = None  # openpose | canny: the ControlNet reading control_image
    control_image: np.ndarray | None = None  # uint8 RGB, (height, width, 3)
    control_scale: float = 0.8
    head: tuple[float, float, float] = DEFAULT_HEAD  # where InstantID's keypoints go
    style_lora: str | Path | None = None
    style_weight: float = 0.0
    detail_strength: float = 0.35


def _to_uint8(x) -> np.ndarray:
    return np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _tensor(images: Sequence[np.ndarray]):
    import torch

    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


class SceneRender:
    """Text-to-image with the identity, batched, and the face-detail pass. A call stops within one
    diffusion step when its `cancel` is set or `interrupt` becomes True (portrait.errors.Cancelled)."""

    def __init__(self, models: InpaintModels, *, max_batch: int = 4, detail_size: int | None = None):
        self.models = models
        self.max_batch = max_batch
        self.detail_size = detail_size or WORKING_SIZE.get(models.arch, 512)
        self.interrupt = False

    def check_inputs(self, request: SceneRequest, identity: Sitter) -> None:
        if not isinstance(identity, Sitter) or (identity.lora is None and identity.face is None):
            raise ConfigError("identity must be an Sitter with a LoRA or a face embedding")
        if identity.face is not None and identity.engine not in IDENTITY_ENGINES:
            raise ConfigError(f"unknown identity engine {identity.engine!r}; choose from {', '.join(IDENTITY_ENGINES)}")
        if identity.instantid and not self.models.has_instantid:
            raise ConfigError("the InstantID engine needs InpaintModels.load(..., instantid=True)")
        if identity.face is not None and not identity.instantid and self.models.faceid_adapter is None:
            raise ConfigError("a face-embedding identity needs InpaintModels(faceid_adapter=...)")
        if not request.prompt.strip():
            raise ConfigError("the prompt is empty")
        if not request.seeds:
            raise ConfigError("no candidates asked for (seeds is empty)")
        if request.width % 8 or request.height % 8 or min(request.width, request.height) < 64:
            raise ConfigError(f"picture size {request.width}x{request.height}: each side must be a multiple of 8, "
                              "at least 64")
        if request.settings.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {request.settings.sampler!r}; choose from {', '.join(SAMPLERS)}")
        if request.control is not None:
            if request.control not in CONTROLS:
                raise ConfigError(f"unknown control {request.control!r}; choose from {', '.join(CONTROLS)}")
            if request.control not in self.models.controlnets:
                raise ConfigError(f"the {request.control} ControlNet is not loaded (loaded: "
                                  f"{sorted(self.models.controlnets)})")
            img = request.control_image
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != (request.height, request.width, 3):
                raise ConfigError(f"control_image must be uint8 RGB ({request.height}, {request.width}, 3)")

    def _plus(self, identity: Sitter, ref_rgb, ref_face):
        """FaceID-Plus's CLIP input from the user's face, when the loaded adapter reads one."""
        if not self.models.reads_face_crop(identity):
            return None
        if ref_rgb is None or ref_face is None:
            raise ConfigError("the FaceID-Plus adapter reads the user's face crop: pass ref_rgb and ref_face")
        return faceid_plus_clip_embeds(self.models.image_encoder, ref_rgb, ref_face)

    def __call__(self, request: SceneRequest, identity: Sitter, *, ref_rgb: np.ndarray | None = None,
                 ref_face: Face | None = None, progress: ProgressCallback | None = None, cancel=None) -> list[np.ndarray]:
        """The candidates, one per seed (uint8 RGB, height x width), up to max_batch per denoising call."""
        self.check_inputs(request, identity)
        stop = Stop(self, cancel)
        plus = self._plus(identity, ref_rgb, ref_face)
        out: list[np.ndarray] = []
        for start in range(0, len(request.seeds), self.max_batch):
            stop.check()
            out += self._render(request, request.seeds[start:start + self.max_batch], identity, plus, progress, stop)
            report(progress, "candidates", len(out), len(request.seeds))
        return out

    def _render(self, request: SceneRequest, seeds: Sequence[int], identity: Sitter, plus, progress, stop):
        import torch

        b, size_hw = len(seeds), (request.height, request.width)
        names, drawings, scales = [], [], []
        if request.control is not None:
            names.append(request.control), drawings.append(request.control_image), scales.append(request.control_scale)
        if identity.instantid:  # IdentityNet reads InstantID's five keypoints where the face goes
            head = head_face(request.width, request.height, request.head)
            names.append(IDENTITYNET)
            drawings.append(controls.face_keypoints(size_hw, head, style="kps"))
            scales.append(float(identity.identitynet_scale))
        pipe = self.models.text2img(names)
        pipe.scheduler = make_scheduler(request.settings.sampler, self.models.components["scheduler"].config)
        guidance = request.settings.guidance_scale
        kwargs = identity_inputs(self.models, pipe, identity, batch=b, guidance=guidance > 1, plus=plus,
                                 style_lora=request.style_lora, style_weight=request.style_weight)
        if names:
            per_net = [_tensor([d] * b) for d in drawings]
            kwargs["image"] = per_net if len(names) > 1 else per_net[0]
            kwargs["controlnet_conditioning_scale"] = scales if len(names) > 1 else scales[0]
        steps = request.settings.steps

        def on_step(p, i, t, cb_kwargs):
            report(progress, "render", i + 1, steps)
            if stop.is_set():
                p._interrupt = True
            return cb_kwargs

        hook = None
        if identity.instantid:
            hook = identitynet_hook(self.models.identitynet, identity_tokens(pipe.unet, kwargs["ip_adapter_image_embeds"]))
        try:
            images = pipe(prompt=[request.prompt] * b, negative_prompt=[request.negative_prompt] * b,
                          height=request.height, width=request.width, num_inference_steps=steps,
                          guidance_scale=guidance, generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
                          output_type="np", callback_on_step_end=on_step, **kwargs).images
        finally:
            if hook is not None:
                hook.remove()
        stop.check()
        return [_to_uint8(img) for img in images]

    def detail(self, image: np.ndarray, face: Face, identity: Sitter, request: SceneRequest, seed: int, *,
               ref_rgb: np.ndarray | None = None, ref_face: Face | None = None,
               progress: ProgressCallback | None = None, cancel=None) -> tuple[np.ndarray, np.ndarray]:
        """The face-detail pass: the square around `face` inpainted at the working size with the identity,
        through the face mask only. Returns (image, mask): the mask (image-sized, 0/255) covers every pixel
        that may differ from `image`."""
        import torch
        from PIL import Image

        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError("image must be uint8 RGB (H, W, 3)")
        stop = Stop(self, cancel)
        strength, steps = request.detail_strength, request.settings.steps
        if strength <= 0 or int(steps * strength) < 1:
            return image.copy(), np.zeros(image.shape[:2], np.uint8)
        crop = controls.face_crop(image.shape[:2], face, self.detail_size, expand=2.0)
        region, cface = crop.crop(image), crop.face(face)
        mask = controls.inpaint_mask(region.shape[:2], cface)
        pipe = self.models.pipeline(())
        guidance = request.settings.guidance_scale
        kwargs = identity_inputs(self.models, pipe, identity, batch=1, guidance=guidance > 1,
                                 plus=self._plus(identity, ref_rgb, ref_face), style_lora=request.style_lora,
                                 style_weight=request.style_weight)
        total = max(1, int(steps * strength))

        def on_step(p, i, t, cb_kwargs):
            report(progress, "detail", i + 1, total)
            if stop.is_set():
                p._interrupt = True
            return cb_kwargs

        out = pipe(prompt=request.prompt, negative_prompt=request.negative_prompt, image=Image.fromarray(region),
                   mask_image=Image.fromarray(mask), height=crop.size, width=crop.size, strength=strength,
                   num_inference_steps=steps, guidance_scale=guidance,
                   generator=torch.Generator("cpu").manual_seed(int(seed) + 1), output_type="np",
                   callback_on_step_end=on_step, **kwargs).images[0]
        stop.check()
        return crop.paste(image, _to_uint8(out), mask), crop.full_mask(image.shape[:2], mask)
