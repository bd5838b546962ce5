"""Does `--template auto` help? Issue 19 item 3's measurement:

    python bench/template_choice.py [--n 3] [--draws 3] [--out DIR]

For each test person, `portrait run` once with `--template auto:N` and `--draws` times with N
templates drawn at random (seeded) from the same pool (the single-face bundled packs, less any pack of
that person). Each output is measured from the written PNG:
- likeness: dlib distance of the largest face to the user's photos (the independent meter of
  portrait/faces/meters.py; same person below 0.6, lower is better);
- seam: delta E between the painted face's border ring and the template's skin just outside it
  (portrait.post.seam; lower is better);
- tone shift: how far the painted face's skin ITA is from the user's own (degrees; lower keeps the
  user's skin tone; the classic path's colour transfer pulls the face toward the template's skin;
  black-and-white outputs are left out of this column).

People: the astronaut sample photos, and five template people of light to dark skin (TEMPLATE_PEOPLE),
each photo made into six photos in different light and framing; that person's own packs are left out
of their pool. (insightface's test people are no users here: its Tom Hanks photo is a 112 px aligned
crop and its group photo's faces are small, both below intake's minimum.) Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portrait.faces.meters import DlibMeter  # noqa: E402
from portrait.faces.base import iou  # noqa: E402
from portrait.imageio import load_rgb, save_image  # noqa: E402
from portrait.jobs import PortraitPipeline, RunConfig  # noqa: E402
from portrait.post.seam import seam_delta_e  # noqa: E402
from portrait.post.skin_tone import skin_tone  # noqa: E402
from portrait.samples import write_sample_photos  # noqa: E402
from portrait.templates.choice import AutoRequest, UserLook, candidates, choose  # noqa: E402
from portrait.templates import list_templates, load_template  # noqa: E402

TEMPLATE_PEOPLE = {"light (hall-office)": "hall-office", "light-medium (flag-red-dress)": "flag-red-dress",
                   "medium (flag-dark-suit)": "flag-dark-suit", "dark (flag-black-jacket)": "flag-black-jacket",
                   "dark (flag-elder-suit)": "flag-elder-suit"}


def _variants(rgb: np.ndarray) -> list[np.ndarray]:
    """Five photos of one picture, each in its own light and framing (so none is a duplicate)."""
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float32) / 255.0
    side = np.linspace(0.8, 1.2, w, dtype=np.float32)[None, :, None]
    rot = cv2.warpAffine(rgb, cv2.getRotationMatrix2D((w / 2, h / 2), 6, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT)
    crop = rgb[h // 10: h - h // 10, w // 10: w - w // 10]
    out = [f ** 0.95, f[:, ::-1] ** 1.1, (f * side), (f * np.array([1.08, 1.0, 0.9], np.float32)) ** 0.85]
    photos = [np.clip(x * 255, 0, 255).astype(np.uint8) for x in out]
    photos.append(np.clip(rot.astype(np.float32) * 0.9, 0, 255).astype(np.uint8))
    photos.append(cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC))
    return photos


def people(root: Path) -> dict[str, tuple[Path, set[str]]]:
    """name -> (photos folder, bundled packs of that person, left out of their pool)."""
    out = {}
    samples = root / "astronaut"
    write_sample_photos(samples)
    out["astronaut (samples)"] = (samples, {"astronaut-wide", "classic-bw", "studio-grey", "warm-studio"})
    sources = []
    for label, name in TEMPLATE_PEOPLE.items():
        t = load_template(name)
        same = {x.name for x in list_templates() if x.source.split(" (")[0] == t.source.split(" (")[0]}
        sources.append((label, name, load_rgb(t.image_path), same | {name}))
    for label, name, rgb, own in sources:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(_variants(rgb)):
            save_image(p, folder / f"photo_{i}.jpg", quality=92)
        out[label] = (folder, own)
    return out


def measure(out: Path, result, user: np.ndarray, meter: DlibMeter, user_ita: float) -> tuple[list, list, list]:
    likeness, seams, shifts = [], [], []
    for o in result.outputs:
        png = load_rgb(Path(o.file))
        t = load_template(o.template)
        tpl = t.image()
        face = t.slot_faces()[t.faces[0]]
        s = png.shape[1] / tpl.shape[1]
        # The painted slot's face, not the largest one found (a mission patch can read as a face).
        found = max(meter.faces(png), key=lambda f: iou(f[0], [v * s for v in face.box]), default=None)
        likeness.append(float(np.linalg.norm(found[1] - user)) if found is not None else float("nan"))
        if png.shape != tpl.shape:  # the output is upscaled: measure at the template's size
            png = cv2.resize(png, (tpl.shape[1], tpl.shape[0]), interpolation=cv2.INTER_AREA)
        seams.append(seam_delta_e(png, np.asarray(tpl), face))
        bw = t.measured.get("skin_tone", 0) == 0  # a grey portrait has no tone to keep or lose
        shifts.append(float("nan") if bw else abs(skin_tone(png, face).ita - user_ita))
    return likeness, seams, shifts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="bench-choice-"))
    meter = DlibMeter()
    pipe = PortraitPipeline(RunConfig(variants=1, max_tries=1, upscale="none"))
    pool_all = candidates(list_templates(), AutoRequest(a.n))
    rng = random.Random(19)
    rows = []
    for label, (photos, own) in people(root / "people").items():
        user = np.mean([f[0][1] for f in (meter.faces(load_rgb(p)) for p in sorted(photos.iterdir())) if f], axis=0)
        pool = [t.name for t in pool_all if t.name not in own]
        auto = pipe.run(photos, [f"auto:{a.n}"], root / "runs" / photos.name / "auto")
        # A pack of this very person is no test of the choice: choose again for the look the pipeline
        # measured, from the pool without them, and run that.
        u = auto.auto["user"]
        look = UserLook(u["yaw"], u["ita"], u["skin_tone"])
        chosen = [c.template for c in choose(look, [t for t in pool_all if t.name not in own], a.n)]
        if set(chosen) != {o.template for o in auto.outputs}:
            auto = pipe.run(photos, chosen, root / "runs" / photos.name / "auto-less-own")
        lk, sm, sh = measure(root, auto, user, meter, look.ita)
        rand_lk, rand_sm, rand_sh = [], [], []
        for d in range(a.draws):
            names = rng.sample(pool, a.n)
            res = pipe.run(photos, names, root / "runs" / photos.name / f"random{d}")
            x, y, z = measure(root, res, user, meter, look.ita)
            rand_lk += x
            rand_sm += y
            rand_sh += z
        rows.append((label, ", ".join(o.template for o in auto.outputs), np.nanmean(lk), np.nanmean(rand_lk),
                     np.nanmean(sm), np.nanmean(rand_sm), np.nanmean(sh), np.nanmean(rand_sh)))
    print(f"\nN = {a.n}, {a.draws} random draws per person; outputs in {root}\n")
    print("| person | auto chose | likeness auto | likeness random | seam ΔE auto | seam ΔE random "
          "| tone shift auto | tone shift random |")
    print("|---|---|---|---|---|---|---|---|")
    for label, chosen, *v in rows:
        print(f"| {label} | {chosen} | {v[0]:.3f} | {v[1]:.3f} | {v[2]:.1f} | {v[3]:.1f} | {v[4]:.0f}° | {v[5]:.0f}° |")
    m = np.nanmean(np.array([r[2:] for r in rows], float), axis=0)
    print(f"| **mean** | | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.1f} | {m[3]:.1f} | {m[4]:.0f}° | {m[5]:.0f}° |")


if __name__ == "__main__":
    main()
