"""A template painted: the two-pass recipe's InpaintJobs for its face slots, and the LoRA validator built on it.

    job = job_from_template(load_template("studio-grey"), steps=20)        # an InpaintJob for slot 0
    result = generate_on_template(models, template, identity, ref_rgb, ref_face)   # every slot in turn
    painter.paint(templates, sitter, references)       # run's and generate's painting (Painter)

A template is a portrait.templates.Template or any mapping with its fields (image, faces, prompt,
negative_prompt, inpaint / edge pass settings, style_lora, style_weight, seed): this module reads
templates, it never loads them (portrait.templates.library does). It imports the diffusion stack (torch):
import it by name, never through the package's __init__.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..faces.types import Face
from ..progress import ProgressCallback, check_cancel, report
from ..generate.pipelines import InpaintModels, controlnet_model
from ..generate.template_inpaint import Sitter, InpaintJob, InpaintResult, PassSettings, TemplateInpaint, recipe


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
                         people: Mapping[int, tuple] | None = None, **overrides) -> InpaintResult:
    """`identity` painted on `template` (what LoRA validation calls). With `slot=None` every face slot
    of the template is painted in turn (each on the previous result); `people` maps a slot to another
    person's (Sitter, rgb, face), painted there instead; `image` replaces the template's image as the
    starting point; overrides as job_from_template."""
    ident = identity if isinstance(identity, Sitter) else Sitter.from_path(identity)
    runner = inpaint or TemplateInpaint(models)
    slots = [slot] if slot is not None else sorted(template_slots(template, face_analysis))
    result = None
    for s in slots:
        who, rgb, face = (people or {}).get(s, (ident, ref_rgb, ref_face))
        job = job_from_template(template, slot=s, face_analysis=face_analysis, arch=models.arch,
                                image=image if result is None else result.image, **overrides)
        r = runner(job, who, rgb, face, progress=progress, cancel=cancel)[0]
        if result is not None:
            r.mask = np.maximum(r.mask, result.mask)
        result = r
    return result


def load_models(base: str, engine: str | None, manifest, *, device: str | None = None, dtype: str | None = None,
                controls: Sequence[str] = (), progress: ProgressCallback | None = None) -> InpaintModels:
    """The base, `controls`' ControlNets and `engine`'s adapter files ("faceid", "instantid"; None for a LoRA
    identity: InpaintModels.for_engine) on `device` and `dtype`, under the "load models" progress stage."""
    report(progress, "load models", 0, 1)
    models = InpaintModels.for_engine(base, engine, controls, manifest=manifest, device=device, dtype=dtype)
    report(progress, "load models", 1, 1)
    return models


class Painter:
    """The diffusion side of `portrait run` and `portrait generate`, written once: one identity engine's
    models (InpaintModels.for_engine), the two-pass recipe on them, and templates painted from reference
    photos. A one-face template's jobs (every template and reference photo) go into one batched recipe
    call; a template with several faces, or other people in some slots, is painted slot by slot.

        painter = Painter.load("sd15", "faceid", manifest, device="cuda", controls=["canny"])
        with painter.session():                 # the identity is taken off the shared UNet afterwards
            results = painter.paint(templates, sitter, [(rgb, face)])     # results[template][reference]
    """

    def __init__(self, models: InpaintModels, *, sampler: str | None = None, crop_size: int | None = None,
                 fusion_engine: str = "classic"):
        self.models = models
        self.recipe = TemplateInpaint(models, fusion_engine=fusion_engine, crop_size=crop_size, sampler=sampler)

    @classmethod
    def load(cls, base: str, engine: str | None, manifest, *, device: str | None = None, dtype: str | None = None,
             controls: Sequence[str] = (), progress: ProgressCallback | None = None, **recipe) -> "Painter":
        """A Painter on load_models(...)'s models; `recipe`: sampler, crop_size, fusion_engine."""
        return cls(load_models(base, engine, manifest, device=device, dtype=dtype, controls=controls,
                               progress=progress), **recipe)

    @contextmanager
    def session(self):
        """One job's use: whatever identity it put on the shared UNet is taken off when it ends."""
        try:
            yield self
        finally:
            self.models.clear_identity()

    def paint(self, templates: Sequence, sitter: Sitter, references: Sequence[tuple[np.ndarray, Face]], *,
              people: Mapping[int, tuple] | None = None, face_analysis=None, progress: ProgressCallback | None = None,
              cancel=None, **overrides) -> list[list[InpaintResult]]:
        """Each template painted from each reference photo (rgb, face): results[t][r]. `people` maps a face
        slot to another person's (Sitter, rgb, face); overrides (steps, seed, strength) as job_from_template.
        Each template's ControlNets are loaded first (those of the base's architecture)."""
        arch = self.models.arch
        for t in templates:
            self.models.ensure_controlnets(template_controls(t, arch=arch))
        out: list[list[InpaintResult | None]] = [[None] * len(references) for _ in templates]
        together = [(i, j) for i, t in enumerate(templates) if not people and len(template_slots(t, face_analysis)) == 1
                    for j in range(len(references))]
        if together:
            own = len(references) > 1  # each job its own reference photo (FaceID-Plus reads each job's crop)
            made = {i: job_from_template(templates[i], face_analysis=face_analysis, arch=arch, **overrides)
                    for i in dict.fromkeys(i for i, _ in together)}  # one job per template, not per reference
            jobs = [replace(made[i], reference=tuple(references[j])) if own else made[i] for i, j in together]
            for (i, j), r in zip(together, self.recipe(jobs, sitter, *references[0], progress=progress, cancel=cancel)):
                out[i][j] = r
        for i, t in enumerate(templates):
            for j, (rgb, face) in enumerate(references):
                if out[i][j] is None:
                    check_cancel(cancel, "painting cancelled")
                    out[i][j] = generate_on_template(self.models, t, sitter, rgb, face, inpaint=self.recipe,
                                                     people=people, face_analysis=face_analysis, progress=progress,
                                                     cancel=cancel, **overrides)
        return out


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
