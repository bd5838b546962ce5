"""Diffusion stages: control images and the two-pass template inpainting recipe.

`controls` is pure numpy / OpenCV; `template_inpaint` imports torch and diffusers lazily (ml extra).
"""

from .controls import CONTROL_NAMES, FaceCrop, face_crop

__all__ = ["CONTROL_NAMES", "FaceCrop", "face_crop"]
