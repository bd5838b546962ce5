"""Issue 7's two tables, measured on real photos with an independent meter (dlib's HOG detector, its
5-point predictor and ResNet descriptor, called directly, on the written PNG):

    python bench/likeness.py [--out DIR]

1. Per bundled template: `portrait run` with the sample user (the astronaut sample photos), the
   distance of each painted slot's face and of the largest face to the user, and to the template's
   own person in that slot (same person below 0.6); and a second meter that shares nothing with
   dlib: the face's geometry from MediaPipe's mesh, the Procrustes shape distance (% of face size) to
   the user's photos and to the template's person (portrait/faces/meters.py: the same person's photos
   read 0.1-1.3, different people 4.6-9.9; a mirrored photo reads as another shape).
2. The blur and tilt ladder: sharp originals, Gaussian blur at three strengths, tilts of 15/30/45°, a
   photo turned by 90° without EXIF; each photo's verdict, sharpness and roll.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portrait.faces.meters import DlibMeter, MeshMeter, shape_distance  # noqa: E402
from portrait.faces.base import iou  # noqa: E402
from portrait.imageio import load_rgb, save_image  # noqa: E402
from portrait.jobs import PortraitPipeline, RunConfig  # noqa: E402
from portrait.samples import astronaut, write_sample_photos  # noqa: E402
from portrait.templates import load_template  # noqa: E402
from preprocess import PreprocessConfig, run_preprocess  # noqa: E402
from preprocess.orientation import rotated  # noqa: E402

BAR, ESCAPED = "|", "\\|"
BUNDLED = ("astronaut-wide", "classic-bw", "duo", "navy-formal", "studio-grey", "warm-studio")


def template_table(root: Path, meter: DlibMeter) -> None:
    photos = root / "photos"
    paths = write_sample_photos(photos)
    out = root / "run"
    result = PortraitPipeline(RunConfig()).run(photos, list(BUNDLED), out)
    user = np.mean([meter.faces(load_rgb(p))[0][1] for p in paths if p.name.startswith("astronaut_")], axis=0)
    mm = MeshMeter()
    user_meshes = [f[0][1] for f in (mm.meshes(load_rgb(p)) for p in paths if p.name.startswith("astronaut_")) if f]
    print("| template | slot | to user | to template's person | largest face to user | shape to user | "
          "shape to template's person | result.json slot |")
    print("|---|---|---|---|---|---|---|---|")
    for name in BUNDLED:
        t = load_template(name)
        tpl = load_rgb(t.image_path)
        png = load_rgb(out / f"{name}.png")
        s, back = png.shape[1] / tpl.shape[1], t.image().shape[1] / tpl.shape[1]
        found, own = meter.faces(png), meter.faces(tpl)
        entry = next(o for o in result.outputs if o.template == name)
        for i in t.faces:
            box = [v / back for v in t.detected_faces()[i].box]
            face = max(found, key=lambda f: iou(f[0], [v * s for v in box]))
            person = max(own, key=lambda f: iou(f[0], box))[1]
            js = entry.slots.get(i, {})
            # The second meter: the painted face's geometry (MediaPipe's mesh) against the user's photos and
            # against the template's person, the median of the shape distances (% of the face's size).
            out_mesh = max(mm.meshes(png), key=lambda f: iou(f[0], [v * s for v in box]))[1]
            tpl_mesh = max(mm.meshes(tpl), key=lambda f: iou(f[0], box))[1]
            to_user = np.median([shape_distance(out_mesh, u) for u in user_meshes])
            print(f"| {name} | {i} | {np.linalg.norm(face[1] - user):.3f} | {np.linalg.norm(face[1] - person):.3f} | "
                  f"{np.linalg.norm(found[0][1] - user):.3f} | {to_user:.2f} | {shape_distance(out_mesh, tpl_mesh):.2f} | "
                  f"found {js.get('found')}, main {js.get('main_face')}, passes {js.get('passes')} |")
    if result.failures:
        print("failures:", result.failures)


def _relit(img, gamma, gain):
    x = (img.astype(np.float32) / 255.0) ** gamma * np.asarray(gain, np.float32)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def ladder_table(root: Path) -> None:
    a = astronaut()
    d = root / "ladder"
    d.mkdir()
    lights = iter([(g, gain) for g in (0.7, 0.85, 1.15, 1.3, 1.45) for gain in ((1, 1, 1), (1.08, 1, 0.86), (0.9, 0.97, 1.1))])
    made = {}
    for name in ("sharp_a", "sharp_b", "sharp_c", "sharp_d"):
        made[name] = _relit(a, *next(lights))
    for sigma in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
        made[f"blur_{sigma}px"] = cv2.GaussianBlur(_relit(a, *next(lights)), (0, 0), sigma)
    for deg in (15, 30, 38, 45):
        made[f"tilt_{deg}"] = rotated(_relit(a, *next(lights)), deg)
    made["turned_90"] = np.ascontiguousarray(np.rot90(_relit(a, 1.0, (1.0, 0.95, 0.9))))
    for name, img in made.items():
        save_image(img, d / f"{name}.jpg", quality=95)
    r = run_preprocess(d, None, PreprocessConfig(min_photos=1))
    print("\n| photo | verdict | sharpness (raw) | roll | message |")
    print("|---|---|---|---|---|")
    for p in r.photos:
        roll = "" if p.face is None else f"{p.face.roll:.0f}°"
        print(f"| {p.file} | {', '.join(p.reasons) or 'accepted'} | {p.facts.get('sharpness_raw', '')} | {roll} | "
              f"{p.message.replace(BAR, ESCAPED)} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="likeness-"))
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "run").exists():
        template_table(root, DlibMeter())
    ladder_table(root)


if __name__ == "__main__":
    main()
