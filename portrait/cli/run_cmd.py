"""`portrait run` (the whole chain on one folder of photos) and `portrait batch` (a studio's CSV of folders)."""

from __future__ import annotations

from pathlib import Path

import click

from ..engines import DIFFUSION_MODES, FUSION_ENGINES, RETOUCH_ENGINES, UPSCALE_ENGINES
from ..errors import ConfigError
from ..faces.analysis import FaceConfig
from ..generate.pipelines import SAMPLERS
from ..jobs.configs import CreateConfig
from ..jobs import RunConfig
from ..post.fusion import FRINGES, SKINS
from .common import (dtype_option, face_engine_options, handle_errors, json_option, min_photos_option, print_json, print_table,
                     progress_bar, ranged, top_k_option, with_options)
from .licence_opt import licence_option


def run_options(f):
    """Options shared by run and batch; they build a RunConfig."""
    opts = [
        top_k_option(help="At most this many photos are kept for the identity."),
        min_photos_option(),
        click.option("--fusion", type=click.Choice(FUSION_ENGINES), default="auto", show_default=True),
        click.option("--skin", type=click.Choice(SKINS), default="user", show_default=True,
                     help="Classic fusion: user = the user's skin tone on the face and on the template's neck, ears "
                     "and hands, in the template's light; template = the face recoloured to the template's skin."),
        click.option("--fringe", type=click.Choice(FRINGES), default="keep", show_default=True,
                     help="Classic fusion: keep = a fringe is pasted with the user's face; cut = it is left out and "
                     "the template's forehead shows (a cleaner forehead edge, at a cost in likeness)."),
        click.option("--retouch", type=click.Choice(RETOUCH_ENGINES), default="auto", show_default=True),
        ranged(RunConfig, "retouch_strength"),
        click.option("--upscale", type=click.Choice(UPSCALE_ENGINES), default="auto", show_default=True),
        ranged(RunConfig, "upscale_factor", help="Super-resolution factor (default: each template's output.upscale, 2 for the bundled ones)."),
        click.option("--diffusion", type=click.Choice(DIFFUSION_MODES), default="auto", show_default=True,
                     help="Two-pass ControlNet inpainting: auto = when a base model and an identity are present."),
        click.option("--base-model", default=None, help="Diffusion base: manifest name or path (default: sd15)."),
        click.option("--identity", "identity", default=None, type=click.Path(exists=True, dir_okay=False),
                     help="Identity LoRA from `portrait train` (default: the photos' face embedding, painted by "
                     "InstantID on an SDXL base with its files and --embedder arcface, else IP-Adapter FaceID)."),
        ranged(RunConfig, "variants", help="Reference photos rendered per template; the most alike output is kept."),
        ranged(RunConfig, "max_tries", help="With no output under the likeness bar, render up to this many variants."),
        ranged(RunConfig, "likeness_bar", help="Distance an output must reach (default: the embedder's same-person threshold)."),
        ranged(RunConfig, "steps", help="Scheduler steps for both diffusion passes [default: each template's]."),
        click.option("--scheduler", type=click.Choice(sorted(SAMPLERS)), default=None,
                     help="Sampler of both passes [default: EasyPhoto's: dpm++2m-sde-karras on SD 1.5, euler on SDXL]."),
        ranged(RunConfig, "inpaint_size", help="Diffusion working crop side [default: 512 SD 1.5, 1024 SDXL]; smaller is faster."),
        click.option("--seed", type=int, default=None),
        click.option("--device", default=None, help="cpu | cuda | mps (default: best available)."),
        dtype_option(),
        *face_engine_options(),
    ]
    return with_options(f, opts)


def config_from_options(o: dict):
    from ..models.device import onnx_device, resolve_device

    # The face engines (ONNX) run where every other stage runs: the device resolved once (issue 16).
    face = FaceConfig(detector=o["detector"], landmarks=o["landmarks"], embedder=o["embedder"],
                      device=onnx_device(resolve_device(o["device"])))
    keys = ("top_k", "min_photos", "fusion", "skin", "fringe", "retouch", "retouch_strength", "upscale", "upscale_factor",
            "diffusion", "base_model", "identity", "variants", "max_tries", "likeness_bar", "steps", "scheduler", "inpaint_size",
            "seed", "device", "dtype")
    return RunConfig(face=face, **{k: o[k] for k in keys})


def _summary(result) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=True)  # lines are never cut at 80 columns when piped
    for e in result.engines:
        console.print(f"[bold]{e.stage}[/]: {e.engine} [dim]({escape(e.reason)})[/]")
    for pick in result.auto.get("picks", []):
        for c in pick["chosen"]:
            console.print(f"[bold]{escape(pick['spec'])}[/] chose {escape(c['template'])} [dim]({escape(c['why'])})[/]")
    if not result.outputs:  # nothing to rank: no empty table, no "portraits in" line
        for f in result.failures:
            console.print(f"[red]template {escape(f['template'])} failed:[/] {escape(f['message'])}")
        console.print(f"[red]no portraits: every template failed[/] (details in {escape(str(result.result_file))})")
        return
    table = Table(title=f"Portraits, most alike first ({result.metric} distance; same person < {result.threshold})")
    for col in ("#", "template", "file", "distance", "similarity", "likeness", "reference photo"):
        table.add_column(col, overflow="fold")
    for i, o in enumerate(result.outputs, 1):
        ok = "[green]passes[/]" if o.passed_bar else "[yellow]below bar[/]"
        dist = "no face" if o.distance == float("inf") else f"{o.distance:.3f}"
        table.add_row(str(i), escape(o.template), escape(Path(o.file).name), dist, f"{o.similarity:.2f}", ok,
                      escape(o.reference))
    print_table(console, table)
    for o in result.outputs:
        for slot, d in sorted(o.others.items()):
            shown = "no face" if d == float("inf") else f"{d:.3f}"
            console.print(f"{o.template}: face slot {slot} (another person) distance to them {shown}")
    for f in result.failures:
        console.print(f"[red]template {escape(f['template'])} failed:[/] {escape(f['message'])}")
    console.print(f"portraits and result.json in {escape(str(result.result_file.parent))}")


@click.command("run")
@click.argument("photos", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--template", "templates", multiple=True,
              help="Template name, folder or image file, or auto[:N] for the N (default 3) templates that suit "
                   "these photos best (repeatable; default: every installed template).")
@click.option("--tags", default=None, metavar="TAG,TAG",
              help="With --template auto: choose only among templates with all these tags (e.g. studio,colour).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--slot", "slots", multiple=True, metavar="N=PHOTOS_DIR",
              help="Put another person (their photos folder) into face slot N of multi-face templates; "
                   "slots are numbered left to right from 0, the user fills the rest. Repeatable.")
@run_options
@json_option
@licence_option
@handle_errors
def run_command(photos: Path, templates: tuple[str, ...], tags: str | None, out: Path, slots: tuple[str, ...],
                as_json: bool, **options) -> None:
    """The whole chain: PHOTOS → preprocess → identity → each template → ranked portraits in OUT.

    Every template, slot, model and option is checked before any photo is read (exit 2 naming it)."""
    from .. import jobs

    names = jobs.template_names(_with_tags(templates, tags))
    config = config_from_options(options)
    others = _parse_slots(slots)
    with progress_bar(not as_json) as progress:  # every template and slot is checked before any photo is read
        result = jobs.run(photos, names, out, config, others=others, progress=progress)
    if as_json:
        print_json(result.to_dict())
    else:
        _summary(result)
    if not result.outputs:
        raise SystemExit(2)


def _with_tags(templates: tuple[str, ...], tags: str | None) -> tuple[str, ...]:
    """--tags joined onto every auto template spec (auto, auto:N) that names none; ConfigError when
    --tags is given without an auto template."""
    from ..templates.choice import parse_auto

    if not tags:
        return templates
    if not any(parse_auto(t) for t in templates):
        raise ConfigError("--tags chooses among templates for --template auto[:N]; add --template auto")
    out = []
    for t in templates:
        req = parse_auto(t)
        out.append(t if req is None or req.tags else f"auto:{req.n}:{tags.replace(' ', '')}")
    return tuple(out)


def _parse_slots(values: tuple[str, ...]) -> dict[int, Path]:
    """--slot N=DIR values → {N: DIR}; ConfigError naming a malformed value or a missing folder."""
    out: dict[int, Path] = {}
    for v in values:
        n, sep, folder = v.partition("=")
        if not sep or not n.strip().isdigit():
            raise ConfigError(f"--slot {v!r}: expected N=PHOTOS_DIR, e.g. --slot 1=partner_photos/")
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ConfigError(f"--slot {v!r}: {path} is not a folder of photos")
        if int(n) in out:
            raise ConfigError(f"--slot {n} is given twice")
        out[int(n)] = path
    return out


@click.command("batch")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Results folder (required locally; with --server, where the portraits are downloaded).")
@click.option("--server", default=None, metavar="URL", help="Run the batch on a portrait server instead of here.")
@click.option("--key", default=None, envvar="PORTRAIT_API_KEY", metavar="KEY",
              help="The server's API key (or $PORTRAIT_API_KEY).")
@click.option("--resume", is_flag=True,
              help="Skip rows whose OUT/NAME/result.json is complete (a portrait for each template): rerun an "
              "interrupted batch.")
@ranged(CreateConfig, "count", help="Rows with a 'styles' column (new scenes, `portrait create`): pictures per style.")
@run_options
@json_option
@licence_option
@handle_errors
def batch_command(manifest: Path, out: Path | None, server: str | None, key: str | None, resume: bool,
                  count: int, as_json: bool, **options) -> None:
    """Run every row of MANIFEST.csv (columns: photos, templates or styles, name); one failing row never
    stops the rest. A row with styles (';'-separated) makes COUNT new scenes per style from its photos.

    Each row's name becomes a folder inside OUT (made safe: no separators, no '..'). Every row is checked
    (photos folder, templates) before any photo is processed; a row that cannot start is `failed`.
    Row status: done (every template gave a portrait), partial (some did), failed (none did).
    Exit code: 0 when every row is done, 1 when some rows failed or are partial, 2 when no row gave a
    portrait or on a usage error."""
    from .. import jobs
    from ..batch import exit_code

    if server:
        if resume:
            raise ConfigError("--resume is for a local batch (a server batch runs each row once)")
        return _remote_batch(manifest, out, server, key, as_json, options, count)
    if out is None:
        raise ConfigError("--out is required (or --server URL --key KEY to run the batch on a server)")

    config = config_from_options(options)
    with progress_bar(not as_json) as progress:
        create = jobs.CreateConfig(count=count, seed=config.seed, device=config.device,
                                   models_dir=config.models_dir, base_model=config.base_model)
        result = jobs.batch(manifest, out, config, progress=progress, resume=resume, create=create)
    summary = result.rows
    if as_json:
        print_json(summary)
    else:
        for e in summary:
            tail = f"best distance {e['best']['distance']}" if e.get("best") else e.get("message", "")
            if e.get("failed_templates"):
                tail += f"; failed: {', '.join(e['failed_templates'])}"
            click.echo(f"{e['name']}: {e['status']}{' (already done)' if e.get('resumed') else ''} {tail}")
        click.echo(f"summary: {out / 'batch.json'}")
    raise SystemExit(exit_code([e["status"] for e in summary]))


def _remote_batch(manifest: Path, out: Path | None, server: str, key: str | None, as_json: bool,
                  options: dict, count: int = CreateConfig.count) -> None:
    """`batch --server`: upload each row's folder, one batch on the server, one progress bar across rows."""
    import json

    from .remote_batch import remote_batch

    if not key:
        raise ConfigError("--server needs --key KEY (or $PORTRAIT_API_KEY): `portrait tenant create NAME` on the "
                          "server prints one")
    ctx = click.get_current_context()
    sent = {k: v for k, v in options.items() if k not in ("identity", "device", "detector", "landmarks", "embedder")
            and ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    from ..batch import exit_code, read_manifest

    with progress_bar(not as_json) as progress:
        summary = remote_batch(read_manifest(manifest), server, key, out=out, progress=progress, options=sent,
                               name=manifest.stem, create_options={"count": count})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "batch.json").write_text(json.dumps(summary, indent=2))
    if as_json:
        print_json(summary)
    else:
        for e in summary:
            best = e.get("best")
            tail = f"best {best['template']} likeness {best['score']}" if best else e.get("message", e.get("state", ""))
            click.echo(f"{e['name']}: {e['status']} {tail}")
    raise SystemExit(exit_code([e["status"] for e in summary]))


def register(group: click.Group) -> None:
    group.add_command(run_command)
    group.add_command(batch_command)
