"""LoRA training speed at 512² on a full-size SD 1.5 UNet (random weights built from the shipped config).

    python bench/train.py                 # CPU: 3 timed steps; CUDA: 20 (fp16 autocast + grad checkpointing)
    python bench/train.py --steps 10 --rank 128 --device cuda
    python bench/train.py --accumulation 1 --no-text-encoder   # the UNet alone, one sample a step

Times what one `train_lora` optimiser step does with the same compute as the real models: EasyPhoto's
recipe by default, `--accumulation` 4 micro-batches (UNet forward + backward through the LoRA each), the
text encoder's LoRA (a full-size CLIP text encoder from the shipped config, its forward and backward each
micro-batch; `--no-text-encoder` for the frozen text encoder, whose output training caches), one AdamW
step. The VAE is excluded: training caches its latents once. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def add_arguments(ap: argparse.ArgumentParser, prefix: str = "") -> None:
    ap.add_argument(f"--{prefix}steps", type=int, default=None, help="timed training steps (default 3 on CPU, 20 on GPU)")
    ap.add_argument(f"--{prefix}rank", type=int, default=128)
    ap.add_argument(f"--{prefix}resolution", type=int, default=512)
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument(f"--{prefix}accumulation", type=int, default=4, help="micro-batches per step (EasyPhoto's 4)")
    ap.add_argument(f"--{prefix}no-text-encoder", action="store_true", help="no text-encoder LoRA")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    measure(args.steps, args.rank, args.resolution, args.device, not args.no_checkpointing, args.accumulation,
            not args.no_text_encoder)


def measure(steps: int | None, rank: int, resolution: int, device_name: str | None, checkpoint: bool = True,
            accumulation: int = 4, text_encoder: bool = True) -> None:
    """Time LoRA training steps on a full-size SD 1.5 UNet (and text encoder) and print the table."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel

    from portrait.identity.lora_train import TARGET_MODULES, TEXT_ENCODER_TARGETS
    from portrait.models.device import dtype_name, pick_device
    from portrait.models.loading import CONFIGS_DIR

    device, dtype = pick_device(device_name)
    gpu = device.type != "cpu"
    steps = steps or (20 if gpu else 3)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS_DIR / "sd15" / "unet"))
    unet.requires_grad_(False)
    unet.to(device, dtype)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank / 2, init_lora_weights="gaussian",
                                target_modules=list(TARGET_MODULES)))
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    te = None
    if text_encoder:
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(CONFIGS_DIR / "sd15" / "text_encoder")))
        te.requires_grad_(False)
        te.to(device, dtype)
        te.add_adapter(LoraConfig(r=rank, lora_alpha=rank / 2, init_lora_weights="gaussian",
                                  target_modules=list(TEXT_ENCODER_TARGETS)))
        te.train()
    te_params = [p for n, p in te.named_parameters() if "lora_" in n] if te is not None else []
    for p in params + te_params:
        p.data = p.data.float()
        p.requires_grad_(True)
    checkpointing = gpu and checkpoint
    if checkpointing:
        unet.enable_gradient_checkpointing()
    build_s = time.perf_counter() - t0
    groups = [{"params": params, "lr": 1e-4}] + ([{"params": te_params, "lr": 5e-5}] if te_params else [])
    opt = torch.optim.AdamW(groups)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    lat = resolution // 8
    latents = torch.randn(1, 4, lat, lat, device=device, dtype=dtype)
    text = torch.randn(1, 77, 768, device=device, dtype=dtype)
    ids = torch.randint(0, 49408, (1, 77), device=device)
    unet.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accumulation):
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (1,), device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=gpu and dtype != torch.float32):
                cond = te(ids)[0] if te is not None else text
                pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=cond).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float()) / accumulation
            loss.backward()
            total += float(loss.detach())
        opt.step()
        return total

    step()  # warm-up (allocations, kernels)
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if gpu else "-"
    lora_m = sum(p.numel() for p in params) / 1e6
    rows = [("device", f"{device} ({torch.cuda.get_device_name() if gpu else os.cpu_count()} {'' if gpu else 'cores'})"),
            ("weights dtype", dtype_name(dtype)), ("mixed precision", str(gpu and dtype != torch.float32)),
            ("gradient checkpointing", str(checkpointing)), ("UNet params", f"{unet.num_parameters() / 1e6:.0f} M"),
            ("LoRA rank / params", f"{rank} / {lora_m:.1f} M"), ("resolution", f"{resolution}²"),
            ("micro-batches per step", str(accumulation)),
            ("text-encoder LoRA / params", f"{bool(te_params)} / {sum(p.numel() for p in te_params) / 1e6:.1f} M"),
            ("build s", f"{build_s:.1f}"), ("timed steps", str(steps)), ("s / step", f"{dt / steps:.3f}"),
            ("steps / s", f"{steps / dt:.2f}"), ("peak GPU memory", peak),
            ("800-step run (EasyPhoto default)", f"{800 * dt / steps / 60:.1f} min")]
    width = max(len(k) for k, _ in rows)
    print(f"\nLoRA training step, full-size SD 1.5 UNet (random weights)\n{'-' * (width + 24)}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
