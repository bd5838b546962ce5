"""Per-user identity LoRA training on a preprocess output (diffusers + peft), EasyPhoto's recipe.

    result = train_lora(LoraTraining(trainset="out/user1", base_model="sd15", out_dir="ids/user1"))
    result.lora_path          # identity.safetensors: pipe.load_lora_weights(...) reads it
    result.kohya_path         # identity_kohya.safetensors: A1111 / ComfyUI read it
    result.report             # what training.json holds

The UNet's transformer blocks get a LoRA (EasyPhoto's defaults: every Linear / 1x1 conv of them, rank
128, alpha 64, lr 1e-4, 4 gradients accumulated per step, 200 steps per photo up to 800, 512 px for SD 1.5
/ 1024 for SDXL), and on SD 1.5 so does the text encoder (its CLIPAttention and CLIPMLP linears, at half
the UNet's learning rate, as EasyPhoto trains it). VAE latents (of each crop and its mirror image) are
computed once; so are the caption embeddings where the text encoder stays frozen (SDXL, or
train_text_encoder=False). Every
`validate_every` steps the LoRA is saved as a checkpoint and rendered by a validator that scores the
face's likeness to the user's photos; the best checkpoint (or the merge of the best k) becomes the
identity. Scales are baked into the saved factors (alpha == rank), so every loader reads the same delta.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError, PortraitError
from ..models.device import dtype_name
from ..progress import ProgressCallback, check_cancel, report
from ..paths import train_folder
from . import lora_select
from .reference import trainset_reference, write_reference

ADAPTER = "portrait_train"
# EasyPhoto's target set (lora_utils: every Linear and 1x1 conv of the UNet's Transformer2DModel blocks):
# the attention projections, the blocks' proj_in / proj_out and their feed-forward layers.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
ATTENTION_ONLY = ("to_q", "to_k", "to_v", "to_out.0")  # the earlier, smaller set (target_modules= to choose it)
# EasyPhoto's text-encoder targets (CLIPAttention and CLIPMLP): the attention projections and the MLP.
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
DEFAULT_RESOLUTION = {"sd15": 512, "sdxl": 1024}
LORA_FILE = "identity.safetensors"
KOHYA_FILE = "identity_kohya.safetensors"
REPORT_FILE = "training.json"


@dataclass
class LoraTraining:
    """One training run's settings, paths included (the job layer's TrainConfig, which a request may hold,
    is turned into this by portrait.jobs.train)."""

    trainset: str | Path  # preprocess output: train/*.png + train/metadata.jsonl (+ report.json)
    base_model: str | Path = "sd15"  # manifest name, diffusers folder or single file
    out_dir: str | Path = "identity"
    steps: int | None = None  # None: steps_per_photo x photos, capped at max_steps
    steps_per_photo: int = 200
    max_steps: int = 800
    rank: int = 128
    alpha: float = 64.0
    lr: float = 1e-4
    resolution: int | None = None  # None: 512 (SD 1.5) / 1024 (SDXL)
    batch_size: int = 1
    gradient_accumulation: int = 4  # EasyPhoto's: each optimiser step sees 4 x batch_size samples
    target_modules: tuple[str, ...] = TARGET_MODULES
    train_text_encoder: bool | None = None  # None: on for SD 1.5 (EasyPhoto's), off for SDXL
    text_encoder_lr: float | None = None  # None: half of lr (EasyPhoto's)
    seed: int = 0
    validate_every: int = 100
    merge_top_k: int = 1  # >1: average the best k checkpoints' deltas
    flip: bool = True
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool | None = None  # None: checkpointing_default (SDXL, or a GPU short of memory)
    mixed_precision: bool | None = None  # None: autocast in the base's half dtype on a GPU
    device: str | None = None
    dtype: str | None = None
    validation_prompt: str | None = None  # None: the first caption (it holds the trigger word)
    validation_resolution: int | None = None  # text2img validation renders: None = the training resolution
    validation_steps: int = 20  # EasyPhoto's validation renders use 20 steps
    templates: tuple[str, ...] = ()  # template names/folders for validation on template faces
    validation_size: int | None = None  # template validation: inpaint working size (default: 512 / 1024)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass
class LoraTrainingResult:
    """What train_lora wrote (portrait.jobs.TrainResult is the job layer's view of it)."""

    lora_path: Path
    kohya_path: Path
    report_path: Path
    report: dict = field(default_factory=dict)


# -- the training set ------------------------------------------------------------------------------
def read_trainset(trainset: str | Path) -> tuple[list[Path], list[str], dict]:
    """(image paths, captions, report.json or {}) of a preprocess output folder."""
    root = Path(trainset)
    train = train_folder(root)
    meta = train / "metadata.jsonl"
    if not meta.is_file():
        raise ConfigError(f"{root}: no train/metadata.jsonl; run `portrait preprocess PHOTOS --out {root}` first")
    files, captions = [], []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            path, text = train / row["file_name"], str(row["text"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{meta}:{n}: needs {{\"file_name\", \"text\"}} ({exc})") from None
        if not path.is_file():
            raise ConfigError(f"{meta}:{n}: {path.name} does not exist in {train}")
        files.append(path)
        captions.append(text)
    if not files:
        raise ConfigError(f"{meta} lists no images")
    rep = root / "report.json"
    return files, captions, (json.loads(rep.read_text()) if rep.is_file() else {})


def default_steps(n_photos: int, cfg: LoraTraining) -> int:
    return cfg.steps if cfg.steps else max(1, min(cfg.steps_per_photo * n_photos, cfg.max_steps))


def _load_square(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    from ..imageio import load_rgb

    img = load_rgb(path)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    if s != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
    return img


# -- caching ------------------------------------------------------------------------------------------
def vae_needs_upcast(vae, xl: bool) -> bool:
    """True where the VAE must encode in fp32: SDXL's VAE overflows in fp16 (its config says force_upcast,
    which diffusers' SDXL pipelines honour; the fp16-fix VAE says false). SD 1.5's VAE is fine in fp16."""
    import torch

    return xl and vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", True))


def _encode_latents(pipe, images: list[np.ndarray], flip: bool, device, dtype, xl: bool = False):
    """Latent mean and std of every image (and its mirror), on the VAE's device: [N(x2), 4, h, w] each, in
    `dtype` (encoded in fp32 where vae_needs_upcast)."""
    import torch

    vae = pipe.vae
    upcast = vae_needs_upcast(vae, xl)
    enc_dtype = torch.float32 if upcast else dtype
    if upcast:
        vae.to(torch.float32)
    means, stds = [], []
    variants = [False, True] if flip else [False]
    try:
        with torch.no_grad():
            for img in images:
                for mirrored in variants:
                    a = img[:, ::-1] if mirrored else img
                    x = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].to(device, enc_dtype) / 127.5 - 1
                    dist = vae.encode(x).latent_dist
                    means.append(dist.mean)
                    stds.append(dist.std)
    finally:
        if upcast:
            vae.to(torch.float16)
    sf = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((torch.cat(means) - shift) * sf).to(dtype), (torch.cat(stds) * sf).to(dtype)


def _encode_text(pipe, captions: list[str], device, xl: bool, resolution: int):
    """Per caption: encoder hidden states (and, for SDXL, pooled embeddings + time ids)."""
    import torch

    with torch.no_grad():
        if not xl:
            embeds, _ = pipe.encode_prompt(captions, device, 1, False)
            return {"encoder_hidden_states": embeds}
        embeds, _, pooled, _ = pipe.encode_prompt(captions, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], device=device,
                                dtype=embeds.dtype).repeat(len(captions), 1)
        return {"encoder_hidden_states": embeds, "text_embeds": pooled, "time_ids": time_ids}


# -- LoRA state ---------------------------------------------------------------------------------------
PARTS = ("unet", "text_encoder")  # a LoRA state's key prefixes, as diffusers' files hold them


def _lora_state(base, scale: float, with_te: bool) -> dict:
    """The trained adapters in PEFT's layout (`.lora_A` / `.lora_B`, which load_lora_weights reads for every
    layer; diffusers' older `.lora.down` layout maps only the attention processors back, so the transformer
    blocks' proj_in / proj_out / feed-forward factors would be dropped on load), scale baked into the up
    factors (alpha == rank); keys prefixed `unet.` and (where it trains) `text_encoder.`."""
    from peft.utils import get_peft_model_state_dict

    out = {}
    for part in PARTS[:2 if with_te else 1]:
        sd = get_peft_model_state_dict(getattr(base, part), adapter_name=ADAPTER)
        out.update({f"{part}.{k}": (v * scale if ".lora_B." in k else v).detach().float().cpu().contiguous()
                    for k, v in sd.items()})
    return out


def _split(state: dict) -> dict[str, dict]:
    """{"unet": ..., "text_encoder": ...} of a prefixed LoRA state (a key without a prefix is the UNet's)."""
    parts: dict[str, dict] = {p: {} for p in PARTS}
    for k, v in state.items():
        part = next((p for p in PARTS if k.startswith(p + ".")), None)
        parts[part or "unet"][k[len(part) + 1:] if part else k] = v
    return parts


def save_lora(pipe, state: dict, path: Path) -> Path:
    """identity LoRA in diffusers' format (pipe.load_lora_weights reads it; the text encoder's part too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = _split(state)
    type(pipe).save_lora_weights(save_directory=str(path.parent), unet_lora_layers=parts["unet"],
                                 text_encoder_lora_layers=parts["text_encoder"] or None,
                                 weight_name=path.name, safe_serialization=True)
    return path


def _kohya_te_key(key: str) -> str:
    """A text-encoder key as kohya and A1111 name it for SD 1.5: diffusers' converter writes lora_te1_ (lora_te1_ /
    lora_te2_ are SDXL's two; SD 1.5's one is lora_te_), over CLIP's module path from text_model (transformers 5's
    CLIPTextModel has no text_model level)."""
    if not key.startswith("lora_te1_"):
        return key
    rest = key[len("lora_te1_"):]
    return "lora_te_" + (rest if rest.startswith("text_model_") else "text_model_" + rest)


def save_kohya(state: dict, path: Path) -> Path:
    """The same LoRA in kohya's layout (lora_unet_* and lora_te1_* .lora_down/up + alpha), read by A1111 and
    ComfyUI."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    peft = {f"{part}.{k.replace('.lora.down.', '.lora_A.').replace('.lora.up.', '.lora_B.')}": v
            for part, sd in _split(state).items() for k, v in sd.items()}
    kohya = convert_state_dict_to_kohya(peft)
    kohya = {_kohya_te_key(k): v for k, v in kohya.items()}
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path), metadata={"format": "pt"})
    return path


# -- validation ---------------------------------------------------------------------------------------
# (base, user crops, centroid, face analysis) -> validator: how the job layer hands in template validation
# (portrait.templates.painting.template_validator), which this layer cannot import.
ValidatorFactory = Callable[[object, list, object, object], lora_select.Validator]


def trainset_face_config(trainset: str | Path):
    """The face engines the training set was judged with (its report.json's `engines`), so validation scores
    likeness with the recogniser the run uses; the defaults when the report names none."""
    from ..faces import FaceConfig

    try:
        engines = json.loads((Path(trainset) / "report.json").read_text(encoding="utf-8")).get("engines") or {}
    except (OSError, ValueError, AttributeError):
        engines = {}
    chosen = {k: engines[k] for k in ("detector", "landmarks", "embedder") if isinstance(engines.get(k), str)}
    try:
        return FaceConfig(**chosen)
    except PortraitError:  # engines this version does not know: the defaults
        return FaceConfig()


def default_validator(cfg: LoraTraining, files: list[Path], captions: list[str], base,
                      template_validator: ValidatorFactory | None = None,
                      resolution: int | None = None) -> Callable | None:
    """Template renders when templates are named (built by `template_validator`, which the job layer
    passes), else text2img renders of the trigger prompt at the training `resolution` (512 SD 1.5, 1024
    SDXL: what the base draws faces at; smaller renders are too small to tell checkpoints apart); both
    scored by likeness to the centroid of the user's crops."""
    from ..faces import get_face_analysis

    fa = get_face_analysis(trainset_face_config(cfg.trainset))
    crops = [_load_square(f, max(256, min(512, cfg.resolution or 512))) for f in files]
    centroid = lora_select.user_centroid(crops, fa)
    if cfg.templates:
        if template_validator is None:
            raise ConfigError("validation on templates needs the generation stage: train through "
                              "portrait.jobs.train (or pass template_validator=)")
        return template_validator(base, crops, centroid, fa)
    prompt = cfg.validation_prompt or captions[0]
    size = cfg.validation_resolution or resolution or cfg.resolution or 512
    return lora_select.text2img_validator(centroid, prompt, fa, resolution=size,
                                          steps=cfg.validation_steps)


# -- a fixed probe: denoising loss on the same latents, noise and timesteps at every checkpoint ---------
def _probe_batch(cached: _Cached, noise_scheduler, gen, xl: bool, size: int = 8) -> dict:
    """Up to `size` cached latents with fixed noise and evenly spread timesteps (not the training draws)."""
    import torch

    n = min(size, cached.lat_mean.shape[0])
    idx = torch.arange(n)
    latents = cached.lat_mean[idx]
    noise = torch.randn(latents.shape, generator=gen).to(latents.device, latents.dtype)
    total = noise_scheduler.config.num_train_timesteps
    t = torch.linspace(total * 0.1, total * 0.9, n).long().to(latents.device)
    return {"latents": latents, "noise": noise, "t": t, "caption_idx": idx // cached.variants, "xl": xl}


def _probe_loss(base, cached: _Cached, probe: dict, target_kind: str, noise_scheduler, autocast: bool,
                weight_dtype) -> float:
    import torch

    unet = base.unet
    latents, noise, t = probe["latents"], probe["noise"], probe["t"]
    noisy = noise_scheduler.add_noise(latents, noise, t)
    target = noise_scheduler.get_velocity(latents, noise, t) if target_kind == "v_prediction" else noise
    unet.eval()
    if cached.input_ids is not None:
        base.text_encoder.eval()
    with torch.no_grad(), torch.autocast(latents.device.type, dtype=weight_dtype, enabled=bool(autocast)):
        cond = _conditioning(base, cached, probe["caption_idx"])
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]} if probe["xl"] else None
        pred = unet(noisy, t, encoder_hidden_states=cond["encoder_hidden_states"], added_cond_kwargs=added).sample
    return float(torch.nn.functional.mse_loss(pred.float(), target.float()))


# -- training -----------------------------------------------------------------------------------------
CHECKPOINT_BELOW_GIB = 24  # an SD 1.5 LoRA at 512 px, rank 128, trains in well under this without checkpointing


def checkpointing_default(arch: str, on_gpu: bool, free_bytes: int | None) -> bool:
    """Gradient checkpointing when none is asked for: never on a CPU (memory is not the limit there); on a
    GPU for SDXL, as EasyPhoto trains it, and for SD 1.5 only when the card has under CHECKPOINT_BELOW_GIB
    free (on an 80 GB card it costs a third of the speed for nothing)."""
    if not on_gpu:
        return False
    if arch == "sdxl":
        return True
    return free_bytes is None or free_bytes < CHECKPOINT_BELOW_GIB * 2**30


def _free_gpu_bytes(device) -> int | None:
    import torch

    if getattr(device, "type", None) == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None  # mps and others say nothing: checkpoint to be safe


@dataclass(frozen=True)
class _Setup:
    """How this training runs, decided before the first step (device, precision, size, step counts)."""

    arch: str
    xl: bool
    resolution: int
    steps: int
    every: int  # a checkpoint (and a validation) every this many steps
    device: object  # torch.device
    weight_dtype: object  # torch.dtype
    autocast: bool
    checkpointing: bool
    train_te: bool  # the text encoder gets a LoRA too
    te_lr: float


@dataclass(frozen=True)
class _Cached:
    """What the frozen VAE and text encoder give, computed once: each crop's latent mean and std (and its
    mirror's), and the captions' embeddings."""

    lat_mean: object
    lat_std: object
    text: dict
    variants: int  # 2 with flipped copies, else 1
    n_files: int
    input_ids: object = None  # the captions' tokens, where the text encoder trains (its output changes each step)


@dataclass
class _Trained:
    """What the loop leaves: every step's loss, the checkpoints, their scores and probe losses."""

    losses: list
    ckpts: dict
    scores: dict
    eval_loss: dict
    validate_s: float
    train_s: float
    grad_scaler: bool
    lrs: tuple = ()  # the optimiser's learning rate per part (UNet, then the text encoder where it trains)


def _setup(cfg: LoraTraining, base, n_files: int) -> _Setup:
    import torch

    xl = "text_encoder_2" in base.components
    arch = "sdxl" if xl else "sd15"
    resolution = cfg.resolution or DEFAULT_RESOLUTION[arch]
    if resolution % 8:
        raise ConfigError(f"resolution must be a multiple of 8, got {resolution}")
    steps = default_steps(n_files, cfg)
    device, weight_dtype = base.unet.device, base.unet.dtype
    on_gpu = device.type != "cpu"
    autocast = (cfg.mixed_precision if cfg.mixed_precision is not None else on_gpu) and weight_dtype != torch.float32
    checkpointing = (cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None
                     else checkpointing_default(arch, on_gpu, _free_gpu_bytes(device) if on_gpu else None))
    train_te = (not xl) if cfg.train_text_encoder is None else bool(cfg.train_text_encoder)
    if train_te and xl:
        raise ConfigError("a text-encoder LoRA is trained for SD 1.5 only: SDXL's two text encoders stay frozen, "
                          "as in EasyPhoto's SDXL recipe (leave out --train-text-encoder)")
    te_lr = cfg.text_encoder_lr if cfg.text_encoder_lr is not None else cfg.lr / 2
    return _Setup(arch, xl, resolution, steps, max(1, min(cfg.validate_every, steps)), device, weight_dtype,
                  bool(autocast), bool(checkpointing), train_te, float(te_lr))


def _cache(base, files: list[Path], captions: list[str], cfg: LoraTraining, run: _Setup,
           progress: ProgressCallback | None) -> _Cached:
    """Encode once: the VAE and text encoder are frozen, so their outputs never change."""
    report(progress, "cache", 0, len(files))
    images = [_load_square(f, run.resolution) for f in files]
    lat_mean, lat_std = _encode_latents(base, images, cfg.flip, run.device, run.weight_dtype, run.xl)
    # Where the text encoder trains its output changes every step: its tokens are cached, not its output.
    text = {} if run.train_te else _encode_text(base, captions, run.device, run.xl, run.resolution)
    ids = None
    if run.train_te:
        tok = base.tokenizer
        ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(run.device)
    report(progress, "cache", len(files), len(files))
    return _Cached(lat_mean, lat_std, text, 2 if cfg.flip else 1, len(files), ids)


def _conditioning(base, cached: _Cached, caption_idx) -> dict:
    """The UNet's text conditioning for these captions: the cached embeddings, or, where the text encoder
    trains, its output now (as SD 1.5's encode_prompt computes it: the last hidden state)."""
    if cached.input_ids is None:
        return {k: v[caption_idx.to(v.device)] for k, v in cached.text.items()}
    ids = cached.input_ids[caption_idx.to(cached.input_ids.device)]
    return {"encoder_hidden_states": base.text_encoder(ids)[0]}


def _micro_step(base, cached: _Cached, noise_scheduler, gen, cfg: LoraTraining, run: _Setup, target_kind: str,
                scaler, accumulate: int) -> float:
    """One micro-batch: draw samples, denoise, backpropagate loss / accumulate; its loss share."""
    import torch

    device = run.device
    idx = torch.randint(0, cached.n_files * cached.variants, (cfg.batch_size,), generator=gen)
    caption_idx = idx // cached.variants
    mean, std = cached.lat_mean[idx], cached.lat_std[idx]
    latents = mean + std * torch.randn(mean.shape, generator=gen).to(device, mean.dtype)
    noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    target = noise_scheduler.get_velocity(latents, noise, t) if target_kind == "v_prediction" else noise
    with torch.autocast(device.type, dtype=run.weight_dtype, enabled=run.autocast):
        cond = _conditioning(base, cached, caption_idx)
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]} if run.xl else None
        pred = base.unet(noisy, t, encoder_hidden_states=cond["encoder_hidden_states"], added_cond_kwargs=added).sample
    loss = torch.nn.functional.mse_loss(pred.float(), target.float()) / accumulate
    scaler.scale(loss).backward()
    return float(loss.detach())


def _loop(base, cfg: LoraTraining, run: _Setup, cached: _Cached, validator, ckpt_dir: Path,
          progress: ProgressCallback | None, on_step, cancel) -> _Trained:
    """The LoRA added to the bare base's UNet, trained for run.steps optimiser steps (each of
    cfg.gradient_accumulation micro-batches), saved and validated every run.every steps; the cached base
    gets its original UNet back whatever happens."""
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    from ..models.loading import set_identity_lora

    unet, te = base.unet, (base.text_encoder if run.train_te else None)
    set_identity_lora(base, None)  # train on the bare base: no identity/style LoRA from an earlier job
    torch.manual_seed(cfg.seed)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian",
                                target_modules=list(cfg.target_modules)), adapter_name=ADAPTER)
    t0 = time.perf_counter()
    try:
        if te is not None:
            te.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian",
                                      target_modules=list(TEXT_ENCODER_TARGETS)), adapter_name=ADAPTER)
        unet.set_adapters([ADAPTER])
        groups = [(unet, cfg.lr)] + ([(te, run.te_lr)] if te is not None else [])
        param_groups = [{"params": [p for n, p in model.named_parameters() if ADAPTER in n and "lora_" in n],
                         "lr": lr} for model, lr in groups]
        params = [p for g in param_groups for p in g["params"]]
        for p in params:
            p.data = p.data.float()  # trainable factors in fp32 even when the base is fp16
            p.requires_grad_(True)
        if run.checkpointing:
            unet.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=1e-2)
        # fp16 autocast: gradients below fp16's range vanish without loss scaling (bf16 has fp32's range).
        scaler = torch.amp.GradScaler(run.device.type, enabled=run.autocast and run.weight_dtype == torch.float16)
        noise_scheduler = DDPMScheduler.from_config(base.scheduler.config)
        target_kind = noise_scheduler.config.prediction_type
        gen = torch.Generator("cpu").manual_seed(cfg.seed)
        probe = _probe_batch(cached, noise_scheduler, gen, run.xl)

        def probe_loss() -> float:
            return _probe_loss(base, cached, probe, target_kind, noise_scheduler, run.autocast, run.weight_dtype)

        def training_mode() -> None:  # after a probe or a validation render: train again, on the adapter
            for model, _ in groups:
                model.train()
            unet.set_adapters([ADAPTER])
            if te is not None:
                te.set_adapter(ADAPTER)

        done = _Trained([], {}, {}, {0: probe_loss()}, 0.0, 0.0, bool(scaler.is_enabled()),
                        tuple(float(g["lr"]) for g in optimizer.param_groups))
        scale = cfg.alpha / cfg.rank
        training_mode()
        accumulate = max(1, int(cfg.gradient_accumulation))
        for step in range(1, run.steps + 1):
            check_cancel(cancel, "training cancelled")
            optimizer.zero_grad(set_to_none=True)
            value = 0.0
            for _ in range(accumulate):  # the samples of one optimiser step, their gradients summed
                value += _micro_step(base, cached, noise_scheduler, gen, cfg, run, target_kind, scaler, accumulate)
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)  # skipped (and the scale lowered) when a gradient overflowed
            scaler.update()
            if not math.isfinite(value):
                raise PortraitError(f"training diverged at step {step} (loss {value}); lower --lr")
            done.losses.append(value)
            if on_step:
                on_step(step, value)
            report(progress, "train", step, run.steps)
            if step % run.every == 0 or step == run.steps:
                done.ckpts[step] = save_lora(base, _lora_state(base, scale, te is not None),
                                             ckpt_dir / f"step-{step:06d}.safetensors")
                done.eval_loss[step] = probe_loss()
                if validator is not None:
                    tv = time.perf_counter()
                    for model, _ in groups:
                        model.eval()
                    with torch.no_grad(), torch.autocast(run.device.type, dtype=run.weight_dtype, enabled=run.autocast):
                        done.scores[step] = float(validator(base, step, done.ckpts[step]))
                    done.validate_s += time.perf_counter() - tv
                    report(progress, "validate", len(done.scores), math.ceil(run.steps / run.every))
                training_mode()
        done.train_s = time.perf_counter() - t0 - done.validate_s
        return done
    finally:
        if run.checkpointing:
            unet.disable_gradient_checkpointing()
        unet.eval()
        unet.delete_adapters(ADAPTER)  # the cached base goes back to its original state
        if te is not None:
            te.eval()
            if ADAPTER in (getattr(te, "peft_config", None) or {}):
                te.delete_adapter(ADAPTER)


def _choose(base, cfg: LoraTraining, done: _Trained, out: Path) -> tuple[list[int], Path, Path, Path | None]:
    """The best-scored checkpoint (ties to the later step), or the merge of the best cfg.merge_top_k; without
    validation, the last. Written as the identity (diffusers' and kohya's layouts) with the user's reference
    photo beside it: (chosen steps, LoRA, kohya file, reference)."""
    from safetensors.torch import load_file

    chosen = lora_select.choose_checkpoints(done.scores, cfg.merge_top_k) if done.scores else [max(done.ckpts)]
    states = [load_file(str(done.ckpts[s])) for s in chosen]
    final = lora_select.merge_loras(states, rank=cfg.rank) if len(states) > 1 else states[0]
    lora_path = save_lora(base, final, out / LORA_FILE)
    kohya_path = save_kohya(final, out / KOHYA_FILE)
    # The user's reference photo beside the LoRA: `portrait generate --identity OUT/identity.safetensors` fuses it.
    reference = write_reference(trainset_reference(cfg.trainset), out)
    return chosen, lora_path, kohya_path, reference


def _report(cfg: LoraTraining, base, run: _Setup, done: _Trained, captions: list[str], trainset_report: dict,
            chosen: list[int], reference: Path | None, scored_by: str | None, out: Path, cache_s: float,
            total_s: float) -> dict:
    """training.json's content."""
    from ..models.loading import vae_name

    return {
        "config": {**cfg.to_dict(), "steps": run.steps, "resolution": run.resolution, "validate_every": run.every},
        "architecture": run.arch,
        "base_model": str(cfg.base_model),
        "photos": len(captions),
        "captions": sorted(set(captions)),
        "device": str(run.device),
        "dtype": dtype_name(run.weight_dtype),
        "mixed_precision": run.autocast,
        "grad_scaler": done.grad_scaler,
        "vae_upcast": bool(vae_needs_upcast(base.vae, run.xl)),
        "vae": vae_name(base),  # "sdxl-vae-fp16-fix" where an fp16 SDXL base took it
        "gradient_checkpointing": run.checkpointing,
        "text_encoder": ({"trained": True, "lr": done.lrs[1], "targets": list(TEXT_ENCODER_TARGETS)} if run.train_te
                         else {"trained": False}),
        "checkpoints": [{"step": s, "file": str(p.relative_to(out)),
                         "score": (None if s not in done.scores or not math.isfinite(done.scores[s]) else done.scores[s]),
                         "face_found": s in done.scores and math.isfinite(done.scores[s]), "eval_loss": done.eval_loss[s]}
                        for s, p in sorted(done.ckpts.items())],
        "eval_loss_start": done.eval_loss[0],
        "score": scored_by,
        "chosen": chosen,
        "merged": len(chosen) > 1,
        "outputs": {"lora": LORA_FILE, "kohya": KOHYA_FILE},
        "loss": done.losses,
        "timings": {"cache_s": round(cache_s, 3), "train_s": round(done.train_s, 3),
                    "validate_s": round(done.validate_s, 3), "total_s": round(total_s, 3),
                    "steps_per_s": round(run.steps / max(done.train_s, 1e-9), 3)},
        "trainset_reference": trainset_report.get("reference"),
        "reference": reference.name if reference else None,
    }


def train_lora(cfg: LoraTraining, *, validate: lora_select.Validator | None | str = "default",
               progress: ProgressCallback | None = None, on_step: Callable[[int, float], None] | None = None,
               manifest=None, template_validator: ValidatorFactory | None = None, cancel=None) -> LoraTrainingResult:
    """Train, validate, choose (and merge) checkpoints, and write the identity files to cfg.out_dir.

    `validate`: "default" (text2img or template renders scored by face likeness), a callable
    `(pipe, step, checkpoint_path) -> score` (higher is better), or None (no validation: the last
    checkpoint wins).
    `on_step(step, loss)` sees every step's loss (the CLI shows it in the bar).
    `template_validator` builds the validator when cfg.templates names templates (the job layer's).
    `cancel` (anything with is_set()) is checked before every step: Cancelled, and the cached base gets
    its original UNet back; identity.safetensors and training.json are not written.

    Four stages: cache (latents and caption embeddings, once), loop (train and checkpoint), choose (the
    best checkpoint or a merge, written as the identity) and report (training.json).
    """
    from ..models.loading import load_base

    t_start = time.perf_counter()
    files, captions, trainset_report = read_trainset(cfg.trainset)
    base = load_base(str(cfg.base_model), manifest=manifest, device=cfg.device, dtype=cfg.dtype)
    run = _setup(cfg, base, len(files))
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cached = _cache(base, files, captions, cfg, run, progress)
    cache_s = time.perf_counter() - t_start
    validator = (default_validator(cfg, files, captions, base, template_validator, run.resolution)
                 if validate == "default" else validate)
    done = _loop(base, cfg, run, cached, validator, ckpt_dir, progress, on_step, cancel)
    chosen, lora_path, kohya_path, reference = _choose(base, cfg, done, out)
    scored_by = ("minus the face-embedding distance of validation renders to the user's centroid (higher is better)"
                 if validate == "default" else "custom validator (higher is better)" if validator else None)
    rep = _report(cfg, base, run, done, captions, trainset_report, chosen, reference, scored_by, out, cache_s,
                  time.perf_counter() - t_start)
    report_path = out / REPORT_FILE
    report_path.write_text(json.dumps(rep, indent=2) + "\n")
    return LoraTrainingResult(lora_path, kohya_path, report_path, rep)


def loss_trend(losses: Sequence[float], window: int | None = None) -> tuple[float, float]:
    """Mean loss of the first and last windows (a quick 'did it fall' check)."""
    w = window or max(1, len(losses) // 4)
    return float(np.mean(losses[:w])), float(np.mean(losses[-w:]))
