"""Convert a PyTorch weights file (.pth / .bin / .ckpt) to .safetensors, safely.

Released GFPGAN, Real-ESRGAN, IP-Adapter FaceID and InstantID weights come as pickles. They are
read with `torch.load(weights_only=True)`, which refuses any pickled object that is not a tensor,
a number, a string or a container of those, so converting never runs code from the file. The
result holds plain tensors: wrappers trainers add around a state dict (`params_ema`, `state_dict`,
...) are removed, and nested sections (IP-Adapter's `image_proj` / `ip_adapter`) are flattened to
dotted keys, the layout diffusers' `load_ip_adapter` and spandrel read from safetensors.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

# A state dict nested under one of these keys is the model; the first present wins (EMA first).
WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net")


def _unwrap(obj: dict) -> dict:
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _flatten(obj: dict, prefix: str = "") -> dict:
    import torch

    flat = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, torch.Tensor):
            flat[name] = value.detach().contiguous().clone()  # clone: safetensors refuses shared storage
    return flat


def convert_to_safetensors(src: str | Path, dst: str | Path | None = None) -> Path:
    """Write `src`'s tensors to `dst` (default: beside it, .safetensors); ConfigError naming the file
    when it is not a plain weights file."""
    import pickle

    import torch
    from safetensors.torch import save_file

    src = Path(src)
    dst = Path(dst) if dst else src.with_suffix(".safetensors")
    if not src.is_file():
        raise ConfigError(f"{src}: no such file")
    if dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: the output would overwrite the input")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ConfigError(f"{src}: not a plain PyTorch weights file, refused without running it "
                          f"({str(exc).splitlines()[0][:200]})") from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"{src}: holds a {type(obj).__name__}, not a state dict")
    tensors = _flatten(_unwrap(obj))
    if not tensors:
        raise ConfigError(f"{src}: holds no tensors")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata={"converted_from": src.name})
    return dst
