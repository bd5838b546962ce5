"""`portrait generate` (identity painted into templates by two-pass ControlNet inpainting) and
`portrait embed` (train-free identity: a face embedding for IP-Adapter FaceID)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError, TemplateError
from .common import handle_errors, json_option, print_json, progress_bar

REFERENCE_NAME = "reference.png"
EMBEDDING_NAME = "identity_embedding.safetensors"


def _template(name_or_dir: str, fa):
    """A template by name or folder (portrait.templates); a bare image file also works (its faces detected)."""
    from ..imageio import load_rgb

    p = Path(name_or_dir)
    if p.is_file():
        image = load_rgb(p)
        faces = fa.analyze(image)
        if not faces:
            raise TemplateError(f"template image {p} has no usable face")
        return {"name": p.stem, "image": image, "faces": faces[:1]}
    from ..templates import load_template

    return load_template(name_or_dir)


def _reference(identity_path: Path, reference: str | None, fa):
    """The reference photo and face for the fusion stages: --reference (photo or training set), else
    reference.png beside the identity file."""
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


def _identity_engine(engine: str, ident, base: str, manifest) -> str | None:
    """The engine painting a face-embedding identity: --engine, or auto = the rule `portrait run` uses
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


def register(group: click.Group) -> None:
    @group.command("generate")
    @click.option("--base-model", default=None, help="Diffusion base: manifest name or path (default: sd15 from the models config).")
    @click.option("--identity", "identity", required=True, type=click.Path(exists=True),
                  help="Identity LoRA (`portrait train`) or face embedding (`portrait embed`).")
    @click.option("--template", "templates", multiple=True, required=True, help="Template name, folder or image; repeatable.")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
    @click.option("--reference", default=None, type=click.Path(exists=True),
                  help="The user's reference photo or training set (default: reference.png beside the identity).")
    @click.option("--steps", type=click.IntRange(1, 200), default=None, help="Scheduler steps for both passes.")
    @click.option("--seed", type=int, default=None)
    @click.option("--strength", type=click.FloatRange(0.01, 1.0), default=None, help="Pass-1 denoise strength.")
    @click.option("--device", default=None, help="cpu | cuda | mps (default: best available).")
    @click.option("--engine", type=click.Choice(("auto", "faceid", "instantid")), default="auto", show_default=True,
                  help="How a face-embedding identity is painted: IP-Adapter FaceID, or InstantID (SDXL: IdentityNet "
                  "+ adapter); auto = InstantID when the base is SDXL and its files are present.")
    @json_option
    @handle_errors
    def generate(base_model, identity, templates, out_dir, reference, steps, seed, strength, device, engine, as_json):
        """Paint the identity into each template's face (two-pass ControlNet inpainting)."""
        from ..faces import FaceConfig, get_face_analysis
        from ..generate.pipelines import InpaintModels
        from ..generate.template_inpaint import Identity, TemplateInpaint
        from ..generate.template_jobs import generate_on_template, job_from_template, template_slots
        from ..models.loading import base_unet_config
        from ..models.manifest import get_manifest

        manifest = get_manifest()
        ident = Identity.from_path(identity)
        base = base_model or "sd15"
        id_engine = _identity_engine(engine, ident, base, manifest)
        if id_engine is not None:
            ident.engine = id_engine
        fa = get_face_analysis(FaceConfig(embedder=ident.face.engine) if ident.face is not None else FaceConfig())
        ref_rgb, ref_face, ref_file = _reference(Path(identity), reference, fa)
        tmpls = [_template(t, fa) for t in templates]
        faceid = manifest.require("ip-adapter-faceid") if id_engine == "faceid" else None
        over = {"steps": steps, "seed": seed, "strength": strength}
        arch, _ = base_unet_config(base, manifest)  # the recipe's ControlNets depend on it (SDXL: canny only)
        first = [job_from_template(t, face_analysis=fa, arch=arch, **over) for t in tmpls]
        for j in first:  # bad settings are the user's to fix: a clear message and exit code 2, not a traceback
            j.pass1.check(f"template {j.name} pass 1")
            j.pass2.check(f"template {j.name} pass 2")
        needed = list(dict.fromkeys(n for j in first for n, _ in (*j.pass1.active(), *j.pass2.active())))
        multi = [i for i, t in enumerate(tmpls) if len(template_slots(t, fa)) > 1]
        with progress_bar(not as_json) as cb:
            cb("load models", 0, 1)
            models = InpaintModels.load(base, needed, manifest=manifest, device=device,
                                        faceid_adapter=faceid, instantid=id_engine == "instantid")
            cb("load models", 1, 1)
            runner = TemplateInpaint(models)
            # One-face templates run together (batched where their settings match); others slot by slot.
            single = [j for i, j in enumerate(first) if i not in multi]
            results = runner(single, ident, ref_rgb, ref_face, progress=cb) if single else []
            results += [generate_on_template(models, tmpls[i], ident, ref_rgb, ref_face, progress=cb, inpaint=runner,
                                             face_analysis=fa, **over) for i in multi]
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for i, r in enumerate(results):
            from PIL import Image

            path = out / f"{i:02d}_{r.name or 'template'}.png"
            Image.fromarray(r.image).save(path)
            written.append({"template": r.name, "file": str(path), "seed": r.seed, **r.details})
        summary = {"identity": str(identity), "identity_kind": ident.kind, "identity_engine": id_engine, "reference": ref_file,
                   "base_model": base_model or "sd15", "outputs": written}
        (out / "generate.json").write_text(json.dumps(summary, indent=2, default=str))
        if as_json:
            print_json(summary)
        else:
            for w in written:
                click.echo(f"{w['template']}: {w['file']}")

    if "embed" in group.commands:  # the identity module may own it
        return

    @group.command("embed")
    @click.argument("trainset", type=click.Path(exists=True, file_okay=False))
    @click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
                  help=f"Output file (default: TRAINSET/{EMBEDDING_NAME}).")
    @click.option("--embedder", type=click.Choice(("dlib-resnet", "arcface", "arcface-buffalo", "arcface-antelopev2")),
                  default="dlib-resnet", show_default=True,
                  help="Face engine: IP-Adapter FaceID and inswapper need arcface-buffalo (alias arcface), "
                       "InstantID arcface-antelopev2.")
    @json_option
    @handle_errors
    def embed(trainset, out_file, embedder, as_json):
        """Train-free identity: the mean face embedding of a training set, for IP-Adapter FaceID."""
        import shutil

        from ..faces import FaceConfig, get_face_analysis
        from ..identity.face_embedding import embed_identity

        fa = get_face_analysis(FaceConfig(embedder=embedder))
        with progress_bar(not as_json) as cb:
            ident = embed_identity(trainset, face_analysis=fa, progress=cb)
        out = Path(out_file) if out_file else Path(trainset) / EMBEDDING_NAME
        ident.save(out)
        # The photo nearest the identity serves as the fusion reference for `portrait generate`.
        folder = Path(trainset) / "train" if (Path(trainset) / "train").is_dir() else Path(trainset)
        ref = folder / ident.sources[0] if ident.sources else None
        if ref is not None and ref.is_file():
            shutil.copyfile(ref, out.parent / REFERENCE_NAME)
        summary = {"file": str(out), "engine": ident.engine, "dim": ident.dim, "metric": ident.metric,
                   "photos": ident.count, "reference": str(out.parent / REFERENCE_NAME) if ref else None}
        if as_json:
            print_json(summary)
        else:
            click.echo(f"{out}: {ident.dim}-d {ident.engine} embedding of {ident.count} photo(s)")
