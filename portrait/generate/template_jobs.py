"""Template jobs: what the two-pass recipe paints on a template, and the LoRA validator built on it.

    job = job_from_template(load_template("studio-grey"), steps=20)        # an InpaintJob for slot 0
    result = generate_on_template(models, template, identity, ref_rgb, ref_face)   # every slot in turn

A template is a portrait.templates.Template or any mapping with its fields (image, faces, prompt,
negative_prompt, inpaint / edge pass settings, style_lora, style_weight, seed): this module reads
templates, it never loads them (that is portrait.templates', one layer up).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..faces.types import Face
from ..progress import ProgressCallback
from .pipelines import InpaintModels, controlnet_model
from .template_inpaint import Sitter, InpaintJob, InpaintResult, PassSettings, TemplateInpaint, recipe


def _field(obj, name: str, default=None):
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _optional_float(v) -> float | None:
    return None if v is None else float(v)


def _pass_from(section, base: PassSettings) -> PassSettings:
    """A template's pass: its PassSettings (portrait.templates), or one from a mapping's fields over `base`."""
    if section is None:
        return base
    if isinstance(section, PassSettings):  # controlnets None: the base's recipe
        return section if section.controlnets is not None else replace(section, controlnets=dict(base.controlnets))
    nets = _field(section, "controlnets")
    return PassSettings(
        strength=float(_field(section, "strength", base.strength) or base.strength),
        steps=int(_field(section, "steps", base.steps) or base.steps),
        controlnets=dict(nets) if nets is not None else dict(base.controlnets),
        guidance_scale=_optional_float(_field(section, "guidance_scale", base.guidance_scale)),
    )


def template_controls(template, controlnets: Mapping[str, float] | None = None, arch: str = "sd15") -> list[str]:
    """The controls (ControlNet names) a template's two passes run on an `arch` base, pass 1's first;
    `controlnets` overrides pass-1 scales as in job_from_template."""
    pass1, pass2 = recipe(arch)
    p1 = _pass_from(_field(template, "inpaint"), pass1)
    if controlnets is not None:
        p1 = replace(p1, controlnets={**p1.controlnets, **controlnets})
    p2 = _pass_from(_field(template, "edge"), pass2)
    return list(dict.fromkeys(n for n, _ in (*p1.active(), *p2.active())))


def template_slots(template, face_analysis=None) -> dict[int, Face]:
    """The template's face slots to paint: portrait.templates.Template.slot_faces(), or a mapping's 'faces'."""
    if hasattr(template, "slot_faces"):
        return dict(template.slot_faces(face_analysis))
    return dict(enumerate(_field(template, "faces") or []))


def job_from_template(template, *, slot: int | None = None, steps: int | None = None, seed: int | None = None,
                      strength: float | None = None, controlnets: Mapping[str, float] | None = None,
                      image: np.ndarray | None = None, face_analysis=None, arch: str = "sd15") -> InpaintJob:
    """An InpaintJob from a portrait.templates.Template (or a mapping with the same fields: image, faces,
    prompt, negative_prompt, inpaint / edge pass settings, style_lora, style_weight, seed) for face `slot`
    (default: the first slot) on an `arch` base (a pass without ControlNets of its own gets that
    architecture's recipe: template_inpaint.RECIPES). `steps`, `seed`, `strength` (pass 1) and
    `controlnets` (pass-1 scales) override; `image` replaces the template image (to chain slots)."""
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
    pass1, pass2 = recipe(arch)
    p1 = _pass_from(_field(template, "inpaint"), pass1)
    p2 = _pass_from(_field(template, "edge"), pass2)
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


def generate_on_template(models: InpaintModels, template, identity: Sitter | str | Path, ref_rgb: np.ndarray,
                         ref_face: Face, *, progress: ProgressCallback | None = None, inpaint: TemplateInpaint | None = None,
                         slot: int | None = None, face_analysis=None, image: np.ndarray | None = None, cancel=None,
                         **overrides) -> InpaintResult:
    """`identity` painted on `template` (what LoRA validation calls). With `slot=None` every face slot
    of the template is painted in turn (each on the previous result); `image` replaces the template's
    image as the starting point (to paint several people slot by slot); overrides as job_from_template."""
    ident = identity if isinstance(identity, Sitter) else Sitter.from_path(identity)
    runner = inpaint or TemplateInpaint(models)
    slots = [slot] if slot is not None else sorted(template_slots(template, face_analysis))
    result = None
    for s in slots:
        job = job_from_template(template, slot=s, face_analysis=face_analysis, arch=models.arch,
                                image=image if result is None else result.image, **overrides)
        r = runner(job, ident, ref_rgb, ref_face, progress=progress, cancel=cancel)[0]
        if result is not None:
            r.mask = np.maximum(r.mask, result.mask)
        result = r
    return result


def template_validator(base, templates: Sequence, user_crops: Sequence[np.ndarray], centroid: np.ndarray | None,
                       face_analysis, *, steps: int = 12, controlnet_models: dict | None = None,
                       crop_size: int | None = None, save_dir: Path | None = None):
    """A LoRA validator (portrait.identity.lora_select.Validator) that renders as the product uses the LoRA:
    each checkpoint painted into the faces of `templates` (loaded Template objects) with the two-pass recipe,
    scored by likeness to the user's centroid.

    Only the ControlNets the templates use are loaded, the ones made for the base's architecture, on the
    base's device and dtype. `crop_size` is the inpaint working size (default: the architecture's);
    with `save_dir` every render is written as step_<N>_<template>.png for the user to look at."""
    from ..identity.lora_select import NO_FACE, face_score
    from ..imageio import save_image
    from ..models.device import dtype_name
    from ..models.loading import load_controlnet, set_identity_lora

    loaded = list(templates)
    ref = None
    for crop in user_crops:  # the user's crop nearest the centroid is the fusion reference
        faces = face_analysis.analyze(crop, max_faces=1)
        if faces and faces[0].embedding is not None and centroid is not None:
            d = face_analysis.distance(faces[0].embedding, centroid)
            if ref is None or d < ref[0]:
                ref = (d, crop, faces[0])
    models = InpaintModels(base, {})
    device, dtype = str(base.unet.device), dtype_name(base.unet.dtype)
    for control in dict.fromkeys(c for t in loaded for c in template_controls(t, arch=models.arch)):
        net = load_controlnet(controlnet_model(models.arch, control, controlnet_models), device=device, dtype=dtype)
        models.controlnets[control] = net
    runner = TemplateInpaint(models, crop_size=crop_size)

    def validate(pipe, step: int, lora_path=None) -> float:  # noqa: ARG001
        if ref is None or lora_path is None:
            return NO_FACE
        try:
            images = [generate_on_template(models, t, Sitter(lora=lora_path, lora_weight=1.0), ref[1], ref[2],
                                           inpaint=runner, steps=steps, face_analysis=face_analysis).image
                      for t in loaded]
        finally:
            set_identity_lora(base, None)  # back to the adapter being trained
        if save_dir is not None:
            for t, img in zip(loaded, images):
                save_image(img, Path(save_dir) / f"step_{step:05d}_{t.name}.png")
        return face_score(images, centroid, face_analysis)

    return validate
