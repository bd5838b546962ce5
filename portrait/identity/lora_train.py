"""Per-user identity LoRA training on a preprocess output (diffusers + peft), EasyPhoto's recipe.

    result = train_lora(LoraTraining(trainset="out/user1", base_model="sd15", out_dir="ids/user1"))
    result.lora_path          # identity.safetensors: pipe.load_lora_weights(...) reads it
    result.kohya_path         # identity_kohya.safetensors: A1111 / ComfyUI read it
    result.report             # what training.json holds

The UNet's transformer blocks get a LoRA (EasyPhoto's defaults: every Linear / 1x1 conv of them, rank
128, alpha 64, lr 1e-4, 4 gradients accumulated per step, 200 steps per photo up to 800, 512 px for SD 1.5
/ 1024 for SDXL). VAE latents (of each crop and its
mirror image) and caption embeddings are computed once; the text encoder and VAE stay frozen. Every
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
def _lora_state(unet, scale: float) -> dict:
    """The trained adapter in PEFT's layout (`.lora_A` / `.lora_B`, which load_lora_weights reads for every
    layer; diffusers' older `.lora.down` layout maps only the attention processors back, so the transformer
    blocks' proj_in / proj_out / feed-forward factors would be dropped on load), scale baked into the up
    factors (alpha == rank)."""
    from peft.utils import get_peft_model_state_dict

    sd = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    return {k: (v * scale if ".lora_B." in k else v).detach().float().cpu().contiguous() for k, v in sd.items()}


def save_lora(pipe, unet_state: dict, path: Path) -> Path:
    """identity LoRA in diffusers' format (pipe.load_lora_weights reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(save_directory=str(path.parent), unet_lora_layers=unet_state,
                                 weight_name=path.name, safe_serialization=True)
    return path


def save_kohya(unet_state: dict, path: Path) -> Path:
    """The same LoRA in kohya's layout (lora_unet_*.lora_down/up + alpha), read by A1111 and ComfyUI."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    peft = {"unet." + k.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B."): v
            for k, v in unet_state.items()}
    kohya = convert_state_dict_to_kohya(peft)
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path), metadata={"format": "pt"})
    return path


def _strip_unet_prefix(state: dict) -> dict:
    return {k[len("unet."):] if k.startswith("unet.") else k: v for k, v in state.items()}


# -- validation ---------------------------------------------------------------------------------------
# (base, user crops, centroid, face analysis) -> validator: how the job layer hands in template validation
# (portrait.generate.template_jobs.template_validator), which this layer cannot import.
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
def _probe_batch(lat_mean, text: dict, variants: int, noise_scheduler, gen, xl: bool, size: int = 8) -> dict:
    """Up to `size` cached latents with fixed noise and evenly spread timesteps (not the training draws)."""
    import torch

    n = min(size, lat_mean.shape[0])
    idx = torch.arange(n)
    latents = lat_mean[idx]
    noise = torch.randn(latents.shape, generator=gen).to(latents.device, latents.dtype)
    total = noise_scheduler.config.num_train_timesteps
    t = torch.linspace(total * 0.1, total * 0.9, n).long().to(latents.device)
    cond = {k: v[(idx // variants).to(v.device)] for k, v in text.items()}
    return {"latents": latents, "noise": noise, "t": t, "cond": cond, "xl": xl}


def _probe_loss(unet, probe: dict, target_kind: str, noise_scheduler, autocast: bool, weight_dtype) -> float:
    import torch

    latents, noise, t, cond = probe["latents"], probe["noise"], probe["t"], probe["cond"]
    noisy = noise_scheduler.add_noise(latents, noise, t)
    target = noise_scheduler.get_velocity(latents, noise, t) if target_kind == "v_prediction" else noise
    added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]} if probe["xl"] else None
    unet.eval()
    with torch.no_grad(), torch.autocast(latents.device.type, dtype=weight_dtype, enabled=bool(autocast)):
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


def _micro_step(unet, lat_mean, lat_std, text: dict, variants: int, noise_scheduler, gen, cfg, xl: bool, device,
                target_kind: str, autocast, weight_dtype, scaler, accumulate: int, n_files: int) -> float:
    """One micro-batch: draw samples, denoise, backpropagate loss / accumulate; its loss share."""
    import torch

    idx = torch.randint(0, n_files * variants, (cfg.batch_size,), generator=gen)
    caption_idx = idx // variants
    mean, std = lat_mean[idx], lat_std[idx]
    latents = mean + std * torch.randn(mean.shape, generator=gen).to(device, mean.dtype)
    noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    target = noise_scheduler.get_velocity(latents, noise, t) if target_kind == "v_prediction" else noise
    cond = {k: v[caption_idx.to(v.device)] for k, v in text.items()}
    added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]} if xl else None
    with torch.autocast(device.type, dtype=weight_dtype, enabled=bool(autocast)):
        pred = unet(noisy, t, encoder_hidden_states=cond["encoder_hidden_states"], added_cond_kwargs=added).sample
    loss = torch.nn.functional.mse_loss(pred.float(), target.float()) / accumulate
    scaler.scale(loss).backward()
    return float(loss.detach())


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
    """
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from safetensors.torch import load_file

    from ..models.loading import load_base, set_identity_lora

    t_start = time.perf_counter()
    files, captions, trainset_report = read_trainset(cfg.trainset)
    base = load_base(str(cfg.base_model), manifest=manifest, device=cfg.device, dtype=cfg.dtype)
    xl = "text_encoder_2" in base.components
    arch = "sdxl" if xl else "sd15"
    resolution = cfg.resolution or DEFAULT_RESOLUTION[arch]
    if resolution % 8:
        raise ConfigError(f"resolution must be a multiple of 8, got {resolution}")
    steps = default_steps(len(files), cfg)
    every = max(1, min(cfg.validate_every, steps))
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    unet = base.unet
    device, weight_dtype = unet.device, unet.dtype
    on_gpu = device.type != "cpu"
    autocast = (cfg.mixed_precision if cfg.mixed_precision is not None else on_gpu) and weight_dtype != torch.float32
    checkpointing = (cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None
                     else checkpointing_default(arch, on_gpu, _free_gpu_bytes(device) if on_gpu else None))

    # Encode once: the VAE and text encoder are frozen, so their outputs never change.
    report(progress, "cache", 0, len(files))
    images = [_load_square(f, resolution) for f in files]
    lat_mean, lat_std = _encode_latents(base, images, cfg.flip, device, weight_dtype, xl)
    variants = 2 if cfg.flip else 1
    text = _encode_text(base, captions, device, xl, resolution)
    report(progress, "cache", len(files), len(files))
    t_cached = time.perf_counter()

    validator = (default_validator(cfg, files, captions, base, template_validator, resolution) if validate == "default"
                 else validate)

    set_identity_lora(base, None)  # train on the bare base: no identity/style LoRA from an earlier job
    torch.manual_seed(cfg.seed)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian",
                                target_modules=list(cfg.target_modules)), adapter_name=ADAPTER)
    try:
        unet.set_adapters([ADAPTER])
        params = [p for n, p in unet.named_parameters() if ADAPTER in n and "lora_" in n]
        for p in params:
            p.data = p.data.float()  # trainable factors in fp32 even when the base is fp16
            p.requires_grad_(True)
        if checkpointing:
            unet.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
        # fp16 autocast: gradients below fp16's range vanish without loss scaling (bf16 has fp32's range).
        scaler = torch.amp.GradScaler(device.type, enabled=bool(autocast) and weight_dtype == torch.float16)
        noise_scheduler = DDPMScheduler.from_config(base.scheduler.config)
        target_kind = noise_scheduler.config.prediction_type
        gen = torch.Generator("cpu").manual_seed(cfg.seed)
        probe = _probe_batch(lat_mean, text, variants, noise_scheduler, gen, xl)
        eval_loss = {0: _probe_loss(unet, probe, target_kind, noise_scheduler, autocast, weight_dtype)}
        scale = cfg.alpha / cfg.rank
        losses: list[float] = []
        scores: dict[int, float] = {}
        ckpts: dict[int, Path] = {}
        t_validate = 0.0
        unet.train()
        accumulate = max(1, int(cfg.gradient_accumulation))
        for step in range(1, steps + 1):
            check_cancel(cancel, "training cancelled")
            optimizer.zero_grad(set_to_none=True)
            value = 0.0
            for _ in range(accumulate):  # the samples of one optimiser step, their gradients summed
                value += _micro_step(unet, lat_mean, lat_std, text, variants, noise_scheduler, gen, cfg, xl, device,
                                     target_kind, autocast, weight_dtype, scaler, accumulate, len(files))
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)  # skipped (and the scale lowered) when a gradient overflowed
            scaler.update()
            if not math.isfinite(value):
                raise PortraitError(f"training diverged at step {step} (loss {value}); lower --lr")
            losses.append(value)
            if on_step:
                on_step(step, value)
            report(progress, "train", step, steps)

            if step % every == 0 or step == steps:
                state = _lora_state(unet, scale)
                ckpts[step] = save_lora(base, state, ckpt_dir / f"step-{step:06d}.safetensors")
                eval_loss[step] = _probe_loss(unet, probe, target_kind, noise_scheduler, autocast, weight_dtype)
                unet.train()
                if validator is not None:
                    t0 = time.perf_counter()
                    unet.eval()
                    with torch.no_grad(), torch.autocast(device.type, dtype=weight_dtype, enabled=bool(autocast)):
                        scores[step] = float(validator(base, step, ckpts[step]))
                    unet.train()
                    unet.set_adapters([ADAPTER])
                    t_validate += time.perf_counter() - t0
                    report(progress, "validate", len(scores), math.ceil(steps / every))
        t_trained = time.perf_counter()
    finally:
        if checkpointing:
            unet.disable_gradient_checkpointing()
        unet.eval()
        unet.delete_adapters(ADAPTER)  # the cached base goes back to its original state

    # Choose: best score (ties to the later step); without validation, the last checkpoint.
    chosen = lora_select.choose_checkpoints(scores, cfg.merge_top_k) if scores else [max(ckpts)]
    chosen_states = [_strip_unet_prefix(load_file(str(ckpts[s]))) for s in chosen]
    final = lora_select.merge_loras(chosen_states, rank=cfg.rank) if len(chosen_states) > 1 else chosen_states[0]
    lora_path = save_lora(base, final, out / LORA_FILE)
    kohya_path = save_kohya(final, out / KOHYA_FILE)
    # The user's reference photo beside the LoRA: `portrait generate --identity OUT/identity.safetensors` fuses it.
    reference = write_reference(trainset_reference(cfg.trainset), out)

    t_end = time.perf_counter()
    rep = {
        "config": {**cfg.to_dict(), "steps": steps, "resolution": resolution, "validate_every": every},
        "architecture": arch,
        "base_model": str(cfg.base_model),
        "photos": len(files),
        "captions": sorted(set(captions)),
        "device": str(device),
        "dtype": dtype_name(weight_dtype),
        "mixed_precision": bool(autocast),
        "grad_scaler": bool(scaler.is_enabled()),
        "vae_upcast": bool(vae_needs_upcast(base.vae, xl)),
        "gradient_checkpointing": bool(checkpointing),
        "checkpoints": [{"step": s, "file": str(p.relative_to(out)),
                         "score": (None if s not in scores or not math.isfinite(scores[s]) else scores[s]),
                         "face_found": s in scores and math.isfinite(scores[s]), "eval_loss": eval_loss[s]}
                        for s, p in sorted(ckpts.items())],
        "eval_loss_start": eval_loss[0],
        "score": "minus the face-embedding distance of validation renders to the user's centroid (higher is better)"
                 if validate == "default" else "custom validator (higher is better)" if validator else None,
        "chosen": chosen,
        "merged": len(chosen) > 1,
        "outputs": {"lora": LORA_FILE, "kohya": KOHYA_FILE},
        "loss": losses,
        "timings": {"cache_s": round(t_cached - t_start, 3), "train_s": round(t_trained - t_cached - t_validate, 3),
                    "validate_s": round(t_validate, 3), "total_s": round(t_end - t_start, 3),
                    "steps_per_s": round(steps / max(t_trained - t_cached - t_validate, 1e-9), 3)},
        "trainset_reference": trainset_report.get("reference"),
        "reference": reference.name if reference else None,
    }
    report_path = out / REPORT_FILE
    report_path.write_text(json.dumps(rep, indent=2) + "\n")
    return LoraTrainingResult(lora_path, kohya_path, report_path, rep)


def loss_trend(losses: Sequence[float], window: int | None = None) -> tuple[float, float]:
    """Mean loss of the first and last windows (a quick 'did it fall' check)."""
    w = window or max(1, len(losses) // 4)
    return float(np.mean(losses[:w])), float(np.mean(losses[-w:]))
