"""The generate job: an identity (LoRA or face embedding) painted into templates by two-pass ControlNet
inpainting; out_dir gets NN_<template>.png per template and generate.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .configs import REFERENCE_NAME, GenerateConfig
from .results import GenerateResult

RESULT_NAME = "generate.json"


def find_reference(identity_path: Path, reference: str | Path | None, fa):
    """(photo, face, file) for the fusion stages: `reference` (a photo or a training set), else
    reference.png beside the identity file; ConfigError when neither holds a usable face."""
    from ..identity.face_embedding import trainset_images
    from ..imageio import load_rgb

    if reference:
        r = Path(reference)
        candidates = trainset_images(r) if r.is_dir() else [r]
    else:
        folder = identity_path if identity_path.is_dir() else identity_path.parent
        candidates = [folder / REFERENCE_NAME] if (folder / REFERENCE_NAME).is_file() else []
        if not candidates:
            raise ConfigError(f"no {REFERENCE_NAME} beside {identity_path}: pass --reference PHOTO_OR_TRAINSET_DIR")
    for c in candidates:
        rgb = load_rgb(c)
        faces = fa.analyze(rgb, max_faces=1)
        if faces:
            return rgb, faces[0], str(c)
    raise ConfigError(f"no usable face in the reference {reference or candidates[0]}")


def identity_engine(engine: str, ident, base: str, manifest) -> str | None:
    """The engine painting a face-embedding identity: `engine`, or auto = the rule `portrait run` uses
    (engines.choose_identity: InstantID on SDXL when its files are present and its adapter takes the
    identity's embeddings, else IP-Adapter FaceID). None for a LoRA identity."""
    from ..engines import choose_identity

    if ident.face is None:
        if engine != "auto":
            raise ConfigError(f"--engine {engine} needs a face embedding from `portrait embed` as --identity, "
                              "not a LoRA")
        return None
    if engine == "auto":
        engine, why = choose_identity(manifest, base, None, embedder=ident.face.engine)
        if engine is None:
            if not manifest.available("ip-adapter-faceid"):
                manifest.require("ip-adapter-faceid")  # the missing-model error names the file to supply
            raise ConfigError(f"cannot paint this face embedding: {why}")
    return engine


def check_device(config) -> None:
    """An unknown device or dtype asked for in `config` fails now, before the reference photo is read."""
    if config.dtype is not None or config.device is not None:
        from ..models.device import pick_device

        pick_device(config.device, config.dtype)


def generate(identity: Path, templates: Sequence[str | Path], out_dir: Path, config: GenerateConfig | None = None, *,
             progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> GenerateResult:
    """Paint `identity` (a LoRA from train, or a face embedding from embed) into each template's face (names,
    template folders or image files). Every template, model and option is checked before the reference
    photo is read."""
    from ..engines import INSTANTID_NAMES, missing_controlnets
    from ..faces import FaceConfig, get_face_analysis
    from ..generate.template_inpaint import Sitter
    from ..models import loading
    from ..models.manifest import get_manifest
    from ..preflight import check_diffusion_settings
    from ..templates import resolve_templates
    from ..templates.painting import Painter

    config = config or GenerateConfig()
    if not templates:
        raise ConfigError("no template given: name at least one template, template folder or image")
    manifest = get_manifest(config.models_dir)
    ident = Sitter.from_path(identity)
    base = config.base_model or "sd15"
    id_engine = identity_engine(config.engine, ident, base, manifest)
    if id_engine is not None:
        ident.engine = id_engine
    face = FaceConfig(embedder=ident.face.engine) if ident.face is not None else FaceConfig()
    fa = get_face_analysis(face)
    tmpls = resolve_templates(templates, fa)  # names, folders or image files; all checked first
    if id_engine == "faceid":  # the engine asked for first (a missing file named now), then what the templates need
        manifest.require("ip-adapter-faceid")
    if id_engine == "instantid":
        for name in INSTANTID_NAMES:
            manifest.require(name)
    over = {"steps": config.steps, "seed": config.seed, "strength": config.strength}
    arch, _ = loading.base_unet_config(base, manifest)  # ModelMissingError naming a missing base
    # Bad pass settings are the user's to fix, before any model loads; the base's architecture picks the
    # recipe's ControlNets (SDXL: canny only).
    jobs = check_diffusion_settings(tmpls, fa, steps=config.steps, strength=config.strength, arch=arch)
    needed = list(dict.fromkeys(n for j in jobs for n, _ in (*j.pass1.active(), *j.pass2.active())))
    for name in missing_controlnets(manifest, arch, needed):
        manifest.require(name)  # ModelMissingError naming the ControlNet a template needs
    check_device(config)
    ref_rgb, ref_face, ref_file = find_reference(Path(identity), config.reference, fa)
    check_cancel(cancel, "generation cancelled")
    painter = Painter.load(base, id_engine, manifest, device=config.device, dtype=config.dtype, controls=needed,
                           progress=progress, sampler=config.scheduler)
    report(progress, "outputs", 0, len(tmpls))
    with painter.session():  # nothing of this identity stays on the cached base
        painted = painter.paint(tmpls, ident, [(ref_rgb, ref_face)], face_analysis=fa, progress=progress,
                                cancel=cancel, **over)
    results = [r[0] for r in painted]
    report(progress, "outputs", len(results), len(tmpls))
    return _write(results, Path(out_dir), identity, ident, id_engine, ref_file, base)


def _write(results, out: Path, identity, ident, id_engine, ref_file: str, base: str) -> GenerateResult:
    from ..imageio import save_image

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, r in enumerate(results):
        path = save_image(r.image, out / f"{i:02d}_{r.name or 'template'}.png")
        written.append({"template": r.name, "file": str(path), "seed": r.seed, **r.details})
    result = GenerateResult(str(identity), ident.kind, id_engine, ref_file, base, written, out / RESULT_NAME)
    result.result_file.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result
