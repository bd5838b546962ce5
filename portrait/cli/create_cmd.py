"""`portrait styles list|show|add` and `portrait create` (new pictures of the identity from style packs)."""

from __future__ import annotations

from pathlib import Path

import click

from ..engines import RETOUCH_ENGINES
from ..generate.pipelines import SAMPLERS
from ..jobs.configs import IDENTITY_ENGINES, CreateConfig
from .common import dtype_option, handle_errors, json_option, print_json, progress_bar, ranged, report_scan
from .licence_opt import licence_option


def _summary(s, bundled: set[str]) -> dict:
    from ..styles import bundled_dir

    d = s.to_dict()
    d["overrides_bundled"] = s.name in bundled and s.directory.parent.resolve() != bundled_dir().resolve()
    return d


def register(group: click.Group) -> None:
    @group.group("styles")
    def styles() -> None:
        """Style packs: a prompt, its settings per base model and an optional pose, for `portrait create`."""

    @styles.command("list")
    @click.option("--tag", "tags", multiple=True, help="Only styles with this tag (repeatable: all of them).")
    @json_option
    @handle_errors
    def list_cmd(tags: tuple[str, ...], as_json: bool) -> None:
        """Styles on the search path (your folder, then the bundled ones), with their tags and licence."""
        from ..styles import bundled_dir, list_styles, style_dirs

        errors: list[dict] = []
        found = list_styles(on_error=lambda p, e: errors.append({"directory": str(p), "error": str(e)}))
        found = [s for s in found if set(tags) <= set(s.tags)]
        bundled = {s.name for s in list_styles([bundled_dir()])}
        if as_json:
            print_json({"styles": [_summary(s, bundled) for s in found], "errors": errors,
                        "search_path": [str(d) for d in style_dirs()]})
            return
        if found:
            click.echo(f"{'name':<18} {'aspect':<6} {'pose':<9} {'licence':<9} tags")
        for s in found:
            note = " (yours, overrides the bundled one)" if _summary(s, bundled)["overrides_bundled"] else ""
            pose = s.pose.control if s.pose else "-"
            click.echo(f"{s.name:<18} {s.aspect[0]}:{s.aspect[1]:<4} {pose:<9} {s.licence.split(':')[0] or 'unrecorded':<9} "
                       f"{' '.join(s.tags)}{note}")
        report_scan(errors, found, "styles", style_dirs())

    @styles.command("show")
    @click.argument("name")
    @json_option
    @handle_errors
    def show_cmd(name: str, as_json: bool) -> None:
        """One style's prompt, pose, and sampler / steps / guidance / size per base model."""
        from ..styles import load_style

        data = load_style(name).to_dict()
        if as_json:
            print_json(data)
            return
        for k, v in data.items():
            click.echo(f"{k:<16} {v}")

    @styles.command("add")
    @click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--name", default=None, help="The style's name (default: the pack's own).")
    @click.option("--force", is_flag=True, help="Replace your style of that name, or hide the bundled one.")
    @json_option
    @handle_errors
    def add_cmd(folder: Path, name: str | None, force: bool, as_json: bool) -> None:
        """Check the style pack FOLDER (a style.toml and the files it names) and copy it to your styles folder."""
        from ..styles import add_style

        s = add_style(folder, name, force=force)
        if as_json:
            print_json(s.to_dict())
        else:
            click.echo(f"added style '{s.name}' at {s.directory}")

    @group.command("create")
    @click.option("--identity", required=True, type=click.Path(exists=True),
                  help="Identity LoRA (`portrait train`), face embedding (`portrait embed`), or a folder of photos "
                       "(embedded first, for the adapter that paints it: train-free).")
    @click.option("--style", "styles_", multiple=True, required=True,
                  help="Style name (`portrait styles list`) or style folder; repeatable.")
    @click.option("--prompt", default=None, help="Words added to each style's prompt (\"red scarf, snow\").")
    @ranged(CreateConfig, "count", help="Candidates per style, rendered in one denoising call and ranked.")
    @click.option("--seed", type=click.IntRange(*CreateConfig.LIMITS["seed"]), default=None,
                  help="The first candidate's seed (candidate k: seed + k) [default: 0].")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
    @click.option("--base-model", default=None, help="Diffusion base: manifest name or path [default: sd15].")
    @click.option("--engine", type=click.Choice(IDENTITY_ENGINES), default="auto", show_default=True,
                  help="How a face embedding is painted: IP-Adapter FaceID, or InstantID (SDXL); auto = InstantID "
                       "on SDXL when its files are present.")
    @click.option("--reference", default=None, type=click.Path(exists=True),
                  help="The user's photo or training set, for ranking [default: reference.png beside the identity].")
    @ranged(CreateConfig, "steps", help="Scheduler steps [default: the style's].")
    @ranged(CreateConfig, "guidance_scale", help="Classifier-free guidance [default: the style's].")
    @click.option("--sampler", type=click.Choice(sorted(SAMPLERS)), default=None, help="Sampler [default: the style's].")
    @ranged(CreateConfig, "size", help="The picture's area is SIZE x SIZE [default: the style's: 512 SD 1.5, 1024 SDXL].")
    @click.option("--no-detail", is_flag=True, help="Skip the face-detail pass.")
    @click.option("--fusion", is_flag=True, help="Fuse the reference face into each candidate (classic fusion).")
    @click.option("--retouch", type=click.Choice(RETOUCH_ENGINES),
                  default="auto", show_default=True)
    @ranged(CreateConfig, "upscale_factor", help="Super-resolution factor (1: none).")
    @ranged(CreateConfig, "likeness_bar", help="A likeness distance: while no candidate is this close, new seeds "
                                               "are tried (--retries rounds).")
    @ranged(CreateConfig, "retries")
    @click.option("--device", default=None, help="cpu | cuda | mps [default: best available].")
    @dtype_option()
    @json_option
    @licence_option
    @handle_errors
    def create(identity, styles_, prompt, count, seed, out_dir, base_model, engine, reference, steps, guidance_scale,
               sampler, size, no_detail, fusion, retouch, upscale_factor, likeness_bar, retries, device, dtype, as_json):
        """New pictures of the identity in each style, with no template photo: COUNT candidates per style,
        ranked by likeness (OUT/STYLE/01.png is the most alike; OUT/create.json lists them all).

        Styles, models and options are all checked first: without the diffusion weights this stops at once,
        naming every missing model and the `portrait models fetch` line for each (exit 2)."""
        from .. import jobs

        config = jobs.CreateConfig(count=count, seed=seed, prompt=prompt, base_model=base_model, engine=engine,
                                   reference=reference, steps=steps, guidance_scale=guidance_scale, sampler=sampler,
                                   size=size, detail=not no_detail, fusion=fusion, retouch=retouch,
                                   upscale_factor=upscale_factor, likeness_bar=likeness_bar, retries=retries,
                                   device=device, dtype=dtype)
        with progress_bar(not as_json) as bar:
            result = jobs.create(Path(identity), styles_, Path(out_dir), config, progress=bar)
        if as_json:
            print_json(result.to_dict())
            return
        for s in result.styles:
            click.echo(f"{s['style']}:")
            for o in s["outputs"]:
                score = "no face found" if o["distance"] is None else f"likeness {o['similarity']:.2f}"
                click.echo(f"  #{o['rank']} {o['path']} (seed {o['seed']}, {score})")
        click.echo(f"report: {result.result_file}")
