"""Which engine runs each stage of `portrait run`, and why: decided once from config + present models.

Every stage has an offline default; model-backed engines are chosen when their weights are present
("auto") or forced by name (then a missing file is an error naming it). The decisions are printed
by the CLI and written to result.json so a user sees exactly what ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ConfigError
from .models.manifest import Manifest

FUSION_ENGINES = ("auto", "classic", "onnx")
RETOUCH_ENGINES = ("auto", "classic", "restore", "none")
UPSCALE_ENGINES = ("auto", "classic", "esrgan", "none")
DIFFUSION_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class EngineChoice:
    stage: str
    engine: str  # the engine that runs, or "skipped"
    reason: str

    def line(self) -> str:
        return f"{self.stage}: {self.engine} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} engine {value!r}; choose one of {', '.join(allowed)}")


def choose_fusion(requested: str, manifest: Manifest, embedder: str) -> EngineChoice:
    _check(requested, FUSION_ENGINES, "fusion")
    if requested == "classic":
        return EngineChoice("fusion", "classic", "requested")
    have = manifest.available("inswapper")
    if requested == "onnx":
        manifest.require("inswapper")
        if embedder != "arcface":
            raise ConfigError("fusion engine 'onnx' (inswapper) needs ArcFace embeddings: use --embedder arcface")
        return EngineChoice("fusion", "onnx", "requested")
    if have and embedder == "arcface":
        return EngineChoice("fusion", "onnx", "inswapper and ArcFace models present")
    why = "no inswapper model" if not have else "inswapper needs the arcface embedder"
    return EngineChoice("fusion", "classic", why)


def choose_retouch(requested: str, manifest: Manifest) -> EngineChoice:
    _check(requested, RETOUCH_ENGINES, "retouch")
    if requested == "none":
        return EngineChoice("retouch", "skipped", "disabled")
    if requested == "restore" or (requested == "auto" and manifest.available("gfpgan")):
        manifest.require("gfpgan")
        return EngineChoice("retouch", "restore", "requested" if requested == "restore" else "gfpgan model present")
    return EngineChoice("retouch", "classic", "requested" if requested == "classic" else "no gfpgan model")


def choose_upscale(requested: str, manifest: Manifest, factor: float | None) -> EngineChoice:
    """`factor` None: each template's own output.upscale decides (1 skips the stage for that template)."""
    _check(requested, UPSCALE_ENGINES, "upscale")
    if requested == "none" or (factor is not None and factor <= 1):
        return EngineChoice("upscale", "skipped", "disabled" if requested == "none" else "factor 1")
    if requested == "esrgan" or (requested == "auto" and manifest.available("realesrgan-x4")):
        manifest.require("realesrgan-x4")
        return EngineChoice("upscale", "esrgan", "requested" if requested == "esrgan" else "Real-ESRGAN model present")
    return EngineChoice("upscale", "classic", "requested" if requested == "classic" else "no Real-ESRGAN model")


def choose_diffusion(mode: str, manifest: Manifest, base_model: str | None, identity: str | None) -> EngineChoice:
    """The two-pass ControlNet inpaint runs when a base model and an identity (LoRA or FaceID) exist."""
    _check(mode, DIFFUSION_MODES, "diffusion")
    if mode == "off":
        return EngineChoice("inpaint", "skipped", "disabled")
    base = base_model or ("sd15" if manifest.available("sd15") else None)
    if base is None:
        if mode == "on":
            manifest.require("sd15")
        return EngineChoice("inpaint", "skipped", "no base model configured (see `portrait models list`)")
    if identity is None and not manifest.available("ip-adapter-faceid"):
        if mode == "on":
            raise ConfigError("diffusion needs an identity: pass --identity LORA (from `portrait train`) "
                              "or install the ip-adapter-faceid model")
        return EngineChoice("inpaint", "skipped", "no identity LoRA given and no FaceID adapter present")
    how = "identity LoRA" if identity else "FaceID embedding"
    return EngineChoice("inpaint", "diffusion", f"base model {base}, {how}")
