"""Benchmark: the two-pass template inpaint through TemplateInpaint vs the same diffusers calls made bare.

A full-size SD 1.5 (UNet, VAE, CLIP text encoder built from the real configs in
portrait/models/configs/sd15, random weights: the real model's compute, no download) and full-size
ControlNets (from_unet, output convs randomised). Pass 1 + pass 2 at 512 x 512 with an identity LoRA:

  ours  TemplateInpaint.__call__: crop, fusion #1, 5-point paste, controls, pass 1, colour transfer,
        fusion #2, pass 2, paste back
  bare  the two ControlNet-inpaint pipeline calls alone, on precomputed inputs

    python bench/generate.py                        # CPU: 4 steps (1 denoising step per pass), 1 ControlNet
    python bench/generate.py --device cuda --steps 30 --steps2 20 --controlnets 3
    python bench/generate.py --device cuda --arch sdxl --no-train   # full-size SDXL at 1024 x 1024
    python bench/generate.py --arch sdxl --toy --size 128 --no-train  # tiny models: checks the wiring on a CPU

On CUDA the peak GPU memory of the timed runs is printed too.

Then the LoRA training table of bench/train.py (steps/s at 512² on a full-size SD 1.5 UNet), unless
--no-train. Goal: ours / bare <= 1.05. Set OMP_WAIT_POLICY=PASSIVE on small CPUs (DESIGN.md section 4).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train as train_bench  # noqa: E402  (bench/train.py: the LoRA training steps/s table)

CONFIGS = Path(__file__).resolve().parents[1] / "portrait" / "models" / "configs"


def _full_size(arch: str):
    """(unet, vae, text encoders, tokenizers, scheduler) of a full-size SD 1.5 / SDXL, random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from portrait.models.tiny import tiny_tokenizer

    cfg = CONFIGS / arch
    if not (cfg / "unet" / "config.json").is_file():
        sys.exit(f"missing {arch} configs in {cfg}")
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
    texts = {"text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
             "tokenizer": tiny_tokenizer()}
    if arch == "sdxl":
        texts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg / "text_encoder_2"))
        texts["tokenizer_2"] = tiny_tokenizer(pad_token="!")
    sched = DDIMScheduler.from_config(DDIMScheduler.load_config(cfg / "scheduler"))
    return unet, vae, texts, sched


def build_base(arch: str, device, dtype, controlnets, seed: int = 0, toy: bool = False):
    """A full-size SD 1.5 or SDXL base (random weights from the shipped configs; `toy`: the tiny test
    models instead, to check the wiring on a CPU) and ControlNets made from its UNet."""
    import tempfile

    import torch
    from diffusers import ControlNetModel, StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    if toy:
        from portrait.models.tiny import build_tiny_sd15, build_tiny_sdxl

        folder = (build_tiny_sdxl if arch == "sdxl" else build_tiny_sd15)(tempfile.mkdtemp(prefix="bench-toy-"))
        extra = {} if arch == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
        base = cls.from_pretrained(folder, **extra)
    else:
        with torch.device(device):  # random init straight on the accelerator: seconds, not minutes, for SDXL
            unet, vae, texts, sched = _full_size(arch)
        extra = {} if arch == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                            "requires_safety_checker": False}
        base = cls(vae=vae, unet=unet, scheduler=sched, **texts, **extra)
    base.to(device=device, dtype=dtype)
    base.set_progress_bar_config(disable=True)
    nets = {}
    for i, name in enumerate(controlnets):
        net = ControlNetModel.from_unet(base.unet)
        with torch.no_grad():
            for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
                conv.weight.normal_(0, 0.01, generator=torch.Generator().manual_seed(i))
        nets[name] = net.to(device=device, dtype=dtype)
    return base, nets


def timed_call(fn, device) -> float:
    """Seconds `fn()` takes, the accelerator's queue drained before and after."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def random_lora(unet, out_dir: Path, arch: str = "sd15") -> Path:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    cfg = LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet.add_adapter(cfg, adapter_name="bench_tmp")
    state = {k: torch.randn_like(v) * 0.01 for k, v in get_peft_model_state_dict(unet, adapter_name="bench_tmp").items()}
    unet.delete_adapters("bench_tmp")
    out_dir.mkdir(parents=True, exist_ok=True)
    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    cls.save_lora_weights(out_dir, unet_lora_layers=convert_state_dict_to_diffusers(state),
                                              weight_name="identity.safetensors")
    return out_dir / "identity.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu | cuda | mps (default: best available)")
    ap.add_argument("--dtype", default=None, help="fp32 | fp16 | bf16 (default: per device)")
    ap.add_argument("--steps", type=int, default=None, help="scheduler steps per pass (default: cpu 4, else 30)")
    ap.add_argument("--steps2", type=int, default=None, help="scheduler steps of pass 2 (default: --steps)")
    ap.add_argument("--controlnets", type=int, default=None, choices=(1, 2, 3),
                    help="pass-1 ControlNets (default: cpu 1, else 3); pass 2 runs tile + canny")
    ap.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15", help="base architecture (full size)")
    ap.add_argument("--toy", action="store_true", help="tiny test models instead of full size (checks the wiring)")
    ap.add_argument("--size", type=int, default=None, help="working crop side (default: sd15 512, sdxl 1024)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default="/tmp/portrait-bench-generate")
    ap.add_argument("--no-train", action="store_true", help="skip the LoRA training steps/s table")
    train_bench.add_arguments(ap, prefix="train-")
    args = ap.parse_args()

    import torch
    from skimage import data

    from portrait.faces import FaceConfig, get_face_analysis
    from portrait.generate import controls
    from portrait.generate.pipelines import InpaintModels
    from portrait.generate.template_inpaint import PASS1, PASS2, Sitter, InpaintJob, TemplateInpaint, _pil
    from portrait.imageio import load_rgb
    from portrait.models.device import pick_device
    from portrait.post.fusion import fuse

    device, dtype = pick_device(args.device, args.dtype)
    args.size = args.size or (1024 if args.arch == "sdxl" else 512)
    cpu = device.type == "cpu"
    steps = args.steps or (4 if cpu else 30)
    n_cn = args.controlnets or (1 if cpu else 3)
    if cpu:
        torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    pass1 = replace(PASS1, steps=steps, controlnets=dict(list(PASS1.controlnets.items())[:n_cn]))
    pass2 = replace(PASS2, steps=args.steps2 or steps)
    needed = list(dict.fromkeys([*pass1.controlnets, *pass2.controlnets]))
    base, nets = build_base(args.arch, device, dtype, needed, toy=args.toy)
    lora = random_lora(base.unet, Path(args.out), args.arch)
    build_s = time.perf_counter() - t0

    fa = get_face_analysis(FaceConfig())
    tpl = data.astronaut()
    tface = fa.analyze(tpl)[0]
    import matplotlib

    ref = load_rgb(Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg")
    rface = fa.analyze(ref)[0]
    job = InpaintJob(tpl, tface, prompt="a studio portrait photo", negative_prompt="blurry", pass1=pass1,
                     pass2=pass2, seed=0)
    models = InpaintModels(base, nets)
    ours = TemplateInpaint(models, crop_size=args.size)
    identity = Sitter(lora=lora)

    # The bare calls' inputs, computed once outside the timing (same shapes as ours).
    crop = controls.face_crop(tpl.shape[:2], tface, args.size)
    cface = crop.face(tface)
    img = crop.crop(tpl)
    fused = fuse(img, cface, ref, rface).image
    m1 = controls.inpaint_mask(img.shape[:2], cface)
    m2 = controls.edge_ring(m1, 8, 8)
    names1 = [n for n, _ in pass1.active()]
    names2 = [n for n, _ in pass2.active()]
    c1 = controls.make_controls(names1, fused=fused, replaced=fused, faces=cface)
    c2 = controls.make_controls(names2, fused=fused, replaced=fused, faces=cface)

    def bare():
        for names, ctl, mask, s in ((names1, c1, m1, pass1), (names2, c2, m2, pass2)):
            pipe = models.pipeline(tuple(names))
            scales = [sc for _, sc in s.active()]
            pipe(prompt=job.prompt, negative_prompt=job.negative_prompt, image=_pil(fused), mask_image=_pil(mask),
                 control_image=[_pil(c) for c in ctl] if len(ctl) > 1 else _pil(ctl[0]),
                 controlnet_conditioning_scale=scales if len(scales) > 1 else scales[0],
                 height=args.size, width=args.size, strength=s.strength, num_inference_steps=s.steps,
                 guidance_scale=s.guidance_scale or 7.0, generator=torch.Generator("cpu").manual_seed(0), output_type="np")

    stage_times: list[dict] = []

    def run_ours():
        stage_times.append(ours(job, identity, ref, rface)[0].details["timings"])

    def timed(fn) -> float:
        return timed_call(fn, device)

    run_ours()  # warm-up: loads the LoRA, builds the pipelines, first-call allocations
    bare()
    t_ours, t_bare = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.repeat):  # interleaved so drift hits both alike
        t_bare.append(timed(bare))
        t_ours.append(timed(run_ours))
    mo, mb = statistics.median(t_ours), statistics.median(t_bare)
    d1, d2 = int(steps * pass1.strength), int(pass2.steps * pass2.strength)

    print(f"\nportrait bench/generate.py — device {device} ({str(dtype).replace('torch.', '')}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, build {build_s:.0f} s")
    what = {"sd15": "SD 1.5", "sdxl": "SDXL"}[args.arch]
    print(f"{'TOY (tiny test models)' if args.toy else 'full-size'} {what} (random weights), {args.size}x{args.size}, "
          f"identity LoRA r16; pass 1: {'+'.join(names1)} "
          f"strength {pass1.strength} x {steps} steps = {d1} denoise; pass 2: {'+'.join(names2)} "
          f"strength {pass2.strength} x {pass2.steps} steps = {d2} denoise; median of {args.repeat}\n")
    print(f"{'run':<34}{'median s':>10}{'runs (s)':>28}")
    print(f"{'bare diffusers (pass 1 + pass 2)':<34}{mb:>10.2f}{' '.join(f'{x:.2f}' for x in t_bare):>28}")
    print(f"{'TemplateInpaint (whole recipe)':<34}{mo:>10.2f}{' '.join(f'{x:.2f}' for x in t_ours):>28}")
    ratio = mo / mb
    if device.type == "cuda":
        print(f"{'peak GPU memory (generate)':<34}{torch.cuda.max_memory_allocated() / 2**30:>9.1f} GiB")
    print(f"\noverhead ratio ours / bare = {ratio:.3f}  (goal <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
    # Run-to-run noise on a shared CPU can exceed the overhead itself: also print the recipe's own
    # non-diffusion stages as TemplateInpaint measured them (crop, fusions, controls, colour transfer).
    extra = statistics.median(t["prepare"] + t["between"] for t in stage_times[1:])
    print(f"non-diffusion stages inside ours (measured): {extra:.3f} s per template = {extra / mb:.2%} of bare")
    if not args.no_train:
        del base, nets, models, ours  # free the generation models before building the training UNet
        train_bench.measure(args.train_steps, args.train_rank, args.train_resolution, args.device,
                            not args.no_checkpointing, args.train_accumulation, not args.train_no_text_encoder)


if __name__ == "__main__":
    main()
