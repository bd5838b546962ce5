"""Write each bundled style's preview.jpg: its prompt, pose and settings run through `create`'s real
renderer on TINY RANDOM models (no weights are downloaded or shipped), and stamped as such. They show the
style's aspect and its pose drawing, not what a real model paints.

    python scripts/make_style_previews.py            # every pack in styles/
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portrait.generate.pipelines import InpaintModels  # noqa: E402
from portrait.generate.template_inpaint import Sitter  # noqa: E402
from portrait.generate.text_to_image import SceneRender, SceneRequest, control_drawing, scene_size  # noqa: E402
from portrait.identity.face_embedding import FaceIdentity  # noqa: E402
from portrait.imageio import save_image  # noqa: E402
from portrait.models import tiny  # noqa: E402
from portrait.styles import PREVIEW_NAME, bundled_dir, list_styles  # noqa: E402

SIDE = 512  # rendered at the SD 1.5 working area and the style's aspect, then halved for the file
LABEL = "TINY RANDOM MODEL"


def _stamp(picture: np.ndarray, pose: np.ndarray | None) -> np.ndarray:
    """The picture beside its pose drawing (when the style has one), with the label across the top."""
    panels = [picture] + ([pose] if pose is not None else [])
    out = np.concatenate(panels, axis=1).copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 16), (0, 0, 0), -1)
    cv2.putText(out, LABEL + (" | pose" if pose is not None else ""), (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    from diffusers import ControlNetModel, StableDiffusionPipeline

    work = Path(tempfile.mkdtemp(prefix="style-previews-"))
    base_dir = tiny.build_tiny_sd15(work / "sd15", seed=1)
    net = tiny.build_tiny_controlnet(base_dir, work / "openpose", seed=2)
    adapter = tiny.build_tiny_ip_adapter_faceid(base_dir, work / "faceid.safetensors", id_dim=128, seed=3)
    base = StableDiffusionPipeline.from_pretrained(base_dir, safety_checker=None, requires_safety_checker=False)
    models = InpaintModels(base, {"openpose": ControlNetModel.from_pretrained(net)}, faceid_adapter=adapter)
    vec = np.random.default_rng(0).normal(size=128).astype(np.float32)
    ident = Sitter(face=FaceIdentity(vec / np.linalg.norm(vec), "dlib-resnet", "l2"))
    render = SceneRender(models)
    for style in list_styles([bundled_dir()]):
        settings = replace(style.settings("sd15"), size=SIDE, steps=4)
        w, h = scene_size(SIDE, style.aspect)
        pose = None
        if style.pose is not None:
            pose = control_drawing(w, h, head=style.pose.head)
        req = SceneRequest(style.prompt_for("a person"), w, h, (1,), negative_prompt=style.negative_prompt,
                           settings=settings, control=style.pose.control if style.pose else None, control_image=pose,
                           control_scale=style.pose.scale if style.pose else 0.8)
        [picture] = render(req, ident)
        small = [cv2.resize(x, (w // 2, h // 2), interpolation=cv2.INTER_AREA) if x is not None else None
                 for x in (picture, pose)]
        path = save_image(_stamp(*small), style.directory / PREVIEW_NAME, quality=80)
        print(f"{style.name}: {path}")


if __name__ == "__main__":
    main()
