"""Which engine runs each stage of `portrait run`, and why: decided once from config + present models.

Every stage has an offline default; model-backed engines are chosen when their weights are present
("auto") or forced by name (then a missing file is an error naming it). The decisions are printed
by the CLI and written to result.json so a user sees exactly what ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from .errors import ConfigError
from .models.manifest import Manifest
from .post import fusion, retouch, upscale

# Each stage's own engines (its module's ENGINES), plus "auto" (chosen from the models present) and, for
# the optional stages, "none".
FUSION_ENGINES = ("auto", *fusion.ENGINES)
RETOUCH_ENGINES = ("auto", *retouch.ENGINES, "none")
UPSCALE_ENGINES = ("auto", *upscale.ENGINES, "none")
DIFFUSION_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class EngineChoice:
    stage: str
    engine: str  # the engine that runs, or "skipped"
    reason: str
    device: str = ""  # where it runs (cpu, cuda, ...), once the run resolved its device; "" while undecided

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
    from .faces.analysis import embedder_model

    have = manifest.available("inswapper")
    buffalo = embedder_model(embedder) == "arcface-buffalo"  # inswapper was trained on buffalo_l's embeddings
    if requested == "onnx":
        manifest.require("inswapper")
        if not buffalo:
            raise ConfigError("fusion engine 'onnx' (inswapper) needs buffalo_l ArcFace embeddings: "
                              "use --embedder arcface-buffalo")
        return EngineChoice("fusion", "onnx", "requested")
    if have and buffalo:
        return EngineChoice("fusion", "onnx", "inswapper and ArcFace models present")
    why = "no inswapper model" if not have else "inswapper needs the arcface-buffalo embedder"
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


from .faces.analysis import EMBEDDING_DIMS  # noqa: E402  (the size each embedder gives)

INSTANTID_NAMES = ("instantid-adapter", "instantid-controlnet")


def _base_info(manifest: Manifest, base: str) -> tuple[str, int | None]:
    """(architecture, UNet cross-attention size or None) of the base without loading it."""
    from .errors import PortraitError

    try:
        from .models import loading

        arch, unet = loading.base_unet_config(base, manifest)
        return arch, unet.get("cross_attention_dim")
    except (PortraitError, OSError, ValueError, ImportError):
        spec = manifest.specs.get(base)
        return (spec.architecture if spec and spec.architecture else "sd15"), None


def _adapter_fits(path, embedder: str, cross_dim: int | None) -> str | None:
    """None when the adapter file takes this embedder's embeddings and this base's token size; else why not."""
    from .faces.analysis import embedder_model
    from .models.adapters import adapter_id_dim, adapter_token_dim, trained_on

    try:
        id_dim, tok, model = adapter_id_dim(path), adapter_token_dim(path), trained_on(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is a reason not to choose it, said to the user
        return f"cannot be read ({exc})"
    want = EMBEDDING_DIMS.get(embedder)
    if want is not None and id_dim != want:
        return f"it expects {id_dim}-d face embeddings and the {embedder} embedder gives {want}-d: use --embedder {model}"
    if embedder_model(embedder) != model:
        return f"it was trained on {model} embeddings, not {embedder_model(embedder)}: use --embedder {model}"
    if cross_dim is not None and tok != cross_dim:
        return f"it projects to {tok}-d tokens and the base model's UNet attends to {cross_dim}-d"
    return None


def _lora_fits(path, cross_dim: int | None) -> str | None:
    """None when the LoRA's cross-attention key/value layers take this base's text tokens; else why not."""
    if cross_dim is None:
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if "attn2" in key and "to_k" in key and ("lora_A" in key or "lora_down" in key or "lora.down" in key):
                    width = f.get_slice(key).get_shape()[-1]
                    if width != cross_dim:
                        return (f"it was trained for {width}-d text tokens and this base attends to {cross_dim}-d "
                                "(an SD 1.5 LoRA on SDXL, or the reverse)")
                    return None
    except Exception:  # noqa: BLE001 - not readable here: the loader names the file and the problem
        return None
    return None


def choose_identity(manifest: Manifest, base: str, identity: str | None,
                    embedder: str = "dlib-resnet") -> tuple[str | None, str]:
    """How the user's identity is painted: ("lora" | "faceid" | "instantid" | None, why).

    An identity LoRA wins. Otherwise, on an SDXL base with both InstantID files present and an embedder
    whose embeddings its adapter takes (ArcFace, 512-d, for the real InstantID): InstantID, as
    `portrait generate --engine auto`. Else IP-Adapter FaceID when its adapter is present (on SDXL also
    when it fits the embedder and the base). None: no engine can run, `why` says what to do.
    """
    arch, cross_dim = _base_info(manifest, base)
    if identity:
        problem = _lora_fits(identity, cross_dim)
        if problem:
            return None, f"the identity LoRA {identity} does not fit the base model {base}: {problem}"
        return "lora", "identity LoRA"
    have_faceid = manifest.available("ip-adapter-faceid")
    if arch != "sdxl":  # SD 1.5: FaceID when its adapter is present and takes this embedder's embeddings
        if not have_faceid:
            return None, "no identity LoRA given and no FaceID adapter present"
        problem = _adapter_fits(manifest.path("ip-adapter-faceid"), embedder, cross_dim)
        if problem:
            return None, f"the FaceID adapter does not fit: {problem}"
        return "faceid", "FaceID embedding"
    iid_missing = [n for n in INSTANTID_NAMES if not (n in manifest.specs and manifest.available(n))]
    iid_problem = None
    if not iid_missing:
        iid_problem = _adapter_fits(manifest.path("instantid-adapter"), embedder, None)
        if iid_problem is None:
            return "instantid", f"InstantID (IdentityNet + adapter) on {embedder} embeddings"
    faceid_problem = "no FaceID adapter present"
    if have_faceid:
        faceid_problem = _adapter_fits(manifest.path("ip-adapter-faceid"), embedder, cross_dim)
        if faceid_problem is None:
            why = f"; InstantID not used: its adapter {iid_problem}" if iid_problem else ""
            return "faceid", f"FaceID embedding{why}"
        faceid_problem = f"the FaceID adapter does not fit: {faceid_problem}"
    if iid_problem:
        return None, f"InstantID cannot run: its adapter {iid_problem} ({faceid_problem})"
    return None, (f"no identity LoRA given, InstantID files missing ({', '.join(iid_missing)}) and "
                  f"{faceid_problem}")


def missing_controlnets(manifest: Manifest, arch: str, controls: Sequence[str]) -> list[str]:
    """Manifest names of the ControlNets `controls` need on an `arch` base that are not present."""
    from .generate.pipelines import controlnet_model

    wanted = [controlnet_model(arch, c) for c in controls]  # a control with no model for arch: ConfigError
    return [n for n in wanted if n not in manifest.specs or not manifest.available(n)]


def choose_diffusion(mode: str, manifest: Manifest, base_model: str | None, identity: str | None,
                     embedder: str = "dlib-resnet", controls: Sequence[str] | None = None) -> EngineChoice:
    """The two-pass ControlNet inpaint runs when a base model, the ControlNets the templates need
    (`controls`: control names such as "canny", "tile"; None when not known yet) and an identity engine
    that can paint this identity (LoRA, FaceID or InstantID: choose_identity) are all present; the reason
    names the identity engine.

    "auto" never picks diffusion when something it needs is missing or does not fit the inputs (embedding
    size, architecture): the inpaint stage is skipped (the classic path runs) and the reason says why.
    "on" raises the error naming what is missing instead. A --base-model given by name or path must exist.
    """
    _check(mode, DIFFUSION_MODES, "diffusion")
    if mode == "off":
        return EngineChoice("inpaint", "skipped", "disabled")
    if base_model:
        from .models import loading

        loading.resolve_model(base_model, manifest)  # ModelMissingError naming it: the user asked for it
    base = base_model or ("sd15" if manifest.available("sd15") else None)
    if base is None:
        if mode == "on":
            manifest.require("sd15")
        return EngineChoice("inpaint", "skipped", "no base model configured (see `portrait models list`)")
    arch, _ = _base_info(manifest, base)
    missing = missing_controlnets(manifest, arch, controls or ())
    if missing:
        if mode == "on":
            for name in missing:
                manifest.require(name)  # ModelMissingError naming the file (ConfigError for an unknown name)
        return EngineChoice("inpaint", "skipped", f"the templates need ControlNet(s) {', '.join(missing)}, "
                            "not present (see `portrait models list`)")
    engine, how = choose_identity(manifest, base, identity, embedder)
    if engine is None:
        if mode == "on":
            if how.startswith("no identity LoRA given and no FaceID adapter present"):
                raise ConfigError("diffusion needs an identity: pass --identity LORA (from `portrait train`) "
                                  "or install the ip-adapter-faceid model")
            if how.startswith("the identity LoRA"):
                raise ConfigError(f"diffusion cannot run: {how}")
            raise ConfigError(f"diffusion needs an identity: {how}; or pass --identity LORA (from `portrait train`)")
        return EngineChoice("inpaint", "skipped", how)
    return EngineChoice("inpaint", "diffusion", f"base model {base}, {how}")
