"""Tiny randomly-initialised spandrel models (real architecture classes, small widths) and a manifest
whose models.toml points the named model at them."""

from __future__ import annotations

from pathlib import Path


def tiny_rrdb(path: Path, scale: int = 2, num_filters: int = 8, num_blocks: int = 1, seed: int = 0) -> Path:
    """An RRDB (ESRGAN / Real-ESRGAN architecture) with random weights, saved as safetensors."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=scale)
    with torch.no_grad():  # default init gives a nearly black output; larger weights give a varied one
        for p in net.parameters():
            p.mul_(2.0)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def manifest_with(tmp_path: Path, **models: Path):
    from portrait.models.manifest import Manifest

    lines = [f'[models.{name}]\npath = "{p}"\n' for name, p in models.items()]
    cfg = tmp_path / "models.toml"
    cfg.write_text("\n".join(lines))
    return Manifest(tmp_path, cfg)
