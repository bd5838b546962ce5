"""The jobs' settings: frozen dataclasses validated when built, each with `from_dict(mapping)` (what the
API's "options" object goes through: ConfigError naming an unknown key or a bad value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Optional

from preprocess import PreprocessConfig

from ..errors import ConfigError
from ..faces.analysis import DETECTORS, EMBEDDERS
from ..identity import lora_train
from ..identity.reference import REFERENCE_NAME
from ..models.device import check_dtype_name
from ..engines import DIFFUSION_MODES, FUSION_ENGINES, RETOUCH_ENGINES, UPSCALE_ENGINES
from ..faces import FaceConfig
from ..post.fusion import FRINGES, SKINS
from ..generate.template_inpaint import IDENTITY_ENGINES as PAINTING_ENGINES
from ..generate.pipelines import SAMPLERS
from ..settings import check_choice, check_limits, from_dict

EMBEDDING_NAME = "identity_embedding.safetensors"
LORA_TARGETS = {"easyphoto": lora_train.TARGET_MODULES, "attention": lora_train.ATTENTION_ONLY}
IDENTITY_ENGINES = ("auto",) + PAINTING_ENGINES  # how a face embedding is painted; auto: by the base

__all__ = ["REFERENCE_NAME", "CreateConfig", "EmbedConfig", "GenerateConfig", "PreprocessConfig", "RunConfig", "TrainConfig"]


class _FromDict:
    @classmethod
    def from_dict(cls, data: Mapping | None):
        """Built from a mapping: ConfigError naming an unknown key or a bad value."""
        return from_dict(cls, data)


@dataclass(frozen=True)
class RunConfig:
    """Settings of `portrait run` / `batch`, validated when built (ConfigError naming the option)."""

    top_k: int = 12
    min_photos: int = 4
    resolution: int = 512
    face: FaceConfig = field(default_factory=FaceConfig)
    fusion: str = "auto"
    skin: str = "user"  # classic fusion: whose skin tone the portrait has (post.fusion.SKINS)
    fringe: str = "keep"  # classic fusion: a user's fringe is pasted (keep) or left out (cut)
    retouch: str = "auto"
    retouch_strength: float = 0.35
    upscale: str = "auto"
    upscale_factor: Optional[float] = None  # None: the template's output.upscale
    diffusion: str = "auto"
    base_model: Optional[str] = None
    identity: Optional[str] = None  # identity LoRA (.safetensors) from `portrait train`
    variants: int = 2  # reference photos rendered per template; the most alike output is kept
    max_tries: int = 4  # while no output reaches the likeness bar, try more reference photos, up to this
    likeness_bar: Optional[float] = None  # distance an output must reach; None = the same-person threshold
    steps: Optional[int] = None
    scheduler: Optional[str] = None  # the two passes' sampler (None: EasyPhoto's per base, pipelines.DEFAULT_SAMPLER)
    inpaint_size: Optional[int] = None  # working crop side for diffusion (default: 512 SD 1.5, 1024 SDXL)
    seed: Optional[int] = None
    device: Optional[str] = None
    dtype: Optional[str] = None  # diffusion weights: fp32 | fp16 | bf16 (default: fp16 on GPU, fp32 on CPU)
    models_dir: Optional[str] = None

    # Each numeric option's range, read by __post_init__ and by the CLI's options (one place for both).
    LIMITS: ClassVar[dict] = {
        "top_k": (1, 100), "min_photos": (1, 100), "resolution": (64, 4096), "retouch_strength": (0.0, 1.0),
        "upscale_factor": (1.0, 8.0), "variants": (1, 10), "max_tries": (1, 10), "likeness_bar": (0.0, None),
        "steps": (1, 500), "inpaint_size": (64, 4096),
    }

    def __post_init__(self):
        check_limits(self)
        if self.scheduler is not None:
            check_choice("scheduler", self.scheduler, tuple(SAMPLERS))
        if self.resolution % 8:
            raise ConfigError(f"option 'resolution' must be a multiple of 8, got {self.resolution}")
        check_choice("fusion", self.fusion, FUSION_ENGINES)
        check_choice("skin", self.skin, SKINS)
        check_choice("fringe", self.fringe, FRINGES)
        check_choice("retouch", self.retouch, RETOUCH_ENGINES)
        check_choice("upscale", self.upscale, UPSCALE_ENGINES)
        check_choice("diffusion", self.diffusion, DIFFUSION_MODES)
        if self.variants > self.max_tries:
            raise ConfigError(f"variants ({self.variants}) cannot exceed max_tries ({self.max_tries})")
        if self.inpaint_size is not None and self.inpaint_size % 8:
            raise ConfigError(f"option 'inpaint_size' must be a multiple of 8, got {self.inpaint_size}")

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "RunConfig":
        """From the API's "options" (nested "face" too): ConfigError naming an unknown key or a bad value."""
        return from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig(_FromDict):
    """`portrait train`: an identity LoRA (EasyPhoto's defaults)."""

    base_model: str = "sd15"  # manifest name, diffusers folder or single file
    steps: Optional[int] = None  # None: 200 per photo, at most 800
    rank: int = 128
    alpha: float = 64.0
    lr: float = 1e-4
    resolution: Optional[int] = None  # None: 512 SD 1.5, 1024 SDXL
    gradient_accumulation: int = 4  # EasyPhoto's: 4 samples' gradients per optimiser step
    lora_targets: str = "easyphoto"  # easyphoto: every Linear / 1x1 conv of the transformer blocks; attention: q/k/v/out
    train_text_encoder: Optional[bool] = None  # None: a text-encoder LoRA on SD 1.5 (EasyPhoto's), none on SDXL
    text_encoder_lr: Optional[float] = None  # None: half of lr
    seed: int = 0
    validate_every: int = 100
    merge_top_k: int = 1
    templates: tuple[str, ...] = ()  # validate on these templates' faces (two-pass inpaint) instead of text2img
    validation_size: Optional[int] = None  # template validation's inpaint working size
    validate: bool = True  # False: no validation renders, the last checkpoint is kept
    device: Optional[str] = None
    dtype: Optional[str] = None
    models_dir: Optional[str] = None

    LIMITS: ClassVar[dict] = {  # the CLI's options read them too
        "steps": (1, 100000), "rank": (1, 1024), "alpha": (1e-9, None), "lr": (1e-12, None),
        "text_encoder_lr": (1e-12, None),
        "resolution": (64, 4096), "validate_every": (1, 100000), "merge_top_k": (1, 100),
        "validation_size": (64, 2048), "gradient_accumulation": (1, 64),
    }

    def __post_init__(self):
        check_limits(self)
        if self.resolution is not None and self.resolution % 8:
            raise ConfigError(f"option 'resolution' must be a multiple of 8, got {self.resolution}")
        check_choice("lora_targets", self.lora_targets, tuple(LORA_TARGETS))
        check_dtype_name(self.dtype)


@dataclass(frozen=True)
class EmbedConfig(_FromDict):
    """`portrait embed`: a train-free identity (the mean face embedding) for IP-Adapter FaceID / InstantID."""

    embedder: str = "dlib-resnet"  # FaceID needs arcface-buffalo, InstantID arcface-antelopev2 (512-d)
    detector: str = "auto"  # auto: scrfd with an ArcFace embedder (its own five keypoints), else dlib-hog
    file_name: str = EMBEDDING_NAME  # written under out_dir, with reference.png beside it
    top_k: int = 12  # a raw photo folder: the photos kept by selection
    min_photos: int = 1  # fewer usable photos: NotEnoughPhotosError
    models_dir: Optional[str] = None

    LIMITS: ClassVar[dict] = {"top_k": (1, 100), "min_photos": (1, 100)}

    def __post_init__(self):
        check_choice("embedder", self.embedder, EMBEDDERS)
        check_choice("detector", self.detector, ("auto",) + DETECTORS)
        check_limits(self)
        if not self.file_name or "/" in self.file_name or "\\" in self.file_name or self.file_name.startswith("."):
            raise ConfigError(f"option 'file_name' must be a plain file name, got {self.file_name!r}")


@dataclass(frozen=True)
class GenerateConfig(_FromDict):
    """`portrait generate`: an identity painted into templates by two-pass ControlNet inpainting."""

    base_model: Optional[str] = None  # None: sd15 from the models config
    reference: Optional[str] = None  # the user's photo or training set (None: reference.png beside the identity)
    steps: Optional[int] = None  # scheduler steps of both passes (None: the template's)
    seed: Optional[int] = None
    strength: Optional[float] = None  # pass-1 denoise strength
    device: Optional[str] = None
    dtype: Optional[str] = None  # fp32 | fp16 | bf16 (default: fp16 on GPU, fp32 on CPU)
    engine: str = "auto"  # how a face embedding is painted: auto | faceid | instantid
    scheduler: Optional[str] = None  # the two passes' sampler (None: EasyPhoto's per base)
    models_dir: Optional[str] = None

    LIMITS: ClassVar[dict] = {"steps": (1, 500), "strength": (0.01, 1.0)}  # the CLI's options read them too

    def __post_init__(self):
        check_limits(self)
        if self.scheduler is not None:
            check_choice("scheduler", self.scheduler, tuple(SAMPLERS))
        check_choice("engine", self.engine, IDENTITY_ENGINES)
        check_dtype_name(self.dtype)


@dataclass(frozen=True)
class CreateConfig(_FromDict):
    """`portrait create`: new pictures of the identity from style packs (no template photo): N candidates
    per style in one denoising call, the face-detail pass, retouch and upscale, ranked by likeness."""

    count: int = 4  # candidates per style
    seed: Optional[int] = None  # the first candidate's seed (None: 0); candidate k gets seed + k
    prompt: Optional[str] = None  # words added to each style's prompt ("red scarf, snow")
    base_model: Optional[str] = None  # None: sd15
    engine: str = "auto"  # how a face embedding is painted: auto | faceid | instantid
    reference: Optional[str] = None  # the user's photo or training set (None: reference.png beside the identity)
    steps: Optional[int] = None  # None: the style's for this base
    guidance_scale: Optional[float] = None
    sampler: Optional[str] = None
    size: Optional[int] = None  # the picture's area is size x size (None: the style's, 512 SD 1.5, 1024 SDXL)
    detail: bool = True  # the face-detail pass
    detail_size: Optional[int] = None  # its working size (None: 512 SD 1.5, 1024 SDXL)
    fusion: bool = False  # fuse the user's reference face into each candidate's face (classic fusion)
    retouch: str = "auto"
    retouch_strength: float = 0.35
    upscale: str = "auto"
    upscale_factor: float = 1.0  # 1: no super-resolution
    likeness_bar: Optional[float] = None  # a distance: while no candidate is this close, new seeds are tried
    retries: int = 2  # extra rounds of `count` new seeds for the bar
    device: Optional[str] = None
    dtype: Optional[str] = None
    models_dir: Optional[str] = None

    LIMITS: ClassVar[dict] = {"count": (1, 16), "seed": (0, 2**32 - 1), "steps": (1, 500), "guidance_scale": (0.0, 50.0),
                              "size": (64, 2048), "detail_size": (64, 2048), "retouch_strength": (0.0, 1.0),
                              "upscale_factor": (1.0, 8.0), "likeness_bar": (0.0, None), "retries": (0, 10)}

    def __post_init__(self):
        check_limits(self)
        check_choice("engine", self.engine, IDENTITY_ENGINES)
        check_choice("retouch", self.retouch, RETOUCH_ENGINES)
        check_choice("upscale", self.upscale, UPSCALE_ENGINES)
        if self.sampler is not None:
            check_choice("sampler", self.sampler, tuple(SAMPLERS))
        for key in ("size", "detail_size"):
            v = getattr(self, key)
            if v is not None and v % 8:
                raise ConfigError(f"option '{key}' must be a multiple of 8, got {v}")
        check_dtype_name(self.dtype)
