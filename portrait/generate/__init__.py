"""Diffusion stages: control images, the inpaint pipelines and what loads into them, the two-pass
template inpainting recipe, and jobs from templates.

`controls` is pure numpy / OpenCV; `pipelines`, `template_inpaint` and `template_jobs` import torch
and diffusers lazily (ml extra).
"""

from .controls import CONTROL_NAMES, FaceCrop, face_crop

__all__ = ["CONTROL_NAMES", "FaceCrop", "face_crop"]
