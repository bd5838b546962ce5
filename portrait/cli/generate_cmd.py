"""`portrait generate` (identity painted into templates by two-pass ControlNet inpainting) and
`portrait embed` (train-free identity: a face embedding for IP-Adapter FaceID)."""

from __future__ import annotations

from pathlib import Path

import click

from ..faces.analysis import DETECTORS, EMBEDDERS
from ..jobs.configs import GenerateConfig
from .common import dtype_option, handle_errors, json_option, print_json, progress_bar, ranged
from .licence_opt import licence_option

EMBEDDING_NAME = "identity_embedding.safetensors"


def register(group: click.Group) -> None:
    @group.command("generate")
    @click.option("--base-model", default=None, help="Diffusion base: manifest name or path (default: sd15 from the models config).")
    @click.option("--identity", "identity", required=True, type=click.Path(exists=True),
                  help="Identity LoRA (`portrait train`) or face embedding (`portrait embed`).")
    @click.option("--template", "templates", multiple=True, required=True, help="Template name, folder or image; repeatable.")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
    @click.option("--reference", default=None, type=click.Path(exists=True),
                  help="The user's reference photo or training set (default: reference.png beside the identity).")
    @ranged(GenerateConfig, "steps", help="Scheduler steps for both passes.")
    @click.option("--seed", type=int, default=None)
    @ranged(GenerateConfig, "strength", help="Pass-1 denoise strength.")
    @click.option("--device", default=None, help="cpu | cuda | mps (default: best available).")
    @dtype_option()
    @click.option("--engine", type=click.Choice(("auto", "faceid", "instantid")), default="auto", show_default=True,
                  help="How a face-embedding identity is painted: IP-Adapter FaceID, or InstantID (SDXL: IdentityNet "
                  "+ adapter); auto = InstantID when the base is SDXL and its files are present.")
    @json_option
    @licence_option
    @handle_errors
    def generate(base_model, identity, templates, out_dir, reference, steps, seed, strength, device, dtype, engine,
                 as_json):
        """Paint the identity into each template's face (two-pass ControlNet inpainting).

        Every template, model and option is checked before the reference photo is read (exit 2 naming it)."""
        from .. import jobs

        config = jobs.GenerateConfig(base_model=base_model, reference=reference, steps=steps, seed=seed,
                                     strength=strength, device=device, dtype=dtype, engine=engine)
        with progress_bar(not as_json) as bar:
            result = jobs.generate(Path(identity), templates, Path(out_dir), config, progress=bar)
        if as_json:
            print_json(result.to_dict())
        else:
            for w in result.outputs:
                click.echo(f"{w['template']}: {w['file']}")

    if "embed" in group.commands:  # the identity module may own it
        return

    @group.command("embed")
    @click.argument("trainset", type=click.Path(exists=True, file_okay=False))
    @click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
                  help=f"Output file (default: TRAINSET/{EMBEDDING_NAME}).")
    @click.option("--embedder", type=click.Choice(EMBEDDERS),
                  default="dlib-resnet", show_default=True,
                  help="Face engine: IP-Adapter FaceID and inswapper need arcface-buffalo (alias arcface), "
                       "InstantID arcface-antelopev2.")
    @click.option("--detector", type=click.Choice(("auto",) + DETECTORS), default="auto", show_default=True,
                  help="auto: scrfd with an ArcFace embedder (ArcFace aligns on SCRFD's own five keypoints, as "
                       "insightface, InstantID and FaceID do), else dlib-hog.")
    @json_option
    @licence_option
    @handle_errors
    def embed(trainset, out_file, embedder, detector, as_json):
        """Train-free identity: the mean face embedding of a training set, for IP-Adapter FaceID."""
        from .. import jobs

        out = Path(out_file) if out_file else Path(trainset) / EMBEDDING_NAME
        config = jobs.EmbedConfig(embedder=embedder, detector=detector, file_name=out.name)
        with progress_bar(not as_json) as bar:
            result = jobs.embed(Path(trainset), out.parent, config, progress=bar)
        if as_json:
            print_json(result.to_dict())
        else:
            click.echo(f"{result.file}: {result.dim}-d {result.engine} embedding of {result.photos} photo(s)")
