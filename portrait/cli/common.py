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
from ..progress import ProgressCallback

EXIT_OK = 0
EXIT_USER = 2  # bad input, missing model, not enough usable photos


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


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressCallback]:
    """A rich progress bar (on stderr) fed by the (stage, done, total) callback; one task per stage."""
    if not enabled or os.environ.get("PORTRAIT_NO_PROGRESS"):
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=False,
    )
    tasks: dict[str, int] = {}

    def callback(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=max(total, 1))
        progress.update(tasks[stage], completed=done, total=max(total, 1))

    with progress:
        yield callback
