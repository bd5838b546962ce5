"""`portrait preprocess` (photos → scored, explained training set) and `portrait samples` (demo photos)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..faces.analysis import FaceConfig
from .common import (EXIT_OK, EXIT_USER, handle_errors, json_option, min_photos_option, print_json, print_table,
                     progress_bar, top_k_option, with_face_engines)
from .licence_opt import licence_option


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _table(result) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Photos", show_lines=False)
    for col in ("file", "verdict", "reason", "identity", "quality", "sharp", "pose", "total"):
        table.add_column(col, justify="right" if col not in ("file", "verdict", "reason") else "left",
                         no_wrap=col != "file", overflow="fold")
    selected = set(result.selected)
    for p in result.photos:
        if p.file == result.reference:
            verdict = "[bold green]reference[/]"
        elif p.file in selected:
            verdict = "[green]selected[/]"
        elif p.accepted:
            verdict = "[yellow]accepted[/]"
        else:
            verdict = "[red]rejected[/]"
        reason = ", ".join(p.reasons)
        s = p.scores
        table.add_row(escape(p.file), verdict, reason, _fmt(s["identity"]), _fmt(s["quality"]), _fmt(s["sharpness"]),
                      _fmt(s["pose"]), _fmt(s["total"]))
    console = Console(soft_wrap=True)  # lines are never cut at 80 columns when piped
    print_table(console, table)  # piped: a plain layout, one line per photo
    for p in result.photos:
        if p.reasons and p.message:
            console.print(f"  [red]{escape(p.file)}[/]: {escape(p.message)}", highlight=False)


def register(group: click.Group) -> None:
    @group.command("preprocess")
    @click.argument("photos_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="Output folder: report.json and train/ (crops + metadata.jsonl).")
    @top_k_option()
    @click.option("--resolution", type=click.IntRange(64, 4096), default=512, show_default=True,
                  help="Training crop side (512 for SD 1.5, 1024 for SDXL).")
    @min_photos_option()
    @click.option("--remove-background", is_flag=True, help="Put the crops on white (MediaPipe selfie "
                  "segmentation, shipped; the ONNX 'matting' model when present; GrabCut without LiteRT).")
    @click.option("--retouch-crops", is_flag=True, help="A light skin retouch on the training crops (classic, or "
                  "the GFPGAN-type restorer when present).")
    @click.option("--trigger", default="ohwx", show_default=True, help="Caption trigger word.")
    @click.option("--class-word", default="person", show_default=True, help="Caption class word.")
    @with_face_engines
    @json_option
    @licence_option
    @handle_errors
    def preprocess_cmd(photos_dir: Path, out: Path, top_k: int, resolution: int, min_photos: int,
                       remove_background: bool, retouch_crops: bool, trigger: str, class_word: str, detector: str, landmarks: str,
                       embedder: str, as_json: bool) -> None:
        """Judge every photo in PHOTOS_DIR and write a training set of the best ones to --out.

        Exit code 0 when at least --min-photos photos were accepted, 2 otherwise (the message says why).
        """
        from .. import jobs
        from ..errors import ConfigError

        if resolution % 8:
            raise ConfigError(f"--resolution must be a multiple of 8, got {resolution}")
        config = jobs.PreprocessConfig(
            top_k=top_k, resolution=resolution, min_photos=min_photos, remove_background=remove_background,
            retouch_crops=retouch_crops,
            trigger_word=trigger, class_word=class_word,
            face=FaceConfig(detector=detector, landmarks=landmarks, embedder=embedder),
        )
        with progress_bar(not as_json) as progress:
            result = jobs.preprocess(photos_dir, out, config, progress=progress)
        if as_json:
            print_json(result.to_dict())
        else:
            _table(result.result)
            click.secho(result.message, fg=None if result.ok else "red", err=not result.ok)
            if result.ok:
                click.echo(f"Training set: {out / 'train'} ({len(result.result.selected)} crops); report: "
                           f"{out / 'report.json'}; reference: {result.result.reference}")
        sys.exit(EXIT_OK if result.ok else EXIT_USER)

    @group.command("samples")
    @click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
    @json_option
    @handle_errors
    def samples_cmd(out_dir: Path, as_json: bool) -> None:
        """Write demo photos (public-domain portraits and variants) into OUT_DIR."""
        from ..samples import write_sample_photos

        paths = write_sample_photos(out_dir)
        if as_json:
            print_json({"dir": str(out_dir), "files": [p.name for p in paths]})
        else:
            click.echo(f"Wrote {len(paths)} sample photos to {out_dir} "
                       f"(try: portrait preprocess {out_dir} --out out/preprocess)")
