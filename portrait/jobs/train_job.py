"""The train job: an identity LoRA from a training set, validated on text2img renders or on templates."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..identity import lora_train
from ..progress import CancelToken, ProgressCallback
from .configs import LORA_TARGETS, TrainConfig
from .results import TrainResult


def template_validator_factory(cfg: lora_train.LoraTraining):
    """Validation on cfg.templates' faces: the generation stage's validator over the loaded templates,
    handed to training (which sits below generation and templates and cannot import them)."""
    if not cfg.templates:
        return None
    from ..templates.painting import template_validator
    from ..templates import load_template

    loaded = [load_template(t) for t in cfg.templates]

    def make(base, crops, centroid, fa):
        return template_validator(base, loaded, crops, centroid, fa, steps=cfg.validation_steps,
                                  crop_size=cfg.validation_size, save_dir=Path(cfg.out_dir) / "validation")

    return make


def train(trainset: Path, out_dir: Path, config: TrainConfig | None = None, *, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """out_dir/identity.safetensors (diffusers), identity_kohya.safetensors (A1111 / ComfyUI), training.json
    and checkpoints/. `on_step(step, loss)` sees every training step's loss."""
    from ..models.manifest import get_manifest

    config = config or TrainConfig()
    cfg = lora_train.LoraTraining(
        trainset=Path(trainset), base_model=config.base_model, out_dir=Path(out_dir), steps=config.steps,
        rank=config.rank, alpha=config.alpha, lr=config.lr, resolution=config.resolution, seed=config.seed,
        gradient_accumulation=config.gradient_accumulation, target_modules=LORA_TARGETS[config.lora_targets],
        train_text_encoder=config.train_text_encoder, text_encoder_lr=config.text_encoder_lr,
        validate_every=config.validate_every, merge_top_k=config.merge_top_k, templates=tuple(config.templates),
        validation_size=config.validation_size, device=config.device, dtype=config.dtype)
    result = lora_train.train_lora(cfg, validate="default" if config.validate else None, progress=progress,
                                   on_step=on_step, manifest=get_manifest(config.models_dir),
                                   template_validator=template_validator_factory(cfg), cancel=cancel)
    return TrainResult(result.lora_path, result.kohya_path, result.report_path, result.report)
