"""`portrait templates list|show|add`."""

from __future__ import annotations

from pathlib import Path

import click

from .common import handle_errors, json_option, print_json


def _summary(t, with_faces: bool = False) -> dict:
    d = {"name": t.name, "description": t.description, "directory": str(t.directory), "image": str(t.image_path),
         "faces": list(t.faces)}
    if with_faces:
        d["detected_faces"] = [f.to_dict() for f in t.detected_faces()]
    return d


def register(group: click.Group) -> None:
    @group.group("templates")
    def templates() -> None:
        """Template packs: a folder with an image and a template.toml."""

    @templates.command("list")
    @json_option
    @handle_errors
    def list_cmd(as_json: bool) -> None:
        """Templates on the search path (user folder, then the bundled ones)."""
        from ..templates import list_templates, template_dirs

        errors: list[dict] = []
        found = list_templates(on_error=lambda p, e: errors.append({"directory": str(p), "error": str(e)}))
        if as_json:
            print_json({"templates": [_summary(t) for t in found], "errors": errors,
                        "search_path": [str(d) for d in template_dirs()]})
            return
        for t in found:
            click.echo(f"{t.name:<20} faces {','.join(map(str, t.faces)):<6} {t.description}")
        for e in errors:
            click.secho(f"broken: {e['directory']}: {e['error']}", fg="yellow", err=True)
        if not found:
            click.echo(f"no templates found in {', '.join(str(d) for d in template_dirs())}")

    @templates.command("show")
    @click.argument("name")
    @json_option
    @handle_errors
    def show_cmd(name: str, as_json: bool) -> None:
        """One template's settings and its detected faces."""
        from ..templates import load_template

        t = load_template(name)
        data = t.to_dict()
        data["detected_faces"] = [f.to_dict() for f in t.detected_faces()]
        if as_json:
            print_json(data)
            return
        for k, v in data.items():
            if k != "detected_faces":
                click.echo(f"{k:<16} {v}")
        for i, f in enumerate(data["detected_faces"]):
            mark = "replaced" if i in t.faces else "kept"
            click.echo(f"face {i:<11} box {f['box']} yaw {f['yaw']} ({mark})")

    @templates.command("add")
    @click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--name", required=True, help="Template name (lower-case letters, digits, '-', '_').")
    @click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Folder to create the template in (default: $PORTRAIT_TEMPLATES_DIR).")
    @click.option("--prompt", default=None, help="Prompt for the diffusion stages.")
    @click.option("--negative-prompt", default=None)
    @click.option("--description", default=None)
    @click.option("--face", "faces", type=int, multiple=True, help="Face slot to replace (repeatable; default 0).")
    @json_option
    @handle_errors
    def add_cmd(image: Path, name: str, dest: Path | None, prompt, negative_prompt, description, faces,
                as_json: bool) -> None:
        """Make a template from IMAGE (checks that it decodes and holds a usable face)."""
        from ..templates import add_template

        t = add_template(image, name, dest, prompt=prompt, negative_prompt=negative_prompt, description=description,
                         faces=list(faces) or None)
        if as_json:
            print_json(_summary(t, with_faces=True))
        else:
            click.echo(f"added template '{t.name}' in {t.directory} ({len(t.detected_faces())} face(s) found)")
