"""Image models (Real-ESRGAN / RRDB, GFPGAN, RestoreFormer: spandrel's main architectures) loaded through spandrel.

spandrel detects the architecture from the state dict's keys; `.pth` files go through its restricted
unpickler (no arbitrary code), `.safetensors` through safetensors. Loaded models are cached per
process, keyed by (path, device, dtype), so a worker loads each file once.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import ConfigError, PortraitError

_CACHE: dict[tuple[str, str, str], object] = {}
_LOCK = threading.Lock()


def _torch():
    try:
        import spandrel  # noqa: F401
        import torch
    except ImportError as exc:  # pragma: no cover - the core install has no torch
        raise PortraitError(f"this engine needs torch and spandrel: pip install 'portrait[ml]' ({exc})") from exc
    return torch


def load_image_model(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """The spandrel ImageModelDescriptor for `path`, in eval mode on `device`, cached per process."""
    torch = _torch()
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    key = (str(Path(path).resolve()), device, dtype)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        try:
            desc = ModelLoader(device=torch.device(device)).load_from_file(str(path))
        except UnsupportedModelError as exc:
            raise ConfigError(f"{path}: spandrel does not recognise this model's architecture (GFPGAN, RestoreFormer "
                              "and Real-ESRGAN / RRDB are; CodeFormer is not offered)") from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot load model ({exc})") from exc
        if not isinstance(desc, ImageModelDescriptor):
            raise ConfigError(f"{path}: a {desc.architecture.name} model is not an image-to-image model")
        desc.to(getattr(torch, dtype)).eval()
        _CACHE[key] = desc
        return desc


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def to_tensor(rgb: np.ndarray, desc):
    torch = _torch()
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)
    return t.to(device=desc.device, dtype=desc.dtype)


def to_rgb(t) -> np.ndarray:
    arr = t[0].float().clamp(0, 1).mul(255.0).add_(0.5).byte().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr)
