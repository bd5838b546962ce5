"""`portrait train` (an identity LoRA from a preprocess output) and `portrait embed` (the train-free identity:
the mean face embedding for IP-Adapter FaceID / InstantID)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..faces.analysis import DETECTORS, EMBEDDERS
from ..jobs.configs import EMBEDDING_NAME, LORA_TARGETS, TrainConfig
from .common import EXIT_OK, handle_errors, json_option, print_json, progress_bar, ranged
from .licence_opt import licence_option


def register(group: click.Group) -> None:
    @group.command("train")
    @click.argument("trainset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--base-model", required=True, help="Manifest name (sd15, sdxl, ...), diffusers folder or .safetensors.")
    @click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="Output folder: identity.safetensors, identity_kohya.safetensors, training.json, checkpoints/.")
    @ranged(TrainConfig, "steps", help="Training steps [default: 200 per photo, at most 800].")
    @ranged(TrainConfig, "rank")
    @ranged(TrainConfig, "alpha")
    @ranged(TrainConfig, "lr")
    @ranged(TrainConfig, "resolution", help="Training side in px, a multiple of 8 [default: 512 SD 1.5, 1024 SDXL].")
    @ranged(TrainConfig, "gradient_accumulation", help="Samples whose gradients make one step (EasyPhoto's 4).")
    @click.option("--lora-targets", type=click.Choice(sorted(LORA_TARGETS)), default="easyphoto", show_default=True,
                  help="easyphoto: every Linear / 1x1 conv of the UNet's transformer blocks; attention: q/k/v/out only.")
    @click.option("--train-text-encoder/--no-train-text-encoder", default=None,
                  help="A LoRA on the text encoder too (its attention and MLP) [default: on for SD 1.5, as "
                       "EasyPhoto trains it; off for SDXL].")
    @ranged(TrainConfig, "text_encoder_lr", help="The text encoder's learning rate [default: half of --lr].")
    @click.option("--seed", type=int, default=0, show_default=True)
    @ranged(TrainConfig, "validate_every", help="Save a checkpoint and score its validation renders every N steps.")
    @ranged(TrainConfig, "merge_top_k", help="Merge the best K checkpoints (mean of their deltas) instead of keeping the best one.")
    @click.option("--templates", multiple=True,
                  help="Validate on these templates' faces (two-pass inpaint) instead of text2img renders; "
                       "the renders go to OUT/validation/.")
    @ranged(TrainConfig, "validation_size", help="Template validation's inpaint working size [default: 512 SD 1.5, 1024 SDXL].")
    @click.option("--no-validate", is_flag=True, help="Skip validation renders: the last checkpoint is kept.")
    @click.option("--device", default=None, help="cuda, mps or cpu [default: best available; $PORTRAIT_DEVICE].")
    @click.option("--dtype", default=None, help="fp32, fp16 or bf16 [default: fp16 on GPU, fp32 on CPU].")
    @json_option
    @licence_option
    @handle_errors
    def train_cmd(trainset_dir: Path, base_model: str, out: Path, steps, rank, alpha, lr, resolution,
                  gradient_accumulation, lora_targets, train_text_encoder, text_encoder_lr, seed,
                  validate_every, merge_top_k, templates, validation_size, no_validate, device, dtype,
                  as_json: bool) -> None:
        """Train an identity LoRA on TRAINSET_DIR (the output of `portrait preprocess`).

        Checkpoints are rendered every --validate-every steps and scored by face likeness to the
        user's photos; the best one (or the merge of the best --merge-top-k) is written to
        OUT/identity.safetensors (diffusers) and OUT/identity_kohya.safetensors (A1111 / ComfyUI).
        """
        from .. import jobs
        from ..identity.lora_train import loss_trend

        config = jobs.TrainConfig(base_model=base_model, steps=steps, rank=rank, alpha=alpha, lr=lr,
                                  resolution=resolution, gradient_accumulation=gradient_accumulation,
                                  lora_targets=lora_targets, train_text_encoder=train_text_encoder,
                                  text_encoder_lr=text_encoder_lr, seed=seed, validate_every=validate_every,
                                  merge_top_k=merge_top_k, templates=tuple(templates), validation_size=validation_size,
                                  validate=not no_validate, device=device, dtype=dtype)
        with progress_bar(not as_json, show_loss=True) as bar:
            result = jobs.train(trainset_dir, out, config, progress=bar, on_step=bar.loss)
        rep = result.report
        summary = result.to_dict()
        if as_json:
            print_json(summary)
        else:
            first, last = loss_trend(rep["loss"])
            click.echo(f"trained {summary['steps']} steps on {rep['photos']} photos ({rep['device']}, {rep['dtype']}): "
                       f"loss {first:.4f} → {last:.4f}, {rep['timings']['steps_per_s']} steps/s")
            for c in rep["checkpoints"]:
                mark = "*" if c["step"] in rep["chosen"] else " "
                score = "no face" if c["score"] is None else f"{c['score']:.3f}"
                click.echo(f" {mark} step {c['step']:>6}: score {score}")
            click.echo(f"identity LoRA: {result.lora}\nkohya copy:    {result.kohya}\nreport:        "
                       f"{result.report_file}")
            if summary["reference"]:
                click.echo(f"reference:     {summary['reference']} (used by `portrait generate --identity`)")
        sys.exit(EXIT_OK)

    @group.command("embed")
    @click.argument("trainset", type=click.Path(exists=True, file_okay=False))
    @click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
                  help=f"Output file (default: TRAINSET/{EMBEDDING_NAME}).")
    @click.option("--embedder", type=click.Choice(EMBEDDERS),
                  default="dlib-resnet", show_default=True,
                  help="Face engine: IP-Adapter FaceID and inswapper need arcface-buffalo (alias arcface), "
                       "InstantID arcface-antelopev2.")
    @click.option("--detector", type=click.Choice(("auto",) + DETECTORS), default="auto", show_default=True,
                  help="auto: scrfd with an ArcFace embedder (ArcFace aligns on SCRFD's own five keypoints, as "
                       "insightface, InstantID and FaceID do), else dlib-hog.")
    @json_option
    @licence_option
    @handle_errors
    def embed(trainset, out_file, embedder, detector, as_json):
        """Train-free identity: the mean face embedding of a training set, for IP-Adapter FaceID."""
        from .. import jobs

        out = Path(out_file) if out_file else Path(trainset) / EMBEDDING_NAME
        config = jobs.EmbedConfig(embedder=embedder, detector=detector, file_name=out.name)
        with progress_bar(not as_json) as bar:
            result = jobs.embed(Path(trainset), out.parent, config, progress=bar)
        if as_json:
            print_json(result.to_dict())
        else:
            click.echo(f"{result.file}: {result.dim}-d {result.engine} embedding of {result.photos} photo(s)")
