"""The model manifest: every model the project can use, where its files live, their hashes and licences.

Built-in entries (below) name each model's files relative to the models folder
(`$PORTRAIT_MODELS_DIR`, default `~/.local/share/portrait/models`). A `models.toml` in that folder
(or the file named by `$PORTRAIT_MODELS_CONFIG`) overrides paths and hashes and adds models:

    [models.sd15]
    path = "/data/weights/v1-5-pruned-emaonly.safetensors"
    sha256 = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"

Nothing here touches the network. A missing file raises ModelMissingError naming the model, the
expected path and how to get it; a bad hash raises ModelHashError.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal

from ..errors import ConfigError, ModelHashError, ModelMissingError
from ..paths import absolute

ModelKind = Literal[
    "face_detector",
    "face_landmarks",
    "face_embedding",
    "face_swapper",
    "face_parsing",
    "segmentation",
    "restoration",
    "upscaler",
    "diffusion_base",
    "vae",
    "controlnet",
    "ip_adapter",
    "image_encoder",
    "instantid",
    "lora",
    "tokenizer",
]
MODEL_KINDS: tuple[str, ...] = ModelKind.__args__  # type: ignore[attr-defined]

# Old names still accepted everywhere a model name is (models.toml tables included).
ALIASES = {"arcface": "arcface-buffalo"}

PACKAGE_PREFIX = "pkg:"  # "pkg:module/relative/path": a file shipped inside an installed pip package


@dataclass(frozen=True)
class ModelSpec:
    """One model: its files (relative to the models folder, absolute, or pkg:...), hash and licence."""

    name: str
    kind: str
    path: str  # a file or a folder (diffusers layout)
    sha256: str | None = None  # of the file; folders are checked for `required` members instead
    licence: str = "unknown"
    commercial_use: bool | None = None  # None: check the licence yourself
    source: str = ""  # where a user gets it (human text, never fetched by the code)
    description: str = ""
    required: tuple[str, ...] = ()  # for folders: members that must exist
    architecture: str | None = None  # e.g. "sd15", "sdxl" for diffusion models and ControlNets
    extra: dict = field(default_factory=dict)

    @property
    def bundled(self) -> bool:
        return self.path.startswith(PACKAGE_PREFIX)


_DLIB_SOURCE = "ships in the pip package face-recognition-models (installed with portrait)"
_INSIGHTFACE_LICENCE = "insightface model packs: non-commercial research use only"

BUILTIN: tuple[ModelSpec, ...] = (
    # --- offline face stack, shipped in pip packages -------------------------------------------
    ModelSpec(
        "dlib-5pt", "face_landmarks", "pkg:face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
        licence="CC0 (dlib-models)", commercial_use=True, source=_DLIB_SOURCE,
        description="dlib 5-point landmarks (eye corners, nose base)",
    ),
    ModelSpec(
        "dlib-68pt", "face_landmarks", "pkg:face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
        licence="trained on iBUG 300-W, whose licence excludes commercial use", commercial_use=False,
        source=_DLIB_SOURCE,
        description="dlib 68-point landmarks (dense outline for masks and fusion); switch off with "
        "landmarks='none' for commercial use",
    ),
    ModelSpec(
        "dlib-resnet", "face_embedding", "pkg:face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        licence="CC0 (dlib-models)", commercial_use=True, source=_DLIB_SOURCE,
        description="dlib ResNet 128-d identity descriptor (L2 distance, same person < 0.6)",
    ),
    ModelSpec(
        "dlib-mmod", "face_detector", "pkg:face_recognition_models/models/mmod_human_face_detector.dat",
        licence="CC0 (dlib-models)", commercial_use=True, source=_DLIB_SOURCE,
        description="dlib MMOD CNN face detector (slower, more robust to pose than HOG)",
    ),
    # --- user-supplied face models --------------------------------------------------------------
    ModelSpec(
        "scrfd", "face_detector", "insightface/scrfd_10g_bnkps.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface 'buffalo_l' / 'antelopev2' pack (det_10g.onnx renamed or "
        "set path in models.toml)", description="SCRFD face detector with 5 keypoints (ONNX)",
    ),
    ModelSpec(
        "arcface-buffalo", "face_embedding", "insightface/w600k_r50.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface 'buffalo_l' pack (w600k_r50.onnx)",
        description="ArcFace ResNet-50 512-d identity embedding (cosine), what IP-Adapter FaceID and inswapper "
        "were trained on (alias: arcface)",
    ),
    ModelSpec(
        "arcface-antelopev2", "face_embedding", "insightface/glintr100.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface 'antelopev2' pack (glintr100.onnx)",
        description="ArcFace ResNet-100 512-d identity embedding (cosine), what InstantID was trained on",
    ),
    ModelSpec(
        "inswapper", "face_swapper", "insightface/inswapper_128.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface inswapper_128.onnx (community mirrors)",
        description="ONNX face swapper (128 px) for the 'onnx' fusion engine",
    ),
    ModelSpec(
        "bisenet-parsing", "face_parsing", "parsing/bisenet_face_parsing.onnx", licence="MIT (face-parsing.PyTorch)",
        commercial_use=True, source="export of zllrunning/face-parsing.PyTorch 79999_iter.pth to ONNX",
        description="BiSeNet face parsing (19 classes) for precise skin masks",
    ),
    ModelSpec(
        "matting", "segmentation", "segmentation/modnet_photographic.onnx", licence="Apache-2.0 (MODNet)",
        commercial_use=True, source="MODNet photographic portrait matting ONNX export",
        description="portrait matting for background removal (classic GrabCut is used without it)",
    ),
    # --- restoration and super-resolution (loaded through spandrel) -------------------------------
    ModelSpec(
        "gfpgan", "restoration", "restore/GFPGANv1.4.safetensors", licence="Apache-2.0 (GFPGAN)",
        commercial_use=True, source="TencentARC GFPGAN v1.4 release (.pth: `portrait models convert GFPGANv1.4.pth "
        "restore/GFPGANv1.4.safetensors`, or point models.toml at the .pth)",
        description="face restoration for the skin-retouch stage",
    ),
    ModelSpec(
        "realesrgan-x4", "upscaler", "upscale/RealESRGAN_x4plus.safetensors", licence="BSD-3-Clause (Real-ESRGAN)",
        commercial_use=True, source="xinntao Real-ESRGAN release RealESRGAN_x4plus (.pth: `portrait models convert` it, or set path)",
        description="4x super-resolution (RRDB) for the upscale stage",
    ),
    # --- diffusion --------------------------------------------------------------------------------
    ModelSpec(
        "sd15", "diffusion_base", "diffusion/sd15", licence="CreativeML OpenRAIL-M", commercial_use=True,
        source="any SD 1.5 checkpoint: a diffusers folder, or a single .safetensors (set path in models.toml)",
        description="Stable Diffusion 1.5 base for LoRA training and inpainting", architecture="sd15",
        required=("model_index.json",),
    ),
    ModelSpec(
        "sdxl", "diffusion_base", "diffusion/sdxl", licence="CreativeML OpenRAIL++-M", commercial_use=True,
        source="any SDXL checkpoint: a diffusers folder, or a single .safetensors (set path in models.toml)",
        description="Stable Diffusion XL base", architecture="sdxl", required=("model_index.json",),
    ),
    ModelSpec(
        "clip-tokenizer", "tokenizer", "tokenizer/clip-vit-large-patch14", licence="MIT (OpenAI CLIP)",
        commercial_use=True, source="the tokenizer/ folder of any SD 1.5 or SDXL diffusers model, or "
        "openai/clip-vit-large-patch14 (vocab.json + merges.txt)",
        description="CLIP BPE vocabulary; only needed to load single-file SD checkpoints (diffusers folders carry "
        "their own tokenizer)", required=("vocab.json", "merges.txt"),
    ),
    ModelSpec(
        "controlnet-canny", "controlnet", "controlnet/sd15-canny", licence="OpenRAIL", commercial_use=True,
        source="lllyasviel/control_v11p_sd15_canny (diffusers folder)", architecture="sd15",
        description="canny-edge ControlNet", required=("config.json",),
    ),
    ModelSpec(
        "controlnet-openpose", "controlnet", "controlnet/sd15-openpose", licence="OpenRAIL", commercial_use=True,
        source="lllyasviel/control_v11p_sd15_openpose (diffusers folder)", architecture="sd15",
        description="openpose / face-keypoint ControlNet", required=("config.json",),
    ),
    ModelSpec(
        "controlnet-tile", "controlnet", "controlnet/sd15-tile", licence="OpenRAIL", commercial_use=True,
        source="lllyasviel/control_v11f1e_sd15_tile (diffusers folder)", architecture="sd15",
        description="tile ControlNet for the edge pass", required=("config.json",),
    ),
    ModelSpec(
        "controlnet-color", "controlnet", "controlnet/sd15-color", licence="OpenRAIL", commercial_use=True,
        source="a colour-palette ControlNet for SD 1.5 (e.g. EasyPhoto's control_sd15_random_color)",
        architecture="sd15", description="colour ControlNet", required=("config.json",),
    ),
    # SDXL ControlNets (the SD 1.5 ones cannot steer an SDXL UNet); InpaintModels picks them for SDXL bases.
    ModelSpec(
        "controlnet-canny-sdxl", "controlnet", "controlnet/sdxl-canny", licence="OpenRAIL++ (diffusers)",
        commercial_use=True, source="diffusers/controlnet-canny-sdxl-1.0 (diffusers folder; or xinsir/"
        "controlnet-canny-sdxl-1.0)", architecture="sdxl", description="canny-edge ControlNet (SDXL)",
        required=("config.json",),
    ),
    ModelSpec(
        "controlnet-openpose-sdxl", "controlnet", "controlnet/sdxl-openpose", licence="OpenRAIL++",
        commercial_use=True, source="thibaud/controlnet-openpose-sdxl-1.0 (diffusers folder; or xinsir/"
        "controlnet-openpose-sdxl-1.0)", architecture="sdxl",
        description="openpose / face-keypoint ControlNet (SDXL)", required=("config.json",),
    ),
    ModelSpec(
        "controlnet-tile-sdxl", "controlnet", "controlnet/sdxl-tile", licence="Apache-2.0 (xinsir)",
        commercial_use=True, source="xinsir/controlnet-tile-sdxl-1.0 (diffusers folder)", architecture="sdxl",
        description="tile ControlNet for the edge pass (SDXL)", required=("config.json",),
    ),
    ModelSpec(
        "controlnet-color-sdxl", "controlnet", "controlnet/sdxl-color", licence="check the model's licence",
        commercial_use=None, source="any SDXL colour-palette ControlNet as a diffusers folder (there is no standard "
        "release; or set the template's [inpaint] controlnets color = 0 to run without it)", architecture="sdxl",
        description="colour ControlNet (SDXL)", required=("config.json",),
    ),
    ModelSpec(
        "ip-adapter-faceid", "ip_adapter", "ip-adapter/ip-adapter-faceid_sd15.safetensors",
        licence="non-commercial (uses insightface embeddings)", commercial_use=False,
        source="h94/IP-Adapter-FaceID ip-adapter-faceid_sd15.bin (`portrait models convert` it to .safetensors)",
        architecture="sd15", description="IP-Adapter FaceID for the train-free identity path",
    ),
    ModelSpec(
        "clip-vision-vit-h", "image_encoder", "ip-adapter/image_encoder", licence="MIT (OpenCLIP ViT-H-14, LAION-2B)",
        commercial_use=True, source="h94/IP-Adapter models/image_encoder (config.json + model.safetensors)",
        description="CLIP ViT-H/14 image encoder: FaceID-Plus / PlusV2 read the face crop with it",
        required=("config.json",),
    ),
    ModelSpec(
        "instantid-adapter", "instantid", "instantid/ip-adapter.safetensors", licence="Apache-2.0 (InstantID)",
        commercial_use=None, source="InstantX/InstantID ip-adapter.bin (`portrait models convert` it to .safetensors)",
        architecture="sdxl", description="InstantID image-prompt adapter (SDXL)",
    ),
    ModelSpec(
        "instantid-controlnet", "controlnet", "instantid/ControlNetModel", licence="Apache-2.0 (InstantID)",
        commercial_use=None, source="InstantX/InstantID ControlNetModel folder", architecture="sdxl",
        description="InstantID IdentityNet (face-keypoint ControlNet, SDXL)", required=("config.json",),
    ),
)


def default_models_dir() -> Path:
    env = os.environ.get("PORTRAIT_MODELS_DIR")
    if env:
        return absolute(env)
    return absolute(Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "portrait" / "models")


def package_file(spec_path: str) -> Path:
    """Resolve 'pkg:module/rel/path' to a file inside an installed package without importing it."""
    module, _, rel = spec_path[len(PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelMissingError(module, spec_path, f"install the pip package that provides '{module}'")
    return Path(list(found.submodule_search_locations)[0]) / rel


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    path: Path
    state: Literal["present", "missing", "bad_hash", "unchecked"]
    message: str = ""


class Manifest:
    """The built-in model table merged with the user's models.toml, resolved against a folder."""

    def __init__(self, models_dir: str | Path | None = None, config_file: str | Path | None = None,
                 specs: Iterable[ModelSpec] = BUILTIN):
        self.models_dir = absolute(models_dir) if models_dir else default_models_dir()
        self.specs: dict[str, ModelSpec] = {s.name: s for s in specs}
        cfg = config_file or os.environ.get("PORTRAIT_MODELS_CONFIG") or (self.models_dir / "models.toml")
        self.config_file = absolute(cfg)
        if self.config_file.is_file():
            self._apply_config(self.config_file)
        self._verified: dict[str, str] = {}

    def _apply_config(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot parse models config ({exc})") from exc
        for name, entry in (data.get("models") or {}).items():
            name = ALIASES.get(name, name)
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: [models.{name}] must be a table")
            unknown = set(entry) - {"path", "sha256", "kind", "licence", "commercial_use", "source",
                                    "description", "architecture", "required", "config"}
            if unknown:
                raise ConfigError(f"{path}: [models.{name}] has unknown keys {sorted(unknown)}")
            base = self.specs.get(name)
            if base is None:
                if "kind" not in entry or "path" not in entry:
                    raise ConfigError(f"{path}: new model [models.{name}] needs 'kind' and 'path'")
                base = ModelSpec(name=name, kind=entry["kind"], path=entry["path"])
            if "kind" in entry and entry["kind"] not in MODEL_KINDS:
                raise ConfigError(f"{path}: [models.{name}] kind must be one of {', '.join(MODEL_KINDS)}")
            changes = {k: v for k, v in entry.items() if k not in ("required", "config")}
            if "config" in entry:  # a local diffusers config folder for a single-file checkpoint
                cfg_path = Path(entry["config"]).expanduser()
                changes["extra"] = {**base.extra, "config": str(cfg_path if cfg_path.is_absolute() else path.parent / cfg_path)}
            if "required" in entry:
                changes["required"] = tuple(entry["required"])
            if "path" in entry and not isinstance(entry["path"], str):
                raise ConfigError(f"{path}: [models.{name}] path must be a string")
            if "path" in entry:  # relative to the models.toml's folder (the file's path is absolute)
                p = Path(entry["path"]).expanduser()
                changes["path"] = str(p if p.is_absolute() else path.parent / p)
            self.specs[name] = replace(base, **changes)

    # -- lookup ----------------------------------------------------------------------------------
    def spec(self, name: str) -> ModelSpec:
        try:
            return self.specs[ALIASES.get(name, name)]
        except KeyError:
            raise ConfigError(f"unknown model '{name}'; known: {', '.join(sorted(self.specs))}") from None

    def path(self, name: str) -> Path:
        spec = self.spec(name)
        if spec.bundled:
            return package_file(spec.path)
        p = Path(spec.path).expanduser()
        return p if p.is_absolute() else self.models_dir / p

    def how_to_get(self, spec: ModelSpec, path: Path, list_hint: bool = True) -> str:
        """What to do about a missing model; `list_hint` adds the pointer to `portrait models list` (left
        out where the text is shown by that very command)."""
        if spec.bundled:
            return f"It {spec.source}; reinstall portrait (pip install -e .)."
        where = f" Get it from: {spec.source}." if spec.source else ""
        more = " Run `portrait models list` to see every model's state." if list_hint else ""
        return f"Place it at that path or set [models.{spec.name}] path = \"...\" in {self.config_file}.{where}{more}"

    def status(self, name: str, check_hash: bool = True) -> ModelStatus:
        spec = self.spec(name)
        try:
            path = self.path(name)
        except ModelMissingError as exc:
            return ModelStatus(spec, Path(spec.path), "missing", str(exc))
        if not path.exists():
            return ModelStatus(spec, path, "missing", self.how_to_get(spec, path))
        if path.is_dir():
            lacking = [r for r in spec.required if not (path / r).exists()]
            if lacking:
                return ModelStatus(spec, path, "missing", f"folder lacks {', '.join(lacking)}")
            return ModelStatus(spec, path, "present")
        if spec.sha256 and check_hash:
            actual = self._verified.get(str(path)) or sha256_file(path)
            self._verified[str(path)] = actual
            if actual.lower() != spec.sha256.lower():
                return ModelStatus(spec, path, "bad_hash", f"sha256 {actual} != expected {spec.sha256}")
            return ModelStatus(spec, path, "present")
        return ModelStatus(spec, path, "present" if spec.sha256 or spec.bundled else "unchecked")

    def require(self, name: str, check_hash: bool = True) -> Path:
        """The model's path, or a ModelMissingError / ModelHashError saying exactly what to do."""
        st = self.status(name, check_hash=check_hash)
        if st.state == "missing":
            raise ModelMissingError(name, st.path, st.message if st.message.startswith("folder") else
                                    self.how_to_get(st.spec, st.path))
        if st.state == "bad_hash":
            raise ModelHashError(name, st.path, st.spec.sha256 or "", st.message.split()[1])
        return st.path

    def available(self, name: str) -> bool:
        return self.status(name, check_hash=False).state != "missing"

    def all(self) -> list[ModelSpec]:
        return sorted(self.specs.values(), key=lambda s: (MODEL_KINDS.index(s.kind) if s.kind in MODEL_KINDS else 99,
                                                          s.name))


_MANIFESTS: dict[tuple[str, str], Manifest] = {}


def get_manifest(models_dir: str | Path | None = None, config_file: str | Path | None = None) -> Manifest:
    """The process-wide manifest for a models folder (cached; the model caches key on it)."""
    md = str(absolute(models_dir) if models_dir else default_models_dir())
    cfg = config_file or os.environ.get("PORTRAIT_MODELS_CONFIG")
    key = (md, str(absolute(cfg)) if cfg else "")
    if key not in _MANIFESTS:
        _MANIFESTS[key] = Manifest(md, config_file)
    return _MANIFESTS[key]
