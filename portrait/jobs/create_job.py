"""The create job: new pictures of the identity from style packs, with no template photo.

Per style: N candidates in one text-to-image call with the identity (LoRA, FaceID / FaceID-Plus, or
InstantID on SDXL) and the style's ControlNet pose, then the face-detail pass on the face found in each,
optional fusion, retouch and upscale, and ranking by likeness to the user; `likeness_bar` tries new seeds
while no candidate is that close. out_dir gets <style>/NN.png (NN = rank) and create.json.

Every style, model and option is checked before anything loads: on a machine without the diffusion
weights the job fails at once with every missing model and the `portrait models fetch` line for each.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, ModelMissingError
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .configs import CreateConfig
from .generate_job import check_device, find_reference, identity_engine
from .results import CreateResult

RESULT_NAME = "create.json"
LORA_SUBJECT = "ohwx person"  # what training captioned the identity LoRA's photos with (preprocess.captions)
FACE_SUBJECT = "a person"  # a face embedding's likeness comes through the adapter, not the words


def _base_arch(manifest, base: str) -> str:
    """The base's architecture from its config when it is present, else from its name (for the list of
    missing models)."""
    from ..models import loading

    try:
        return loading.base_unet_config(base, manifest)[0]
    except ModelMissingError:
        return "sdxl" if "xl" in str(base).lower() else "sd15"


def is_photo_folder(path: Path) -> bool:
    """A folder of photos rather than an identity (no identity.safetensors / identity_embedding.safetensors)."""
    from .configs import EMBEDDING_NAME

    return path.is_dir() and not any((path / n).is_file() for n in ("identity.safetensors", EMBEDDING_NAME))


def _face_engine(manifest, arch: str, engine: str) -> str:
    """faceid | instantid: what paints a face embedding with `engine` (auto: InstantID on SDXL when both its
    files are present, else FaceID)."""
    from ..engines import INSTANTID_NAMES

    if engine != "auto":
        return engine
    iid = arch == "sdxl" and all(n in manifest.specs and manifest.available(n) for n in INSTANTID_NAMES)
    return "instantid" if iid else "faceid"


def needed_models(manifest, base: str, face: bool, engine: str, styles: Sequence) -> list[str]:
    """The manifest models this job loads: the base, the identity's adapter files (`face`: a face
    embedding, or photos to embed) and each style's pose ControlNet (style LoRAs: Style.lora_path)."""
    from ..engines import INSTANTID_NAMES
    from ..generate.pipelines import controlnet_model, faceid_adapter_name

    arch = _base_arch(manifest, base)
    names = [base]
    if face:
        engine = _face_engine(manifest, arch, engine)
        names += list(INSTANTID_NAMES) if engine == "instantid" else [faceid_adapter_name(manifest, arch)]
    names += [controlnet_model(arch, s.pose.control) for s in styles if s.pose is not None]
    return list(dict.fromkeys(names))


def require_all(manifest, names: Sequence[str]) -> None:
    """One ModelMissingError naming every missing model of `names` (manifest names; paths are checked when
    they load) and how to get each; a licence or hash problem raises as it is."""
    missing: list[ModelMissingError] = []
    for name in names:
        if name not in manifest.specs:
            continue
        try:
            manifest.require(name)
        except ModelMissingError as exc:
            missing.append(exc)
    if missing:
        first = missing[0]
        rest = "".join(f" Also missing: model '{e.model}' (expected {e.path}). {e.how}" for e in missing[1:])
        raise ModelMissingError(first.model, first.path, first.how + rest)


def _request(style, arch: str, config: CreateConfig, seeds, subject: str):
    from ..generate.text_to_image import SceneRequest, control_drawing, scene_size
    from ..imageio import load_rgb

    s = replace(style.settings(arch), **{k: v for k, v in (
        ("steps", config.steps), ("guidance_scale", config.guidance_scale), ("sampler", config.sampler),
        ("size", config.size)) if v is not None})
    width, height = scene_size(s.size, style.aspect)
    prompt = style.prompt_for(subject) + (f", {config.prompt.strip()}" if config.prompt and config.prompt.strip() else "")
    control = image = None
    head = style.pose.head if style.pose is not None and style.pose.head else None
    if style.pose is not None:
        control = style.pose.control
        image = control_drawing(width, height, image=load_rgb(style.pose.image) if style.pose.image else None,
                                head=head)
    extra = {"head": head} if head else {}
    return SceneRequest(prompt, width, height, tuple(seeds), negative_prompt=style.negative_prompt, settings=s,
                        control=control, control_image=image, control_scale=style.pose.scale if style.pose else 0.8,
                        detail_strength=style.detail_strength if config.detail else 0.0, **extra)


def create(identity: Path, styles: Sequence[str | Path], out_dir: Path, config: CreateConfig | None = None, *,
           progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> CreateResult:
    """Paint `identity` (a LoRA from train, a face embedding from embed, or a folder of photos, embedded
    first as `portrait embed` does) into each style (names or pack folders): `config.count` candidates each,
    ranked by likeness."""
    from ..engines import choose_retouch, choose_upscale
    from ..faces import FaceConfig, get_face_analysis
    from ..generate.template_inpaint import Sitter
    from ..generate.text_to_image import SceneRender
    from ..models import loading
    from ..models.manifest import get_manifest
    from ..styles import load_style

    config = config or CreateConfig()
    if not styles:
        raise ConfigError("no style given: name at least one style (`portrait styles list`) or style folder")
    packs = [load_style(s) for s in styles]  # StyleError naming the pack or the search path
    manifest = get_manifest(config.models_dir)
    photos = is_photo_folder(Path(identity))
    ident = None if photos else Sitter.from_path(identity)
    base = config.base_model or "sd15"
    require_all(manifest, needed_models(manifest, base, photos or ident.face is not None, config.engine, packs))
    style_loras = {p.name: p.lora_path(manifest) for p in packs}
    arch, _ = loading.base_unet_config(base, manifest)
    if photos:  # train-free: the photos' face embedding, made for the adapter that will paint it
        identity = _embed_photos(Path(identity), Path(out_dir), manifest, arch, config, progress, cancel)
        ident = Sitter.from_path(identity)
    id_engine = identity_engine(config.engine, ident, base, manifest)
    if id_engine is not None:
        ident.engine = id_engine
    retouch_choice = choose_retouch(config.retouch, manifest)
    upscale_choice = choose_upscale(config.upscale, manifest, config.upscale_factor)
    check_device(config)
    fa = get_face_analysis(FaceConfig(embedder=ident.face.engine) if ident.face is not None else FaceConfig())
    ref_rgb, ref_face, ref_file = find_reference(Path(identity), config.reference, fa)
    user = ident.face.embedding * ident.face.norm if ident.face is not None else ref_face.embedding
    subject = FACE_SUBJECT if ident.lora is None else LORA_SUBJECT
    first = config.seed or 0
    requests = [_request(p, arch, config, range(first, first + config.count), subject) for p in packs]
    controls = sorted({r.control for r in requests if r.control})
    check_cancel(cancel, "creation cancelled")
    from ..templates.painting import load_models

    models = load_models(base, id_engine, manifest, device=config.device, dtype=config.dtype, controls=controls,
                         progress=progress)
    render = SceneRender(models, detail_size=config.detail_size)
    finish = _Finish(config, fa, ref_rgb, ref_face, retouch_choice.engine, upscale_choice.engine, manifest,
                     str(models.device))
    out = Path(out_dir)
    written = []
    try:
        report(progress, "styles", 0, len(packs))
        for i, (pack, req) in enumerate(zip(packs, requests)):
            req = replace(req, style_lora=style_loras[pack.name], style_weight=pack.lora_weight if pack.lora else 0.0)
            ranked = _style_candidates(render, req, ident, finish, user, config, progress, cancel)
            written.append({"style": pack.name, "prompt": req.prompt, "size": [req.width, req.height],
                            "sampler": req.settings.sampler, "steps": req.settings.steps,
                            "outputs": _save(ranked, out / pack.name)})
            report(progress, "styles", i + 1, len(packs))
    finally:
        models.clear_identity()
    result = CreateResult(str(identity), ident.kind, id_engine, base, ref_file, written, out / RESULT_NAME)
    out.mkdir(parents=True, exist_ok=True)
    result.result_file.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _embed_photos(photos: Path, out_dir: Path, manifest, arch: str, config: CreateConfig, progress, cancel) -> Path:
    """`portrait embed` of a photo folder (intake and selection first) into out_dir/identity/, with the face
    recogniser the chosen adapter was trained on."""
    from ..generate.pipelines import faceid_adapter_name
    from ..models.adapters import trained_on
    from .configs import EmbedConfig
    from .embed_job import embed

    instantid = _face_engine(manifest, arch, config.engine) == "instantid"
    adapter = "instantid-adapter" if instantid else faceid_adapter_name(manifest, arch)
    result = embed(photos, out_dir / "identity", EmbedConfig(embedder=trained_on(manifest.require(adapter)),
                                                             models_dir=config.models_dir),
                   progress=progress, cancel=cancel)
    return result.file


class _Finish:
    """What follows the picture: the face found, the detail pass, fusion, retouch, upscale, the embedding."""

    def __init__(self, config: CreateConfig, fa, ref_rgb, ref_face, retouch: str, upscale: str, manifest, device):
        self.config, self.fa, self.ref_rgb, self.ref_face = config, fa, ref_rgb, ref_face
        self.retouch, self.upscale, self.manifest, self.device = retouch, upscale, manifest, device

    def __call__(self, render, image, seed: int, req, ident, progress, cancel):
        from ..post.fusion import fuse
        from ..post.rank import Candidate, output_face
        from ..post.retouch import retouch
        from ..post.upscale import upscale

        meta: dict = {"seed": seed, "detail": False}
        face = output_face(self.fa.analyze(image))
        if face is not None and req.detail_strength > 0:
            image, _ = render.detail(image, face, ident, req, seed, ref_rgb=self.ref_rgb, ref_face=self.ref_face,
                                     progress=progress, cancel=cancel)
            meta["detail"] = True
        if face is not None and self.config.fusion:
            image = fuse(image, face, self.ref_rgb, self.ref_face, engine="classic").image
        if face is not None and self.retouch != "skipped":
            image = retouch(image, face, engine=self.retouch, strength=self.config.retouch_strength,
                            manifest=self.manifest, device=self.device)
        if self.upscale != "skipped" and self.config.upscale_factor > 1:
            image = upscale(image, self.config.upscale_factor, engine=self.upscale, manifest=self.manifest,
                            device=self.device)
        judged = output_face(self.fa.analyze(image))
        return Candidate(None if judged is None else judged.embedding, image=image, meta=meta)


def _style_candidates(render, req, ident, finish: _Finish, user, config: CreateConfig, progress, cancel):
    """The style's candidates ranked; with a likeness bar, rounds of `count` new seeds while none passes."""
    from ..post.rank import rank_outputs

    fa = finish.fa
    bar = config.likeness_bar
    cands = []
    for round_ in range(1 + (config.retries if bar is not None else 0)):
        seeds = tuple(s + round_ * config.count for s in req.seeds)
        images = render(replace(req, seeds=seeds), ident, ref_rgb=finish.ref_rgb, ref_face=finish.ref_face,
                        progress=progress, cancel=cancel)
        for seed, img in zip(seeds, images):
            check_cancel(cancel, "creation cancelled")
            cands.append(finish(render, img, seed, req, ident, progress, cancel))
            cands[-1].meta["round"] = round_
        ranked = rank_outputs(cands, user, metric=fa.metric, threshold=fa.same_person_threshold, bar=bar)
        if bar is None or any(r.passed_bar for r in ranked):
            return ranked
    return ranked


def _save(ranked, folder: Path) -> list[dict]:
    from ..imageio import save_image

    folder.mkdir(parents=True, exist_ok=True)
    outputs = []
    for r in ranked:
        r.path = str(save_image(r.image, folder / f"{r.rank:02d}.png"))
        d = r.to_dict()
        if d["distance"] is None:  # no face found: no likeness to show (not a likeness of 0)
            d["similarity"] = None
        outputs.append(d)
    return outputs
