"""`portrait templates list|show|add`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import handle_errors, json_option, print_json, report_scan


def _slots(t) -> list[dict]:
    return [dict(f.to_dict(), slot=i, replaced=i in t.faces) for i, f in enumerate(t.detected_faces())]


def _not_slots(t) -> list[dict]:
    """The detections the template's face cache (for the face engines in use) records as not slots."""
    from ..faces import get_face_analysis
    from ..templates.slots import cached_rejections
    from ..templates import face_cache_name

    return cached_rejections(t.directory, face_cache_name(get_face_analysis().engines()))


def _summary(t, with_faces: bool = False, bundled: set | None = None) -> dict:
    d = {"name": t.name, "description": t.description, "directory": str(t.directory), "image": str(t.image_path),
         "faces": list(t.faces), "source": t.source, "licence": t.licence, "tags": list(t.tags),
         "measured": dict(t.measured)}
    if bundled is not None:
        from ..templates import bundled_dir

        d["overrides_bundled"] = t.name in bundled and t.directory.parent.resolve() != bundled_dir().resolve()
    if with_faces:
        d["detected_faces"] = d["slots"] = _slots(t)
        d["not_slots"] = _not_slots(t)
    return d


def _preview(t, path: Path | None) -> Path | None:
    """Write the numbered-slot preview: PATH, else a user template's own preview.jpg, else (a bundled
    template, or a read-only folder) $XDG_CACHE_HOME/portrait/previews/NAME-preview.jpg."""
    from ..templates.slots import PREVIEW_NAME, draw_preview
    from ..templates import bundled_dir

    target = path or t.directory / PREVIEW_NAME
    bundled = t.directory.parent.resolve() == bundled_dir().resolve()
    if path is None and (bundled or not os.access(t.directory, os.W_OK)):
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        target = cache / "portrait" / "previews" / f"{t.name}-preview.jpg"
    faces = t.detected_faces()
    try:
        return draw_preview(t.image(), faces, t.faces, target)
    except OSError:
        return None


def _print_slots(t, notice: str | None, preview: Path | None) -> None:
    for s in _slots(t):
        x0, y0, x1, y1 = (round(v) for v in s["box"])
        mark = "replaced" if s["replaced"] else "kept"
        click.echo(f"slot {s['slot']}: box {x0},{y0}-{x1},{y1} score {s['score']:.2f} yaw {s['yaw']:.0f} ({mark})")
    for r in _not_slots(t):
        x0, y0, x1, y1 = (round(v) for v in r["box"])
        click.echo(f"not a slot: box {x0},{y0}-{x1},{y1}: {r['why']}")
    if notice:
        click.secho(notice, fg="yellow")
    if preview is not None:
        click.echo(f"preview with numbered slots: {preview}")


def _pin(value: str) -> list[float]:
    try:
        box = [float(v) for v in value.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise click.BadParameter(f"expected x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {value!r}")
    return box


def register(group: click.Group) -> None:
    @group.group("templates")
    def templates() -> None:
        """Template packs: a folder with an image and a template.toml."""

    @templates.command("list")
    @json_option
    @handle_errors
    @click.option("--tag", "tags", multiple=True, help="Only templates with this tag (repeatable: all of them).")
    def list_cmd(as_json: bool, tags: tuple[str, ...]) -> None:
        """Templates on the search path (user folder, then the bundled ones), with their tags, measured skin
        tone (Monk scale; 0 unknown) and head turn, and where each image came from."""
        from ..templates import bundled_names, list_templates, template_dirs

        errors: list[dict] = []
        found = list_templates(on_error=lambda p, e: errors.append({"directory": str(p), "error": str(e)}))
        found = [t for t in found if set(tags) <= set(t.tags)]
        bundled = bundled_names()
        if as_json:
            print_json({"templates": [_summary(t, bundled=bundled) for t in found], "errors": errors,
                        "search_path": [str(d) for d in template_dirs()]})
            return
        if found:
            click.echo(f"{'name':<20} {'faces':<6} {'tone':>4} {'yaw':>4}  {'licence':<14} tags")
        for t in found:
            s = _summary(t, bundled=bundled)
            note = " (yours, overrides the bundled one)" if s["overrides_bundled"] else ""
            m = t.measured
            yaw = "" if "yaw" not in m else f"{m['yaw']:.0f}"
            click.echo(f"{t.name:<20} {','.join(map(str, t.faces)):<6} {m.get('skin_tone', ''):>4} {yaw:>4}  "
                       f"{t.licence.split(':')[0] or 'unrecorded':<14} {' '.join(t.tags)}{note}")
        report_scan(errors, found, "templates", template_dirs())

    @templates.command("show")
    @click.argument("name")
    @click.option("--preview", "preview_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Where to write the preview with numbered slot boxes [default: a user template's "
                       "preview.jpg; ~/.cache/portrait/previews/NAME-preview.jpg for a bundled or read-only one].")
    @json_option
    @handle_errors
    def show_cmd(name: str, preview_path: Path | None, as_json: bool) -> None:
        """One template's settings, its face slots (numbered left to right) and the detections that are not slots."""
        from ..templates.slots import ambiguity_notice
        from ..templates import load_template

        t = load_template(name)
        data = t.to_dict()
        data.update(_summary(t, with_faces=True))
        preview = _preview(t, preview_path)
        data["preview"] = None if preview is None else str(preview)
        notice = ambiguity_notice(t.detected_faces(), t.faces)
        data["notice"] = notice
        if as_json:
            print_json(data)
            return
        for k, v in data.items():
            if k not in ("detected_faces", "slots", "not_slots", "preview", "notice", "image"):
                click.echo(f"{k:<16} {v}")
        _print_slots(t, notice, preview)

    @templates.command("add")
    @click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--name", required=True, help="Template name (lower-case letters, digits, '-', '_').")
    @click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Folder to create the template in (default: $PORTRAIT_TEMPLATES_DIR).")
    @click.option("--prompt", default=None, help="Prompt for the diffusion stages.")
    @click.option("--negative-prompt", default=None)
    @click.option("--description", default=None)
    @click.option("--face", "faces", type=int, multiple=True, help="Face slot to replace (repeatable; default 0).")
    @click.option("--pin", "pins", multiple=True, metavar="X0,Y0,X1,Y1",
                  help="A face slot by approximate box in image pixels, for faces the detectors miss or doubt "
                       "(a small face in a group, a profile); repeatable.")
    @click.option("--source", required=True,
                  help="Where IMAGE came from: a URL, or a repository and path (recorded in template.toml).")
    @click.option("--licence", required=True,
                  help="Its licence and the reason it may be used, e.g. 'public-domain: a work of the US government'.")
    @click.option("--tag", "tags", multiple=True,
                  help="A tag (repeatable): framing (head-and-shoulders, half-length), setting (studio, office, "
                       "outdoor, formal), colour or bw, view (frontal, three-quarter).")
    @click.option("--force", is_flag=True, help="Allow a name that hides a bundled template.")
    @json_option
    @handle_errors
    def add_cmd(image: Path, name: str, dest: Path | None, prompt, negative_prompt, description, faces, pins, source,
                licence, tags, force, as_json: bool) -> None:
        """Make a template from IMAGE (checks that it decodes and holds a usable face); records its source and
        licence, measures the face's skin tone and head turn, prints the slots and writes preview.jpg with the
        numbered slot boxes."""
        from ..templates.slots import PREVIEW_NAME, ambiguity_notice
        from ..templates import add_template

        t = add_template(image, name, dest, prompt=prompt, negative_prompt=negative_prompt, description=description,
                         faces=list(faces) or None, pins=[_pin(p) for p in pins] or None, force=force,
                         source=source, licence=licence, tags=list(tags) or None)
        notice = ambiguity_notice(t.detected_faces(), t.faces)
        preview = t.directory / PREVIEW_NAME
        if as_json:
            print_json(dict(_summary(t, with_faces=True), notice=notice, preview=str(preview)))
        else:
            click.echo(f"added template '{t.name}' in {t.directory} ({len(t.detected_faces())} face slot(s))")
            m = t.measured
            click.echo(f"measured: skin tone {m.get('skin_tone')} (Monk scale; 0 unknown), ITA {m.get('ita')}, "
                       f"yaw {m.get('yaw')}")
            _print_slots(t, notice, preview)
