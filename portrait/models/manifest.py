"""The model manifest: every model the project can use, where its files live, their hashes and licences.

Built-in entries (below) name each model's files relative to the models folder
(`$PORTRAIT_MODELS_DIR`, default `~/.local/share/portrait/models`). A `models.toml` in that folder
(or the file named by `$PORTRAIT_MODELS_CONFIG`) overrides paths and hashes and adds models:

    [models.sd15]
    path = "/data/weights/v1-5-pruned-emaonly.safetensors"
    sha256 = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"

Nothing here touches the network: `portrait models fetch` (portrait/models/fetch.py) downloads the
files each entry's `download` names, at the recorded revision, and checks their sha256. A missing
file raises ModelMissingError naming the model, the expected path and how to get it; a bad hash
raises ModelHashError; a model the licence policy (portrait/models/licence.py) excludes raises
LicenceError.

Where public material shows a file's commit and sha256 (the Hub's LFS hash) they are recorded here;
where it does not, the revision is a branch and `portrait models list` says the pin is missing.
Nothing here is guessed: an unknown hash is None, never made up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal

from ..errors import ConfigError, ModelHashError, ModelMissingError
from ..paths import absolute

log = logging.getLogger(__name__)

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

FETCH_RECORDS = ".fetched"  # under the models folder: one JSON per model `portrait models fetch` installed
PACKAGE_PREFIX = "pkg:"  # "pkg:module/relative/path": a file shipped inside an installed pip package


_COMMIT_LEN = 40


def is_commit(revision: str | None) -> bool:
    """A full 40-hex commit id (immutable), as opposed to a branch or tag name (movable)."""
    return bool(revision) and len(revision) == _COMMIT_LEN and all(c in "0123456789abcdef" for c in revision.lower())


@dataclass(frozen=True)
class SourceFile:
    """One file of a model on the Hub: its path in the repo and where it lands under the model's path."""

    repo_path: str  # the exact file name in the repo
    dest: str = ""  # relative to the model's path ("" = the model's path is this file)
    sha256: str | None = None  # the Hub's LFS sha256, where public material shows it
    size: int | None = None  # exact bytes, where public material shows it
    revision: str | None = None  # overrides Download.revision for this file (pinned at another commit)
    convert: bool = False  # a .bin / .pth pickle: converted to the model's .safetensors after the hash check


@dataclass(frozen=True)
class Download:
    """Where a model's files come from. `repo` set: Hugging Face Hub (fetched by `portrait models fetch`);
    else (or gated) the user downloads `url` by hand and follows `steps`."""

    repo: str = ""  # Hub repo id
    revision: str = "main"  # a commit where public material shows one, else a branch (pin missing)
    files: tuple[SourceFile, ...] = ()
    repo_type: str = "model"  # "model" or "space"
    url: str = ""  # the page or file a user opens (manual sources; also shown for Hub sources)
    steps: str = ""  # what to do by hand (manual sources)
    gated: bool = False  # the Hub asks the user to accept a licence first: manual
    size: str = ""  # approximate download size, from public listings

    @property
    def automatic(self) -> bool:
        return bool(self.repo) and bool(self.files) and not self.gated

    @property
    def pinned(self) -> bool:
        """Every file at a commit id and with a sha256 for its weights (configs are pinned by the commit)."""
        return bool(self.files) and all(is_commit(f.revision or self.revision) for f in self.files)

    def page(self) -> str:
        if self.url:
            return self.url
        prefix = "spaces/" if self.repo_type == "space" else ""
        return f"https://huggingface.co/{prefix}{self.repo}/tree/{self.revision}" if self.repo else ""

    def to_dict(self) -> dict:
        return {"repo": self.repo or None, "repo_type": self.repo_type, "revision": self.revision,
                "pinned": self.pinned, "automatic": self.automatic, "url": self.page(), "steps": self.steps or None,
                "size": self.size or None,
                "files": [{"path": f.repo_path, "dest": f.dest, "sha256": f.sha256, "size": f.size,
                           "revision": f.revision or self.revision} for f in self.files]}


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
    download: Download | None = None  # where `portrait models fetch` gets it (None: shipped in a pip package)
    alternative: str = ""  # a commercial-safe replacement, named when the licence policy refuses this model

    @property
    def bundled(self) -> bool:
        return self.path.startswith(PACKAGE_PREFIX)


_DLIB_SOURCE = "ships in the pip package face-recognition-models (installed with portrait)"
_MEDIAPIPE_SOURCE = ("ships inside portrait (from the mediapipe 0.10.21 wheel, unchanged; LICENSE and NOTICE "
                     "beside it); runs on the ai-edge-litert runtime")
_INSIGHTFACE_LICENCE = "insightface model packs: non-commercial research use only"
_CONVERT = "fetch converts it to .safetensors (torch.load(weights_only=True); nothing in it is run)"


def _f(repo_path: str, dest: str = "", sha256: str | None = None, *, revision: str | None = None,
       convert: bool = False) -> SourceFile:
    return SourceFile(repo_path, dest, sha256, revision=revision, convert=convert)


def _same(*paths: str, sha: dict[str, str] | None = None, revision: dict[str, str] | None = None) -> tuple:
    """Files kept at the same relative path under the model's folder (a diffusers repo)."""
    sha, revision = sha or {}, revision or {}
    return tuple(_f(p, p, sha.get(p), revision=revision.get(p)) for p in paths)


def _manual(url: str, steps: str, size: str = "") -> Download:
    return Download(url=url, steps=steps, size=size)


# Pins below come from public material (finegrain-ai/refiners' conversion recipes record the commit and
# the Hub's sha256 of the files they convert); entries at "main" have no public pin yet.
_SD15_REPO, _SD15_REV = "stable-diffusion-v1-5/stable-diffusion-v1-5", "f03de327dd89b501a01da37fc5240cf4fdba85a1"
_SD15_FILES = _same(
    "model_index.json", "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    sha={"text_encoder/model.safetensors": "d008943c017f0092921106440254dbbe00b6a285f7883ec8ba160c3faad88334",
         "unet/diffusion_pytorch_model.safetensors": "19da7aaa4b880e59d56843f1fcb4dd9b599c28a1d9d9af7c1143057c8ffae9f1",
         "vae/diffusion_pytorch_model.safetensors": "a2b5134f4dbc140d9c11f11cba3233099e00af40f262f136c691fb7d38d2194c"},
)
_SDXL_REPO, _SDXL_REV = "stabilityai/stable-diffusion-xl-base-1.0", "91704abbae38a0e1f60d433fb08d7f7d99081d21"
_TOKENIZER_FILES = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
_SDXL_FILES = _same(
    "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
    "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
    *(f"tokenizer/{n}" for n in _TOKENIZER_FILES), *(f"tokenizer_2/{n}" for n in _TOKENIZER_FILES),
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    sha={"unet/diffusion_pytorch_model.safetensors": "357650fbfb3c7b4d94c1f5fd7664da819ad1ff5a839430484b4ec422d03f710a",
         "vae/diffusion_pytorch_model.safetensors": "1598f3d24932bcfe6634e8b618ea1e30ab1d57f5aad13a6d2de446d2199f2341"},
    revision={"unet/diffusion_pytorch_model.safetensors": "76d28af79639c28a79fa5c6c6468febd3490a37e"},
)


def _controlnet(repo: str, revision: str = "main", weights: str = "diffusion_pytorch_model.safetensors",
                sha256: str | None = None, size: str = "") -> Download:
    return Download(repo, revision, _same("config.json", weights, sha={weights: sha256} if sha256 else None), size=size)


_INSIGHTFACE_MIRROR = "public-data/insightface"  # a Hub copy of insightface's v0.7 model packs
_INSIGHTFACE_STEPS = ("insightface's own release is the zip {zip} (https://github.com/deepinsight/insightface/releases/"
                      "download/v0.7/{zip}); `portrait models fetch` takes the single file from the Hub copy instead")
_FACEID_REPO = "h94/IP-Adapter-FaceID"
_INSTANTID_REPO = "InstantX/InstantID"
_NO_FACEID = ("an identity LoRA: `portrait train` then `--identity` (FaceID and InstantID are trained on "
              "insightface embeddings)")

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
        "landmarks='dlib5' or 'none' for commercial use", alternative="dlib-5pt (--landmarks dlib5)",
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
    # --- MediaPipe (Apache-2.0), shipped in portrait itself (portrait/faces/mediapipe_models/) -----
    ModelSpec(
        "mediapipe-face-mesh", "face_landmarks", "pkg:portrait/faces/mediapipe_models/face_landmark.tflite",
        sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        licence="Apache-2.0 (Google MediaPipe)", commercial_use=True, source=_MEDIAPIPE_SOURCE,
        description="MediaPipe Face Mesh, 468 points (with the iBUG 68 subset, pose and face-oval masks); "
        "--landmarks mediapipe",
    ),
    ModelSpec(
        "mediapipe-selfie-segmentation", "segmentation",
        "pkg:portrait/faces/mediapipe_models/selfie_segmentation.tflite",
        sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        licence="Apache-2.0 (Google MediaPipe)", commercial_use=True, source=_MEDIAPIPE_SOURCE,
        description="MediaPipe selfie segmentation (person vs background, 256 x 256), for background removal",
    ),
    # --- insightface face models (Hub copies; non-commercial) ------------------------------------
    ModelSpec(
        "scrfd", "face_detector", "insightface/scrfd_10g_bnkps.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface 'buffalo_l' pack, det_10g.onnx (SCRFD-10GF with keypoints)",
        description="SCRFD face detector with 5 keypoints (ONNX)", alternative="dlib-hog (--detector dlib-hog)",
        download=Download(_INSIGHTFACE_MIRROR, "main", (_f("models/buffalo_l/det_10g.onnx"),), size="16.9 MB",
                          steps=_INSIGHTFACE_STEPS.format(zip="buffalo_l.zip")),
    ),
    ModelSpec(
        "arcface-buffalo", "face_embedding", "insightface/w600k_r50.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface 'buffalo_l' pack, w600k_r50.onnx",
        description="ArcFace ResNet-50 (WebFace600K) 512-d embedding: what IP-Adapter FaceID and inswapper were "
        "trained on", alternative="dlib-resnet (--embedder dlib-resnet)",
        download=Download(_INSIGHTFACE_MIRROR, "main", (_f("models/buffalo_l/w600k_r50.onnx"),), size="174.4 MB",
                          steps=_INSIGHTFACE_STEPS.format(zip="buffalo_l.zip")),
    ),
    ModelSpec(
        "arcface-antelopev2", "face_embedding", "insightface/glintr100.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface 'antelopev2' pack, glintr100.onnx (as InstantID's Space ships it)",
        description="ArcFace ResNet-100 (Glint360K) 512-d embedding: what InstantID was trained on",
        alternative="dlib-resnet (--embedder dlib-resnet) with an identity LoRA",
        download=Download(_INSTANTID_REPO, "main", (_f("models/antelopev2/glintr100.onnx"),), repo_type="space",
                          size="260.7 MB"),
    ),
    ModelSpec(
        "inswapper", "face_swapper", "insightface/inswapper_128.onnx", licence=_INSIGHTFACE_LICENCE,
        commercial_use=False, source="insightface inswapper_128.onnx (insightface no longer distributes it)",
        description="ONNX face swapper (128 px) for the 'onnx' fusion engine", alternative="the classic fusion "
        "(--fusion classic)",
        download=_manual("https://huggingface.co/ezioruan/inswapper_128.onnx/resolve/main/inswapper_128.onnx",
                         "insightface withdrew inswapper_128.onnx; that URL is a community copy, not an official "
                         "release, so portrait does not fetch it for you. Download it yourself if its licence suits "
                         "you and place it at the path shown", size="529 MB"),
    ),
    ModelSpec(
        "bisenet-parsing", "face_parsing", "parsing/bisenet_face_parsing.onnx", licence="MIT (face-parsing.PyTorch)",
        commercial_use=True, source="export of zllrunning/face-parsing.PyTorch 79999_iter.pth to ONNX",
        description="BiSeNet face parsing (19 classes) for precise skin masks",
        download=_manual("https://github.com/zllrunning/face-parsing.PyTorch",
                         "download 79999_iter.pth from the link in that README, export the BiSeNet to ONNX "
                         "(input 1x3x512x512) and place it at the path shown", size="53 MB"),
    ),
    ModelSpec(
        "matting", "segmentation", "segmentation/modnet_photographic.onnx", licence="Apache-2.0 (MODNet)",
        commercial_use=True, source="MODNet photographic portrait matting ONNX export",
        description="portrait matting for background removal (classic GrabCut is used without it)",
        download=_manual("https://github.com/ZHKKKe/MODNet/tree/master/onnx",
                         "download modnet_photographic_portrait_matting.onnx from the link in that folder's README "
                         "(or export the .ckpt with its export_onnx.py) and place it at the path shown", size="25 MB"),
    ),
    # --- restoration and super-resolution (loaded through spandrel) -------------------------------
    ModelSpec(
        "gfpgan", "restoration", "restore/GFPGANv1.4.safetensors", licence="Apache-2.0 (GFPGAN)",
        commercial_use=True, source="TencentARC GFPGAN v1.4 release (.pth: `portrait models convert GFPGANv1.4.pth "
        "restore/GFPGANv1.4.safetensors`, or point models.toml at the .pth)",
        description="face restoration for the skin-retouch stage",
        download=_manual("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
                         "convert it: `portrait models convert GFPGANv1.4.pth <models>/restore/"
                         "GFPGANv1.4.safetensors`", size="348.6 MB"),
    ),
    ModelSpec(
        "realesrgan-x4", "upscaler", "upscale/RealESRGAN_x4plus.safetensors", licence="BSD-3-Clause (Real-ESRGAN)",
        commercial_use=True, source="xinntao Real-ESRGAN release RealESRGAN_x4plus (.pth: `portrait models convert` it, or set path)",
        description="4x super-resolution (RRDB) for the upscale stage",
        download=_manual("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                         "convert it: `portrait models convert RealESRGAN_x4plus.pth <models>/upscale/"
                         "RealESRGAN_x4plus.safetensors`", size="64 MB"),
    ),
    # --- diffusion --------------------------------------------------------------------------------
    ModelSpec(
        "sd15", "diffusion_base", "diffusion/sd15", licence="CreativeML OpenRAIL-M", commercial_use=True,
        source="stable-diffusion-v1-5/stable-diffusion-v1-5 (diffusers folder); or any SD 1.5 checkpoint, a "
        "diffusers folder or a single .safetensors (set path in models.toml)",
        description="Stable Diffusion 1.5 base for LoRA training and inpainting", architecture="sd15",
        required=("model_index.json",),
        download=Download(_SD15_REPO, _SD15_REV, _SD15_FILES, size="4.3 GB (fp32)"),
    ),
    ModelSpec(
        "sdxl", "diffusion_base", "diffusion/sdxl", licence="CreativeML OpenRAIL++-M", commercial_use=True,
        source="stabilityai/stable-diffusion-xl-base-1.0 (diffusers folder); or any SDXL checkpoint, a diffusers "
        "folder or a single .safetensors (set path in models.toml)",
        description="Stable Diffusion XL base", architecture="sdxl", required=("model_index.json",),
        download=Download(_SDXL_REPO, _SDXL_REV, _SDXL_FILES, size="13.9 GB (fp32: UNet 10.3 GB)"),
    ),
    ModelSpec(
        "sdxl-vae-fp16-fix", "vae", "diffusion/sdxl-vae-fp16-fix", licence="MIT (madebyollin/sdxl-vae-fp16-fix)",
        commercial_use=True, source="madebyollin/sdxl-vae-fp16-fix (diffusers AutoencoderKL folder)",
        description="SDXL's VAE fine-tuned not to overflow in fp16: an SDXL base in fp16 decodes and encodes with "
        "it, where it is installed, instead of upcasting its own VAE to fp32 on every call (EasyPhoto ships it)",
        architecture="sdxl", required=("config.json", "diffusion_pytorch_model.safetensors"),
        download=Download("madebyollin/sdxl-vae-fp16-fix", "main",
                          _same("config.json", "diffusion_pytorch_model.safetensors"), size="335 MB"),
    ),
    ModelSpec(
        "clip-tokenizer", "tokenizer", "tokenizer/clip-vit-large-patch14", licence="MIT (OpenAI CLIP)",
        commercial_use=True, source="the tokenizer/ folder of any SD 1.5 or SDXL diffusers model, or "
        "openai/clip-vit-large-patch14 (vocab.json + merges.txt)",
        description="CLIP BPE vocabulary; only needed to load single-file SD checkpoints (diffusers folders carry "
        "their own tokenizer)", required=("vocab.json", "merges.txt"),
        download=Download(_SD15_REPO, _SD15_REV, (_f("tokenizer/vocab.json", "vocab.json"),
                                                  _f("tokenizer/merges.txt", "merges.txt")), size="1.5 MB"),
    ),
    ModelSpec(
        "controlnet-canny", "controlnet", "controlnet/sd15-canny", licence="OpenRAIL", commercial_use=True,
        source="lllyasviel/control_v11p_sd15_canny (diffusers folder)", architecture="sd15",
        description="canny-edge ControlNet", required=("config.json",),
        download=_controlnet("lllyasviel/control_v11p_sd15_canny", "115a470d547982438f70198e353a921996e2e819",
                             sha256="be713fb941fc7c625f0c7d816b6a19115783a665f3049a8974f127e0c075d9a9", size="1.45 GB"),
    ),
    ModelSpec(
        "controlnet-openpose", "controlnet", "controlnet/sd15-openpose", licence="OpenRAIL", commercial_use=True,
        source="lllyasviel/control_v11p_sd15_openpose (diffusers folder)", architecture="sd15",
        description="openpose / face-keypoint ControlNet", required=("config.json",),
        download=_controlnet("lllyasviel/control_v11p_sd15_openpose", size="1.45 GB"),
    ),
    ModelSpec(
        "controlnet-tile", "controlnet", "controlnet/sd15-tile", licence="OpenRAIL", commercial_use=True,
        source="lllyasviel/control_v11f1e_sd15_tile (diffusers folder)", architecture="sd15",
        description="tile ControlNet for the edge pass", required=("config.json",),
        download=_controlnet("lllyasviel/control_v11f1e_sd15_tile", "3f877705c37010b7221c3d10743307d6b5b6efac",
                             "diffusion_pytorch_model.bin",
                             "eb05b4c3665bd76dad70a90652014a9b3aab391abd8a5bb484e860330f9492fb", size="1.45 GB"),
    ),
    ModelSpec(
        "controlnet-color", "controlnet", "controlnet/sd15-color", licence="check the model's licence (EasyPhoto)",
        commercial_use=None, source="EasyPhoto's control_sd15_random_color (a single A1111 .pth)",
        architecture="sd15", description="colour ControlNet", required=("config.json",),
        download=_manual("https://pai-aigc-photog.oss-cn-hangzhou.aliyuncs.com/webui/control_sd15_random_color.pth",
                         "a non-Hub host: set [models.controlnet-color] path = \"/path/to/"
                         "control_sd15_random_color.pth\" in models.toml", size="1.45 GB"),
    ),
    # SDXL ControlNets (the SD 1.5 ones cannot steer an SDXL UNet); InpaintModels picks them for SDXL bases.
    ModelSpec(
        "controlnet-canny-sdxl", "controlnet", "controlnet/sdxl-canny", licence="OpenRAIL++ (diffusers)",
        commercial_use=True, source="diffusers/controlnet-canny-sdxl-1.0 (diffusers folder; or xinsir/"
        "controlnet-canny-sdxl-1.0)", architecture="sdxl", description="canny-edge ControlNet (SDXL)",
        required=("config.json",), download=_controlnet("diffusers/controlnet-canny-sdxl-1.0", size="5.0 GB (fp32)"),
    ),
    ModelSpec(
        "controlnet-openpose-sdxl", "controlnet", "controlnet/sdxl-openpose", licence="Apache-2.0 (xinsir)",
        commercial_use=True, source="xinsir/controlnet-openpose-sdxl-1.0 (diffusers folder)", architecture="sdxl",
        description="openpose / face-keypoint ControlNet (SDXL)", required=("config.json",),
        download=_controlnet("xinsir/controlnet-openpose-sdxl-1.0", size="2.5 GB"),
    ),
    ModelSpec(
        "controlnet-tile-sdxl", "controlnet", "controlnet/sdxl-tile", licence="Apache-2.0 (xinsir)",
        commercial_use=True, source="xinsir/controlnet-tile-sdxl-1.0 (diffusers folder)", architecture="sdxl",
        description="tile ControlNet for the edge pass (SDXL)", required=("config.json",),
        download=_controlnet("xinsir/controlnet-tile-sdxl-1.0", size="2.5 GB"),
    ),
    ModelSpec(
        "ip-adapter-faceid", "ip_adapter", "ip-adapter/ip-adapter-faceid_sd15.safetensors",
        licence="non-commercial research use (h94/IP-Adapter-FaceID; uses insightface embeddings)", commercial_use=False,
        source="h94/IP-Adapter-FaceID ip-adapter-faceid_sd15.bin (`portrait models convert` it to .safetensors)",
        architecture="sd15", description="IP-Adapter FaceID for the train-free identity path",
        alternative=_NO_FACEID,
        download=Download(_FACEID_REPO, "main", (_f("ip-adapter-faceid_sd15.bin", convert=True),), size="96.7 MB",
                          steps=_CONVERT),
    ),
    ModelSpec(
        "ip-adapter-faceid-plusv2", "ip_adapter", "ip-adapter/ip-adapter-faceid-plusv2_sd15.safetensors",
        licence="non-commercial research use (h94/IP-Adapter-FaceID; uses insightface embeddings)", commercial_use=False,
        source="h94/IP-Adapter-FaceID ip-adapter-faceid-plusv2_sd15.bin", architecture="sd15",
        description="IP-Adapter FaceID-PlusV2 (face embedding + CLIP ViT-H image of the face)", alternative=_NO_FACEID,
        download=Download(_FACEID_REPO, "main", (_f("ip-adapter-faceid-plusv2_sd15.bin", convert=True),),
                          size="156.6 MB", steps=_CONVERT),
    ),
    ModelSpec(
        "ip-adapter-faceid-lora", "lora", "ip-adapter/ip-adapter-faceid_sd15_lora.safetensors",
        licence="non-commercial research use (h94/IP-Adapter-FaceID)", commercial_use=False,
        source="h94/IP-Adapter-FaceID ip-adapter-faceid_sd15_lora.safetensors", architecture="sd15",
        description="the LoRA released beside FaceID (the .bin also carries it in its ip_adapter section)",
        alternative=_NO_FACEID,
        download=Download(_FACEID_REPO, "main", (_f("ip-adapter-faceid_sd15_lora.safetensors"),), size="51.1 MB"),
    ),
    ModelSpec(
        "clip-vision-vit-h", "image_encoder", "ip-adapter/image_encoder", licence="MIT (OpenCLIP ViT-H-14, "
        "LAION-2B)", commercial_use=True, source="h94/IP-Adapter models/image_encoder (CLIP ViT-H-14)",
        description="CLIP image encoder for IP-Adapter Plus / FaceID-PlusV2", required=("config.json",),
        download=Download("h94/IP-Adapter", "018e402774aeeddd60609b4ecdb7e298259dc729",
                          (_f("models/image_encoder/config.json", "config.json"),
                           _f("models/image_encoder/model.safetensors", "model.safetensors")), size="2.53 GB"),
    ),
    ModelSpec(
        "instantid-adapter", "instantid", "instantid/ip-adapter.safetensors", licence="Apache-2.0 (InstantID); "
        "trained on insightface antelopev2 embeddings", commercial_use=None,
        source="InstantX/InstantID ip-adapter.bin (`portrait models convert` it to .safetensors)",
        architecture="sdxl", description="InstantID image-prompt adapter (SDXL)", alternative=_NO_FACEID,
        download=Download(_INSTANTID_REPO, "main", (_f("ip-adapter.bin", convert=True),), size="1.69 GB",
                          steps=_CONVERT),
    ),
    ModelSpec(
        "instantid-controlnet", "controlnet", "instantid/ControlNetModel", licence="Apache-2.0 (InstantID); "
        "trained on insightface antelopev2 embeddings", commercial_use=None,
        source="InstantX/InstantID ControlNetModel folder", architecture="sdxl",
        description="InstantID IdentityNet (face-keypoint ControlNet, SDXL)", required=("config.json",),
        alternative=_NO_FACEID,
        download=Download(_INSTANTID_REPO, "main", (
            _f("ControlNetModel/config.json", "config.json"),
            _f("ControlNetModel/diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors")),
            size="2.50 GB"),
    ),
)

# Old names still accepted everywhere a model name is (models.toml tables included), with why they changed.
ALIASES: dict[str, str] = {"arcface": "arcface-buffalo"}
ALIAS_NOTES: dict[str, str] = {
    "arcface": "the model name 'arcface' is deprecated: it is now 'arcface-buffalo' (buffalo_l w600k_r50.onnx, for "
               "FaceID and inswapper); InstantID uses 'arcface-antelopev2' (antelopev2 glintr100.onnx). Rename "
               "[models.arcface] in models.toml",
}


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
        self.notes: list[str] = []  # deprecations met while reading models.toml (shown by `models list`)
        cfg = config_file or os.environ.get("PORTRAIT_MODELS_CONFIG") or (self.models_dir / "models.toml")
        self.config_file = absolute(cfg)
        if self.config_file.is_file():
            self._apply_config(self.config_file)
        self._verified: dict[str, str] = {}
        self._warned: set[str] = set()

    def _apply_config(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot parse models config ({exc})") from exc
        for name, entry in (data.get("models") or {}).items():
            if name in ALIASES and name not in self.specs:
                log.warning("%s: %s", path, ALIAS_NOTES[name])
                self.notes.append(f"{path}: {ALIAS_NOTES[name]}")
                name = ALIASES[name]
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
    def canonical(self, name: str) -> str:
        """`name`, or the current name of a deprecated alias (logged once per manifest)."""
        if name in self.specs or name not in ALIASES:
            return name
        if name not in self._warned:
            self._warned.add(name)
            log.warning(ALIAS_NOTES[name])
        return ALIASES[name]

    def __contains__(self, name: str) -> bool:
        return self.canonical(name) in self.specs

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.specs[self.canonical(name)]
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
        dl = spec.download
        if dl is not None and dl.automatic:
            return (f"Download it with `portrait models fetch {spec.name}` ({spec.source}; {dl.size or 'size unknown'}"
                    f" from {dl.page()}), or place your own copy at that path or set [models.{spec.name}] path = "
                    f"\"...\" in {self.config_file}.")
        if dl is not None and (dl.url or dl.steps):
            url = f" Download {dl.url}" if dl.url else ""
            return (f"It cannot be fetched automatically.{url}{';' if url else ''} {dl.steps}. Or set "
                    f"[models.{spec.name}] path = \"...\" in {self.config_file}.")
        where = f" Get it from: {spec.source}." if spec.source else ""
        more = " Run `portrait models list` to see every model's state." if list_hint else ""
        return f"Place it at that path or set [models.{spec.name}] path = \"...\" in {self.config_file}.{where}{more}"

    def record_file(self, name: str) -> Path:
        """Where `portrait models fetch` records what it installed for model `name` (files and sha256)."""
        return self.models_dir / FETCH_RECORDS / f"{name}.json"

    def fetch_record(self, name: str) -> dict | None:
        try:
            return json.loads(self.record_file(name).read_text())
        except (OSError, ValueError):
            return None

    def file_hashes(self, spec: ModelSpec, path: Path, deep: bool = True) -> dict[Path, str]:
        """Files under the model's path with a known sha256: the manifest's (or models.toml's) for a single
        file; else what `portrait models fetch` recorded when it installed the model at this path (each file
        checked against the manifest's pin or the Hub's LFS hash). A model you placed yourself (any SD 1.5
        folder, say) has no recorded hashes and is `unchecked`, never refused for being another release."""
        if spec.sha256:
            return {path: spec.sha256} if not path.is_dir() else {}
        record = self.fetch_record(spec.name) if deep else None
        if not record or record.get("path") != str(path):
            return {}
        return {(path / rel if rel else path): sha for rel, sha in (record.get("files") or {}).items()}

    def _hash_ok(self, file: Path, expected: str) -> str | None:
        """None if `file` has sha256 `expected`, else the actual hash (cached per path, size and mtime)."""
        st = file.stat()
        key = f"{file}:{st.st_size}:{st.st_mtime_ns}"
        actual = self._verified.get(key) or sha256_file(file)
        self._verified[key] = actual
        return None if actual.lower() == expected.lower() else actual

    def status(self, name: str, check_hash: bool = True, deep: bool = True) -> ModelStatus:
        """present / unchecked / missing / bad_hash. `check_hash` reads files: the manifest's sha256 and,
        with `deep`, every file `portrait models fetch` recorded (what `models verify` does)."""
        spec = self.spec(name)
        try:
            path = self.path(name)
        except ModelMissingError as exc:
            return ModelStatus(spec, Path(spec.path), "missing", str(exc))
        if not path.exists():
            return ModelStatus(spec, path, "missing", self.how_to_get(spec, path))
        # A folder in another layout (say .bin weights) is the user's choice: only files present are hashed.
        hashes = {f: h for f, h in self.file_hashes(spec, path, deep).items() if f.is_file()}
        if path.is_dir():
            lacking = [r for r in spec.required if not (path / r).exists()]
            if lacking:
                return ModelStatus(spec, path, "missing", f"folder lacks {', '.join(lacking)}")
        if hashes and check_hash:
            for file, expected in hashes.items():
                actual = self._hash_ok(file, expected)
                if actual is not None:
                    return ModelStatus(spec, path, "bad_hash", f"sha256 {actual} != expected {expected}"
                                       + (f" ({file.relative_to(path)})" if file != path else ""))
            return ModelStatus(spec, path, "present")
        if path.is_dir():  # folders without a fetch record: their required members are the check
            return ModelStatus(spec, path, "present")
        return ModelStatus(spec, path, "present" if hashes or spec.bundled else "unchecked")

    def require(self, name: str, check_hash: bool = True) -> Path:
        """The model's path, or a LicenceError (the licence policy excludes it) / ModelMissingError /
        ModelHashError saying exactly what to do."""
        from .licence import check_licence

        check_licence(self.spec(name))
        st = self.status(name, check_hash=check_hash, deep=False)  # loading never re-reads gigabytes
        if st.state == "missing":
            raise ModelMissingError(name, st.path, st.message if st.message.startswith("folder") else
                                    self.how_to_get(st.spec, st.path))
        if st.state == "bad_hash":
            words = st.message.split()  # "sha256 ACTUAL != expected EXPECTED [(file)]"
            raise ModelHashError(name, st.path, words[4], words[1])
        return st.path

    def available(self, name: str) -> bool:
        """Present, and allowed by the licence policy (so automatic engine choices skip excluded models;
        asking for one by name still gets the LicenceError from `require`)."""
        from .licence import allowed

        return allowed(self.spec(name)) and self.status(name, check_hash=False).state != "missing"

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
