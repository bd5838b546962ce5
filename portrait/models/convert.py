"""Convert a PyTorch weights file (.pth / .bin / .ckpt) to .safetensors, safely.

Released GFPGAN, Real-ESRGAN, IP-Adapter FaceID and InstantID weights come as pickles. They are
read with `torch.load(weights_only=True)`, which refuses any pickled object that is not a tensor,
a number, a string or a container of those, so converting never runs code from the file. The
result holds plain tensors: wrappers trainers add around a state dict (`params_ema`, `state_dict`,
...) are removed, and nested sections (IP-Adapter's `image_proj` / `ip_adapter`) are flattened to
dotted keys, the layout diffusers' `load_ip_adapter` and spandrel read from safetensors. A file whose
state dict holds anything but tensors (numbers, strings, lists) is refused unless the caller asks for
its tensors only, and is then told what was dropped.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

# A state dict nested under one of these keys is the model; the first present wins (EMA first).
WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net")


def _unwrap(obj: dict) -> dict:
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _flatten(obj: dict, prefix: str = "") -> tuple[dict, list[str]]:
    """(dotted name → tensor, dotted names of entries that are not tensors: numbers, strings, lists...)."""
    import torch

    flat, other = {}, []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            sub, sub_other = _flatten(value, f"{name}.")
            flat.update(sub)
            other += sub_other
        elif isinstance(value, torch.Tensor):
            flat[name] = value.detach().contiguous().clone()  # clone: safetensors refuses shared storage
        else:
            other.append(name)
    return flat, other


@dataclass(frozen=True)
class Conversion:
    dst: Path
    tensors: int
    dropped: tuple[str, ...]  # entries that were not tensors (only with tensors_only=True)

    def to_dict(self) -> dict:
        return {"dst": str(self.dst), "tensors": self.tensors, "dropped": list(self.dropped)}


def _refusal(src: Path, exc: Exception) -> str:
    """Why torch's safe loader refused `src`, in our words: torch's own message advises loading the file
    unsafely, which no user of ours should ever be told."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = (f"it references the Python object {found.group(1)}, which loading it would import and run" if found
            else "it holds data other than tensors, numbers, strings and containers of them")
    return f"{src}: not a plain PyTorch weights file, refused without running it ({what})"


def convert_checkpoint(src: str | Path, dst: str | Path | None = None, *, tensors_only: bool = False) -> Conversion:
    """Write `src`'s tensors to `dst` (default: beside it, .safetensors). A ConfigError naming the file when
    it is not a plain weights file, or when it holds entries that are not tensors (unless `tensors_only`:
    then they are dropped, and named in the result)."""
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's business
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as exc:
        raise ConfigError(_refusal(src, exc)) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{src}: holds a {type(obj).__name__}, not a state dict of tensors")
    tensors, other = _flatten(_unwrap(obj))
    if other and not tensors_only:
        shown = ", ".join(other[:8]) + (f" and {len(other) - 8} more" if len(other) > 8 else "")
        raise ConfigError(f"{src}: holds entries that are not tensors ({shown}); refused. Pass --tensors-only "
                          "to keep only its tensors")
    if not tensors:
        raise ConfigError(f"{src}: holds no tensors")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata={"converted_from": src.name})
    return Conversion(dst, len(tensors), tuple(other))


def convert_to_safetensors(src: str | Path, dst: str | Path | None = None, *, tensors_only: bool = False) -> Path:
    """convert_checkpoint's output path."""
    return convert_checkpoint(src, dst, tensors_only=tensors_only).dst
