"""`portrait generate`: an identity painted into templates by two-pass ControlNet inpainting."""

from __future__ import annotations

from pathlib import Path

import click

from ..generate.pipelines import SAMPLERS
from ..jobs.configs import GenerateConfig
from .common import dtype_option, handle_errors, json_option, print_json, progress_bar, ranged
from .licence_opt import licence_option


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
    @click.option("--scheduler", type=click.Choice(sorted(SAMPLERS)), default=None,
                  help="Sampler of both passes [default: dpm++2m-sde-karras on SD 1.5, euler on SDXL].")
    @click.option("--device", default=None, help="cpu | cuda | mps (default: best available).")
    @dtype_option()
    @click.option("--engine", type=click.Choice(("auto", "faceid", "instantid")), default="auto", show_default=True,
                  help="How a face-embedding identity is painted: IP-Adapter FaceID, or InstantID (SDXL: IdentityNet "
                  "+ adapter); auto = InstantID when the base is SDXL and its files are present.")
    @json_option
    @licence_option
    @handle_errors
    def generate(base_model, identity, templates, out_dir, reference, steps, seed, strength, scheduler, device, dtype,
                 engine, as_json):
        """Paint the identity into each template's face (two-pass ControlNet inpainting).

        Every template, model and option is checked before the reference photo is read (exit 2 naming it)."""
        from .. import jobs

        config = jobs.GenerateConfig(base_model=base_model, reference=reference, steps=steps, seed=seed,
                                     strength=strength, scheduler=scheduler, device=device, dtype=dtype, engine=engine)
        with progress_bar(not as_json) as bar:
            result = jobs.generate(Path(identity), templates, Path(out_dir), config, progress=bar)
        if as_json:
            print_json(result.to_dict())
        else:
            for w in result.outputs:
                click.echo(f"{w['template']}: {w['file']}")
