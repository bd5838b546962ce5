"""The analysis worker pool: processes that do intake + face analysis of whole photos in parallel.

    with WorkerPool(2) as pool:                       # a long-lived worker process holds one for its life
        run_preprocess(photos, out, config, pool=pool)
        run_preprocess(other_photos, out2, config, pool=pool)

dlib holds the GIL for its whole detection and embedding calls (~60 and ~110 ms a photo), so threads
cannot overlap analysis with analysis. The pool is owned by whoever creates it (closed on exit of
its `with`), never module-global.

Start method (`safe_start_method`): a plain fork copies a process whose other threads (torch's and
CUDA's pools, a web server's) are gone in the child while their locks stay taken, which can hang the
child. So once torch is imported or this process runs other Python threads, workers come from a fork
server ("forkserver": a clean single-threaded process that preloads this module and forks each worker;
each worker loads the face models once, in its initializer). Before that (a CLI command preprocessing
before any model loads) a plain fork is safe and starts workers in milliseconds, sharing the face
models already loaded here. Like any non-fork start method, forkserver re-imports a script's
`__main__` in the workers: scripts need the `if __name__ == "__main__":` guard. Pools are only used for
POOL_MIN_PHOTOS or more photos with the dlib engines (below that, starting workers costs more than it
saves).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from portrait.faces import FaceConfig, get_face_analysis

from .config import PreprocessConfig

POOL_MIN_PHOTOS = 4  # below this, starting workers (imports + model loading) costs more than it saves
_ENV_KEYS = ("PORTRAIT_MODELS_DIR", "PORTRAIT_MODELS_CONFIG", "XDG_DATA_HOME", "HOME")
LICENCE_KEY = "PORTRAIT_LICENCE"  # the caller's licence policy (models.licence) travels to the workers


def use_pool(config: PreprocessConfig, n: int) -> bool:
    """Worker processes pay off for the dlib engines (which hold the GIL) on batches of a few photos."""
    return (n >= POOL_MIN_PHOTOS and min(config.workers, os.cpu_count() or 1) >= 2
            and config.face.detector.startswith("dlib") and config.face.embedder == "dlib-resnet")


def safe_start_method() -> str:
    """"fork" while this process has no other threads and no torch; then "forkserver" (see the module doc);
    "spawn" where neither exists (Windows) or fork is unsafe anyway (macOS)."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("darwin") or "fork" not in methods:
        return "spawn"
    if "torch" not in sys.modules and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


class WorkerPool:
    """Analysis worker processes, started on first use and kept until `close()` (or the `with` ends).

    Its processes are (re)started when the face engines or the model folders in the environment change;
    `workers` caps their number (and the CPU count does); `start_method` None: safe_start_method() at
    each (re)start."""

    def __init__(self, workers: int = 2, start_method: str | None = None):
        self.workers = max(1, min(int(workers), os.cpu_count() or 1))
        self.start_method = start_method
        self.method_used: str | None = None
        self._executor: Optional[ProcessPoolExecutor] = None
        self._key: Optional[tuple] = None
        self._face: FaceConfig = FaceConfig()
        self._lock = threading.Lock()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def for_config(self, config: PreprocessConfig, n: int) -> "WorkerPool":  # noqa: ARG002 - the batch size
        """The pool, set up for `config`'s face engines (the workers load them in their initializer)."""
        self._face = config.face
        return self

    def executor(self) -> ProcessPoolExecutor:
        from portrait.models.licence import current_policy

        env = {k: os.environ.get(k) for k in _ENV_KEYS}
        env[LICENCE_KEY] = current_policy()  # a context policy (--licence, a request) as well as the env's
        key = (self._face, tuple(sorted(env.items(), key=lambda kv: kv[0])))
        with self._lock:
            if self._executor is None or self._key != key:
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)
                method = self.start_method or safe_start_method()
                ctx = multiprocessing.get_context(method)
                if method == "forkserver":
                    ctx.set_forkserver_preload([__name__])  # not __main__: scripts are never re-run
                self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                                     initargs=(env, self._face, os.getpid()))
                self._key, self.method_used = key, method
            return self._executor

    @property
    def started(self) -> bool:
        return self._executor is not None

    def close(self) -> None:
        """Stop the worker processes (a later use starts new ones)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor, self._key = None, None


def _exit_with(owner: int) -> None:
    """End this analysis process when `owner` (the process that made the pool) is gone, even SIGKILLed:
    with forkserver our parent is the fork server, not the owner, so a death signal alone cannot tell."""
    if sys.platform.startswith("linux") and os.getppid() == owner:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(owner, 0)
            except (ProcessLookupError, PermissionError):  # gone (or its pid reused by another user's process)
                os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _worker_init(env: dict, face: FaceConfig, owner: int | None = None) -> None:
    if owner is not None:
        _exit_with(owner)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    fa = get_face_analysis(face)
    fa.detector, fa.landmarker, fa.embedder  # load the models once per worker


def analyse_in_worker(path: Path, root: Path | None, config: PreprocessConfig):
    """(analysis, intake seconds, analysis seconds) of one photo, in a worker process."""
    from .intake import intake_photo
    from .analysis import analyse_photo

    t0 = time.perf_counter()
    intake = intake_photo(path, config, root)
    t1 = time.perf_counter()
    a = analyse_photo(get_face_analysis(config.face), intake, config)
    intake.pixels = None  # the analysis image stays in the worker
    if a.crop is not None and not config.remove_background:
        # Encode here, in parallel, rather than in the parent after selection: most photos are selected.
        a.crop_png, a.crop = png_bytes(a.crop), None
    return a, t1 - t0, time.perf_counter() - t1


def png_bytes(image: np.ndarray) -> bytes:
    """The bytes `dataset.write_png` writes for `image` (same encoder and settings)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError("cannot encode the crop as PNG")
    return buf.tobytes()
