"""One progress protocol for every stage: progress(stage, done, total).

The CLI turns it into a rich progress bar, the worker into the job's stage and step.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

ProgressCallback = Callable[[str, int, int], None]


class CancelToken(Protocol):
    """What a job's `cancel` argument is: a threading.Event, or anything with is_set()."""

    def is_set(self) -> bool: ...


def report(progress: Optional[ProgressCallback], stage: str, done: int, total: int) -> None:
    """Call `progress` if one was given."""
    if progress is not None:
        progress(stage, done, total)


def check_cancel(cancel: Optional[CancelToken], what: str = "cancelled") -> None:
    """Raise portrait.errors.Cancelled when `cancel` is set (None never cancels)."""
    if cancel is not None and cancel.is_set():
        from .errors import Cancelled

        raise Cancelled(what)
