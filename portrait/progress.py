"""One progress protocol for every stage: callback(stage, done, total).

The CLI turns it into a rich progress bar, the worker into the job's stage and step.
"""

from __future__ import annotations

from typing import Callable, Optional

ProgressCallback = Callable[[str, int, int], None]


def report(callback: Optional[ProgressCallback], stage: str, done: int, total: int) -> None:
    """Call `callback` if one was given."""
    if callback is not None:
        callback(stage, done, total)
