"""Rebuild the `studio-grey` demo pack's image from its public-domain source (issue 17 item 5: the old
GrabCut matte left jagged grey bites out of the collar and the shoulder).

    python scripts/make_studio_grey.py

The NASA astronaut portrait (scikit-image's `astronaut.png`) cropped to head and shoulders, the person
cut out with MediaPipe's selfie segmentation (shipped) and set on a grey seamless backdrop, lit from the
top; then the pack's face caches and [measured] are written again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portrait.faces import FaceConfig, get_face_analysis  # noqa: E402
from portrait.imageio import save_image  # noqa: E402
from portrait.post.segmentation import person_alpha  # noqa: E402
from portrait.samples import astronaut  # noqa: E402
from portrait.templates import load_template, write_measured  # noqa: E402

SIZE = (480, 604)  # the pack's width, height
CROP = (10, 0, 390, 478)  # x0, y0, x1, y1 in the 512 px source: head, shoulders, no flag, no shuttle


def backdrop(w: int, h: int) -> np.ndarray:
    """A grey seamless: lighter at the top, a soft fall-off to the sides."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    level = 128 - 14 * y - 8 * x ** 2
    grey = np.stack([level - 4, level - 3, level + 1], axis=-1)
    return np.clip(grey, 0, 255)


def main() -> None:
    src = astronaut()
    x0, y0, x1, y1 = CROP
    crop = cv2.resize(src[y0:y1, x0:x1], SIZE, interpolation=cv2.INTER_CUBIC)
    alpha = person_alpha(crop, gain=8.0)  # near 0/1: a held helmet is in or out, never a ghost
    # The person is the largest piece: bits of the helmet she holds and holes in the suit are not.
    solid = (alpha > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    person = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    person = cv2.morphologyEx(cv2.morphologyEx(person, cv2.MORPH_CLOSE, k), cv2.MORPH_OPEN, k)
    alpha = np.where(person > 0, np.maximum(alpha, 0.0), 0.0).astype(np.float32) * person
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.2)[..., None]  # a soft, even edge (hair stays fine)
    out = crop.astype(np.float32) * alpha + backdrop(*SIZE) * (1 - alpha)
    t = load_template("studio-grey")
    save_image(np.clip(out + 0.5, 0, 255).astype(np.uint8), t.image_path, quality=92)
    t = load_template("studio-grey")
    for lm in ("dlib5", "dlib68", "mediapipe"):
        t.detected_faces(get_face_analysis(FaceConfig(landmarks=lm)))  # the three face caches, afresh
    write_measured(t)
    print(f"wrote {t.image_path}")


if __name__ == "__main__":
    main()
