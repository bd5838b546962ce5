"""ONNX Runtime sessions for the model-backed engines, loaded once per process.

    session = get_session(manifest.require("scrfd"), device="cpu", model="scrfd")

Sessions are cached by (resolved path, mtime, device): a worker loads each file once, and a file
replaced on disk is loaded again. A missing file raises ModelMissingError; a file that is not a
valid ONNX model raises ConfigError naming it. `device="cuda"` uses the CUDA provider when the
installed onnxruntime has it (the `gpu` extra) and falls back to the CPU with a warning otherwise.
"""

from __future__ import annotations

import os
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelMissingError, PortraitError

_SESSIONS: dict[tuple[str, int, str], object] = {}
_LOCK = threading.Lock()


def _threads() -> int:
    """Intra-op threads: the cores this process may use (2 on the reference machine), at most 8."""
    env = os.environ.get("PORTRAIT_ONNX_THREADS")
    if env:
        return max(1, int(env))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def providers_for(device: str) -> list:
    """onnxruntime providers for "cpu", "cuda", "cuda:N" or "auto" (CPU always last, as the fallback)."""
    import onnxruntime as ort

    kind, _, index = device.partition(":")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if kind == "cpu" or (kind == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if kind not in ("cuda", "auto"):
        raise ConfigError(f"unknown device {device!r} for ONNX models; use 'cpu', 'cuda[:N]' or 'auto'")
    if not has_cuda:
        warnings.warn("device 'cuda' asked for, but this onnxruntime has no CUDA provider "
                      "(pip install 'portrait[gpu]'); running ONNX models on the CPU", RuntimeWarning, stacklevel=3)
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def _missing(path: Path, model: str | None) -> ModelMissingError:
    return ModelMissingError(model or path.name, path, "Place the ONNX file there or set its path in models.toml; "
                             "`portrait models list` shows every model's state.")


def get_session(path: Path, device: str = "cpu", *, model: str | None = None):
    """The process-wide onnxruntime.InferenceSession for `path` on `device`."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise _missing(path, model)
    resolved = path.resolve()
    key = (str(resolved), resolved.stat().st_mtime_ns, device)
    with _LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: unused initializers (inswapper's emap) are not news
        try:
            session = ort.InferenceSession(str(resolved), sess_options=opts, providers=providers_for(device))
        except (PortraitError, MemoryError):
            raise
        except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
            name = f"model '{model}' at " if model else ""
            detail = " ".join(str(exc).split())
            detail = detail if len(detail) <= 240 else "…" + detail[-240:]  # onnxruntime puts the cause last
            raise ConfigError(f"{name}{path} cannot be loaded as an ONNX model ({detail}); "
                              "download the file again or fix its path in models.toml") from exc
        for old in [k for k in _SESSIONS if k[0] == key[0] and k[2] == device]:
            del _SESSIONS[old]  # an older version of the same file
        _SESSIONS[key] = session
        return session


def clear_sessions() -> None:
    with _LOCK:
        _SESSIONS.clear()
    _last_initializer.cache_clear()


def fixed_dim(value, default: int) -> int:
    """A model's static dimension, or `default` where it is symbolic ('None', 'height', ...)."""
    return int(value) if isinstance(value, (int, np.integer)) and int(value) > 0 else default


@lru_cache(maxsize=8)
def _last_initializer(path: str, mtime_ns: int) -> np.ndarray | None:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise PortraitError(f"reading {path} needs the 'onnx' package: pip install onnx") from exc
    try:
        graph = onnx.load(path).graph
    except Exception as exc:
        raise ConfigError(f"{path} is not a valid ONNX model ({exc}); download the file again") from exc
    if not graph.initializer:
        return None
    return numpy_helper.to_array(graph.initializer[-1])


def last_initializer(path: Path, model: str | None = None) -> np.ndarray | None:
    """The graph's last initializer (inswapper keeps its `emap` there), or None if it has none."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, model)
    return _last_initializer(str(path.resolve()), path.stat().st_mtime_ns)

