"""LiteRT (TensorFlow Lite) interpreters for the shipped MediaPipe models.

`load_interpreter(path)` builds one with its tensors allocated. LiteRT's native code prints
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to the process's stderr when it builds one;
that line is for nobody, so the stderr file descriptor is pointed at /dev/null for the moment it takes.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

_LOCK = threading.Lock()


@contextmanager
def _native_stderr_silenced():
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured, or closed): nothing to hide
        yield
        return
    with _LOCK:
        sys.stderr.flush()
        saved, null = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            os.close(null)


def load_interpreter(path: str, threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    with _native_stderr_silenced():
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
    return it
