"""Benchmark: `portrait create`'s picture (SceneRender: N candidates in one text-to-image call with the
identity and the style's ControlNet) against the same diffusers call made bare, in s/image.

Full-size bases with random weights built from the shipped configs (no download):
  sd15  512 x 512, IP-Adapter FaceID (512-d, random) + the openpose ControlNet (from the UNet)
  sdxl  1024 x 1024, InstantID: its adapter (perceiver resampler, random) + IdentityNet (from the UNet)

  ours  SceneRender.__call__: checks, sampler, identity inputs, controls, the IdentityNet hook, the call
  bare  the pipeline call alone on the same inputs (adapter loaded, embeddings and drawings precomputed)

    python bench/create.py                                     # CPU: toy models, 4 steps, 2 candidates
    python bench/create.py --device cuda --arch sd15 --steps 30 --count 4
    python bench/create.py --device cuda --arch sdxl --steps 30 --count 4
On CUDA the peak GPU memory is printed too. Goal: ours / bare <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import build_base, timed_call  # noqa: E402  (bench/generate.py: full-size random bases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu | cuda | mps (default: best available)")
    ap.add_argument("--dtype", default=None, help="fp32 | fp16 | bf16 (default: per device)")
    ap.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15")
    ap.add_argument("--toy", action="store_true", help="tiny test models (default on a CPU)")
    ap.add_argument("--size", type=int, default=None, help="picture side (default: sd15 512, sdxl 1024; toy 128)")
    ap.add_argument("--steps", type=int, default=None, help="scheduler steps (default: cpu 4, else 30)")
    ap.add_argument("--count", type=int, default=None, help="candidates per call (default: cpu 2, else 4)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from portrait.generate import controls
    from portrait.generate.pipelines import IDENTITYNET, InpaintModels, identity_inputs, identity_tokens, identitynet_hook
    from portrait.generate.template_inpaint import Sitter
    from portrait.generate.text_to_image import (SceneRender, SceneRequest, SceneSettings, control_drawing, head_face,
                                                 make_scheduler)
    from portrait.identity.face_embedding import FaceIdentity
    from portrait.models import tiny
    from portrait.models.device import pick_device

    device, dtype = pick_device(args.device, args.dtype)
    cpu = device.type == "cpu"
    toy = args.toy or cpu
    size = args.size or (128 if toy else (1024 if args.arch == "sdxl" else 512))
    steps, count = args.steps or (4 if cpu else 30), args.count or (2 if cpu else 4)
    if cpu:
        torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    xl = args.arch == "sdxl"
    base, nets = build_base(args.arch, device, dtype, [IDENTITYNET if xl else "openpose"], toy=toy)
    work = Path(tempfile.mkdtemp(prefix="bench-create-"))
    cfg_dir = work / "base"  # the UNet config the adapter builders read (the toy base's own, or the shipped one)
    (cfg_dir / "unet").mkdir(parents=True)
    base.unet.save_config(cfg_dir / "unet")
    rng = np.random.default_rng(0)
    vec = rng.normal(size=512).astype(np.float32)
    if xl:
        adapter = tiny.build_tiny_instantid_adapter(cfg_dir, work / "instantid.safetensors", id_dim=512,
                                                    num_tokens=16, hidden=64 if toy else 1280)
        face = FaceIdentity(vec / np.linalg.norm(vec), "arcface-antelopev2", "cosine", norm=20.0)
        models = InpaintModels(base, {}, identitynet=nets[IDENTITYNET], instantid_adapter=adapter)
        ident, control = Sitter(face=face, engine="instantid"), None
    else:
        adapter = tiny.build_tiny_ip_adapter_faceid(cfg_dir, work / "faceid.safetensors", id_dim=512)
        face = FaceIdentity(vec / np.linalg.norm(vec), "arcface-buffalo", "cosine")
        models = InpaintModels(base, nets, faceid_adapter=adapter)
        ident, control = Sitter(face=face, engine="faceid"), "openpose"
    for m in (base.unet, *nets.values()):
        m.to(device=device, dtype=dtype)
    build_s = time.perf_counter() - t0

    w = h = size
    head = (0.5, 0.38, 0.26)
    req = SceneRequest("a 1940s film still portrait of a person", w, h, tuple(range(count)), negative_prompt="blurry",
                       settings=SceneSettings("dpm++2m", steps, 6.0, size), control=control,
                       control_image=control_drawing(w, h, head=head) if control else None, control_scale=0.8,
                       head=head, detail_strength=0.0)
    ours = SceneRender(models, max_batch=count)

    # The bare call's inputs, made once outside the timing.
    names = [control] if control else [IDENTITYNET]
    pipe = models.text2img(names)
    pipe.scheduler = make_scheduler("dpm++2m", models.components["scheduler"].config)
    extra = identity_inputs(models, pipe, ident, batch=count, guidance=True)
    drawing = req.control_image if control else controls.face_keypoints((h, w), head_face(w, h, head), style="kps")
    extra["image"] = torch.from_numpy(np.stack([drawing] * count)).permute(0, 3, 1, 2).float() / 255
    extra["controlnet_conditioning_scale"] = 0.8
    tokens = identity_tokens(pipe.unet, extra["ip_adapter_image_embeds"]) if xl else None

    def bare():
        hook = identitynet_hook(models.identitynet, tokens) if xl else None
        try:
            pipe(prompt=[req.prompt] * count, negative_prompt=[req.negative_prompt] * count, height=h, width=w,
                 num_inference_steps=steps, guidance_scale=6.0,
                 generator=[torch.Generator("cpu").manual_seed(s) for s in req.seeds], output_type="np", **extra)
        finally:
            if hook is not None:
                hook.remove()

    def timed(fn) -> float:
        return timed_call(fn, device)

    ours(req, ident)  # warm-up
    bare()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_ours, t_bare = [], []
    for _ in range(args.repeat):
        t_bare.append(timed(bare))
        t_ours.append(timed(lambda: ours(req, ident)))
    mo, mb = statistics.median(t_ours) / count, statistics.median(t_bare) / count
    engine = "InstantID (adapter + IdentityNet)" if xl else "FaceID + openpose ControlNet"
    print(f"\nportrait bench/create.py — device {device} ({str(dtype).replace('torch.', '')}), torch {torch.__version__}, "
          f"build {build_s:.0f} s")
    print(f"{'TOY (tiny test models)' if toy else 'full-size'} {'SDXL' if xl else 'SD 1.5'} (random weights), {w}x{h}, "
          f"{engine}, {steps} steps, {count} candidates per call, median of {args.repeat}\n")
    print("| run | s/image | runs (s per call) |\n|---|---|---|")
    print(f"| bare diffusers | {mb:.3f} | {' '.join(f'{x:.2f}' for x in t_bare)} |")
    print(f"| SceneRender (create) | {mo:.3f} | {' '.join(f'{x:.2f}' for x in t_ours)} |")
    if device.type == "cuda":
        print(f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    ratio = mo / mb
    print(f"\nratio create / bare = {ratio:.3f}  (goal <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
