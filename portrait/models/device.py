"""Device and dtype choice: cuda → fp16 (bf16 on request where supported), mps → fp16, cpu → fp32.

Overridable per call or through $PORTRAIT_DEVICE / $PORTRAIT_DTYPE.
"""

from __future__ import annotations

import os

from ..errors import ConfigError

_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "half": "float16",
           "bf16": "bfloat16", "bfloat16": "bfloat16"}


DTYPE_NAMES = ("fp32", "fp16", "bf16")


def check_dtype_name(dtype: str | None) -> str | None:
    """`dtype` (fp32, fp16, bf16 or a torch spelling) or None; a ConfigError naming the choices otherwise.
    Checked without importing torch, so a bad --dtype fails before any work."""
    if dtype in (None, "auto"):
        return dtype
    if str(dtype).lower() not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
    return dtype


def _best_device(torch) -> str:
    """CUDA when torch sees it, else Apple's mps, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _may_have_accelerator() -> bool:
    """False where no GPU can be present, so the CPU is known without importing torch (300+ MB of a
    worker's memory for nothing): Linux with no NVIDIA, AMD (ROCm) or WSL GPU device node. Elsewhere
    (macOS's mps, Windows) torch is asked."""
    import sys
    from pathlib import Path

    if "torch" in sys.modules:  # already paid for: ask it
        return True
    if sys.platform.startswith("linux"):
        dev = Path("/dev")
        return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists() or (dev / "dxg").exists()
    return True


def resolve_device(device: str | None = None) -> str:
    """The device a job runs every stage on, decided once: `device` as given (cpu, cuda, cuda:N, mps), else
    $PORTRAIT_DEVICE, else CUDA when torch sees it, else Apple's mps, else the CPU. Without torch installed,
    the CPU. A CUDA device torch cannot see is a ConfigError naming it."""
    device = device or os.environ.get("PORTRAIT_DEVICE") or None
    if device in (None, "auto", "cpu") and not _may_have_accelerator():
        return "cpu"
    try:
        import torch
    except ImportError:
        torch = None
    if device in (None, "auto"):
        return "cpu" if torch is None else _best_device(torch)
    device = str(device)
    if device.startswith("cuda") and (torch is None or not torch.cuda.is_available()):
        raise ConfigError(f"device {device!r} requested but {'torch is not installed' if torch is None else 'torch sees no CUDA device'}")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; choose cpu, cuda, cuda:N or mps")
    return device


def onnx_device(device: str) -> str:
    """What the ONNX engines get for a torch device: cuda (onnxruntime's CUDA provider, the `gpu` extra)
    for a CUDA device, else cpu (onnxruntime has no mps)."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def pick_device(device: str | None = None, dtype: str | None = None):
    """(torch.device, torch.dtype) for diffusion work; explicit arguments beat the environment."""
    import torch

    device = device or os.environ.get("PORTRAIT_DEVICE") or None
    dtype = dtype or os.environ.get("PORTRAIT_DTYPE") or None
    if device in (None, "auto"):
        device = _best_device(torch)
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device")
    if dtype in (None, "auto"):
        return dev, (torch.float32 if dev.type == "cpu" else torch.float16)
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of fp32, fp16, bf16")
    if name == "bfloat16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = "float16"
    return dev, getattr(torch, name)


def dtype_name(dtype) -> str:
    """"float16" for torch.float16: the name pick_device and the CLI's --dtype accept."""
    return str(dtype).replace("torch.", "")
