"""What every subcommand shares: error handling, JSON output, the progress bar."""

from __future__ import annotations

import functools
import json
import os
import sys
from contextlib import contextmanager
from typing import Iterator

import click

from ..errors import PortraitError

EXIT_OK = 0
EXIT_USER = 2  # bad input, missing model, not enough usable photos

# One range for the photo counts on every command that takes them (preprocess, run, batch).
TOP_K_MAX = 100
MIN_PHOTOS_MAX = 100


def ranged(config_cls, field: str, **kw):
    """A click option for a config's numeric field: its range from the config's LIMITS and its default
    from the dataclass, so the command line can never disagree with the job it builds."""
    lo, hi = config_cls.LIMITS[field]
    default = config_cls.__dataclass_fields__[field].default
    floats = any(isinstance(v, float) for v in (lo, hi, default))
    kind = click.FloatRange(lo, hi) if floats else click.IntRange(lo, hi)
    kw.setdefault("show_default", default is not None)
    return click.option("--" + field.replace("_", "-"), field, type=kind, default=default, **kw)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(f)


def handle_errors(f):
    """Turn PortraitError into a one-line message (or a JSON error with --json) and exit code 2."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except PortraitError as exc:
            if kwargs.get("as_json"):
                click.echo(json.dumps(exc.to_dict()))
            else:
                click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_USER)

    return wrapper


def top_k_option(help: str = "At most this many photos go into the training set."):
    return click.option("--top-k", type=click.IntRange(1, TOP_K_MAX), default=12, show_default=True, help=help)


def min_photos_option(help: str = "Fewer accepted photos than this is a failure (exit code 2)."):
    return click.option("--min-photos", type=click.IntRange(1, MIN_PHOTOS_MAX), default=4, show_default=True,
                        help=help)


def face_engine_options() -> list:
    """--detector / --landmarks / --embedder, the same on every command that looks at faces."""
    from ..faces.analysis import DETECTORS, EMBEDDERS, LANDMARKS

    return [
        click.option("--detector", type=click.Choice(("auto",) + DETECTORS), default="auto", show_default=True,
                     help="auto: scrfd with an ArcFace embedder (it aligns on SCRFD's own five keypoints), else "
                          "dlib-hog."),
        click.option("--landmarks", type=click.Choice(LANDMARKS), default="auto", show_default=True,
                     help="auto: mediapipe under --licence commercial, else dlib5. mediapipe: Face Mesh, 468 "
                          "points (Apache-2.0, shipped); dlib5: dlib's 5 points; dlib68 measures head pose "
                          "closely, but its training data excludes commercial use (refused under --licence "
                          "commercial)."),
        click.option("--embedder", type=click.Choice(EMBEDDERS), default="dlib-resnet", show_default=True),
    ]


def with_options(f, options: list):
    """`f` decorated with click options in the order listed (as if stacked top to bottom)."""
    for opt in reversed(options):
        f = opt(f)
    return f


def with_face_engines(f):
    return with_options(f, face_engine_options())


def dtype_option():
    from ..models.device import DTYPE_NAMES

    return click.option("--dtype", type=click.Choice(DTYPE_NAMES, case_sensitive=False), default=None,
                        help="Diffusion weights' precision [default: fp16 on GPU, fp32 on CPU; $PORTRAIT_DTYPE].")


def print_table(console, table) -> None:
    """A rich table on a terminal (folded to its width); piped or redirected, a plain layout instead: one
    line per row, columns separated by two spaces, no markup and no wrapping, so `grep` and `cut` work."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.text import Text

    def plain(cell) -> str:
        text = Text.from_markup(cell).plain if isinstance(cell, str) else getattr(cell, "plain", str(cell))
        return text.replace("\n", " ")

    cols = [[plain(c.header)] + [plain(x) for x in c._cells] for c in table.columns]
    widths = [max(len(x) for x in col) for col in cols]
    if table.title:
        click.echo(plain(table.title))
    for r in range(len(cols[0]) if cols else 0):
        click.echo("  ".join(col[r].ljust(w) for col, w in zip(cols, widths)).rstrip())


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class Bar:
    """The (stage, done, total) callback feeding a rich progress bar, one task per stage; `loss(step, value)`
    shows a smoothed training loss beside the "train" task (bars made with show_loss=True)."""

    def __init__(self, progress=None):
        self.progress = progress
        self.tasks: dict[str, int] = {}
        self.smooth: float | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=max(total, 1), loss="")
        self.progress.update(self.tasks[stage], completed=done, total=max(total, 1))

    def loss(self, step: int, value: float) -> None:  # noqa: ARG002 - the on_step hook's signature
        self.smooth = value if self.smooth is None else 0.9 * self.smooth + 0.1 * value
        if self.progress is not None and "train" in self.tasks:
            self.progress.update(self.tasks["train"], loss=f"loss {self.smooth:.4f}")


@contextmanager
def progress_bar(enabled: bool = True, show_loss: bool = False) -> Iterator[Bar]:
    """A rich progress bar on stderr (nothing when disabled or $PORTRAIT_NO_PROGRESS is set)."""
    if not enabled or os.environ.get("PORTRAIT_NO_PROGRESS"):
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    if show_loss:
        columns = (TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    else:
        columns = (TextColumn("[bold]{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=Console(stderr=True), transient=False)
    with progress:
        yield Bar(progress)


def report_scan(errors: list[dict], found: list, what: str, dirs) -> None:
    """After a pack list: each broken pack on stderr, and a line when nothing was found."""
    for e in errors:
        click.secho(f"broken: {e['directory']}: {e['error']}", fg="yellow", err=True)
    if not found:
        click.echo(f"no {what} found in {', '.join(str(d) for d in dirs)}")
