"""Seams and skin tone on the classic path, before and after post/tone.py (issue 17 item 5):

    python bench/seams.py [--templates N] [--out DIR]

Six people (the astronaut samples and five template people from light to dark skin, as in
bench/template_choice.py) are each fused onto the single-face bundled templates (their own packs left
out) by `portrait.post.fusion.fuse` with MediaPipe's mesh, twice:
- before: `skin="template"`, the face recoloured to the template's skin (Reinhard), feathered edge;
- after:  `skin="user"` (the default now): the user's tone carried to the template's visible skin, the
  template's light on the face, a multi-band blend.
Each output is measured:
- seam ΔE: the colour step from the painted face's border ring to the skin just outside it, less the
  template's own step there (portrait.post.seam; lower is better, under ~3 no one sees an edge);
- likeness: dlib distance of the output's face to the user's photo (portrait/faces/meters.py; lower is
  better, same person below 0.6);
- tone shift: |ITA of the painted face's skin - ITA of the user's own| in degrees (colour templates only;
  lower keeps the user's skin tone);
- neck gap: ΔE between the face's median skin and the skin below the jaw in the output (colour only;
  lower: face and neck read as one person's skin; a shadowed neck keeps some).
- colour cast (black-and-white templates only): the 95th percentile of the painted face's chroma C*ab
  (the print's own is 0; above ~3 a face reads tinted);
- grey likeness (black-and-white templates only): the likeness against the user's photo made grey, a
  fair reading of a grey face (dlib's descriptor reads colour, so a grey face is farther from a colour
  photo of the same person);
- blown skin: the percent of the template's carried skin (changed pixels outside the face) with a channel
  clipped at 255, less the template's own there (lightening a dark template's skin must not clip it).
Prints one markdown table per template and the means; writes a contact sheet (before | after) to --out.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from portrait.faces.meters import DlibMeter  # noqa: E402
from template_choice import people  # noqa: E402
from portrait.faces import FaceConfig, get_face_analysis  # noqa: E402
from portrait.faces.base import iou  # noqa: E402
from portrait.imageio import image_files, load_rgb, save_image  # noqa: E402
from portrait.post import fusion  # noqa: E402
from portrait.post.masks import dilate, face_mask, skin_mask  # noqa: E402
from portrait.post.seam import seam_delta_e  # noqa: E402
from portrait.post.skin_tone import skin_tone, to_lab  # noqa: E402
from portrait.templates import list_templates  # noqa: E402

MODES = (("before", "template"), ("after", "user"))


def neck_gap(rgb: np.ndarray, face) -> float:
    """ΔE between the face's median skin and the median of the skin-coloured pixels in a band below the
    jaw (the neck), nan if too few."""
    h, w = rgb.shape[:2]
    ed = face.eye_distance
    x0, x1 = int(face.box[0] + 0.3 * ed), int(face.box[2] - 0.3 * ed)
    y0 = int(face.box[3] + 0.2 * ed)
    band = np.zeros((h, w), np.uint8)
    band[max(0, y0):min(h, int(y0 + 0.8 * ed)), max(0, x0):max(0, x1)] = 255
    band[face_mask((h, w), face) > 0] = 0
    lab = to_lab(rgb[band > 0])
    if len(lab) < 100:
        return float("nan")
    ref = np.median(to_lab(rgb[skin_mask((h, w), face) > 0]), axis=0)
    near = lab[np.linalg.norm(lab - ref, axis=1) < 30]  # skin, not the collar
    return float(np.linalg.norm(np.median(near, axis=0) - ref)) if len(near) >= 50 else float("nan")


def blown_skin(out: np.ndarray, template: np.ndarray, face) -> float:
    """Percent of the template pixels the fusion changed outside the face (its carried skin) that have a
    channel clipped (255), less the template's own percent there; nan when it changed none."""
    changed = np.any(out != template, axis=-1) & ~(dilate(face_mask(out.shape[:2], face), 8) > 0)
    if np.count_nonzero(changed) < 100:
        return float("nan")
    return 100.0 * float((out[changed].max(-1) == 255).mean() - (template[changed].max(-1) == 255).mean())


def _tile(rgb: np.ndarray, face, size=(192, 240)) -> np.ndarray:
    """Head and neck around `face`, 192 x 240."""
    cx, cy = face.center
    ed = face.eye_distance
    half_w, half_h = 1.7 * ed, 1.7 * ed * size[1] / size[0]
    cy += 0.5 * ed
    m = np.float32([[size[0] / (2 * half_w), 0, -(cx - half_w) * size[0] / (2 * half_w)],
                    [0, size[1] / (2 * half_h), -(cy - half_h) * size[1] / (2 * half_h)]])
    return cv2.warpAffine(np.asarray(rgb), m, size, flags=cv2.INTER_AREA, borderValue=(255, 255, 255))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", type=int, default=12, help="how many single-face templates (the first N)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--fringe", choices=fusion.FRINGES, default="keep", help="the fusion's fringe rule (both modes)")
    a = ap.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="bench-seams-"))
    root.mkdir(parents=True, exist_ok=True)
    fa = get_face_analysis(FaceConfig(landmarks="mediapipe"))
    meter = DlibMeter()
    singles = [t for t in list_templates() if len(t.faces) == 1][:a.templates]
    tpl = {t.name: (t.image(), t.slot_faces(fa)[t.faces[0]], t.measured.get("skin_tone", 0) == 0) for t in singles}
    stats: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    sheet_rows = []
    for label, (photos, own) in people(root / "people").items():
        files = image_files(photos)
        user_rgb = load_rgb(files[0])
        user_face = max(fa.analyze(user_rgb, embed=False), key=lambda f: f.size)
        user_emb = meter.faces(user_rgb)[0][1]
        grey_user = np.repeat(cv2.cvtColor(user_rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
        grey_emb = meter.faces(grey_user)[0][1]
        user_ita = skin_tone(user_rgb, user_face).ita
        row = []
        for name, (trgb, tface, bw) in tpl.items():
            if name in own:
                continue
            for mode, skin in MODES:
                out = fusion.fuse(np.asarray(trgb), tface, user_rgb, user_face, skin=skin, fringe=a.fringe).image
                found = meter.faces(out)  # the painted slot's face, not the largest one (a patch can read as one)
                face = max(found, key=lambda f: iou(f[0], tface.box), default=None)
                lk = float(np.linalg.norm(face[1] - user_emb)) if face is not None else float("nan")
                seam = seam_delta_e(out, np.asarray(trgb), tface)
                face_ita = skin_tone(out, tface).ita
                shift = float("nan") if bw else abs(face_ita - user_ita)
                gap = float("nan") if bw else neck_gap(out, tface)
                cast = lk_grey = float("nan")
                if bw:
                    chroma = np.hypot(*to_lab(out[face_mask(out.shape[:2], tface) > 0])[:, 1:].T)
                    cast = float(np.percentile(chroma, 95))
                    lk_grey = float(np.linalg.norm(face[1] - grey_emb)) if face is not None else float("nan")
                blown = blown_skin(out, np.asarray(trgb), tface)
                stats.setdefault((name, mode), []).append((seam, lk, shift, gap, cast, lk_grey, blown))
                if len(row) < 8:
                    row.append(_tile(out, tface))
        sheet_rows.append(np.hstack([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=255) for t in row]))
    width = max(r.shape[1] for r in sheet_rows)
    sheet = np.vstack([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in sheet_rows])
    save_image(sheet, root / "seams-contact-sheet.jpg", quality=90)

    print("\n| template | seam ΔE before | seam ΔE after | likeness before | likeness after | tone shift before | "
          "tone shift after | neck ΔE before | neck ΔE after | BW cast before | BW cast after | "
          "grey likeness before | grey likeness after | blown skin % before | blown skin % after |")
    print("|---" * 15 + "|")
    means = {m: [] for m, _ in MODES}
    for name in tpl:
        b, f = np.array(stats[name, "before"]), np.array(stats[name, "after"])
        means["before"].append(b)
        means["after"].append(f)
        cells = []
        for k in range(7):
            cells += [f"{np.nanmean(b[:, k]):.{3 if k in (1, 5) else 1}f}", f"{np.nanmean(f[:, k]):.{3 if k in (1, 5) else 1}f}"]
        print(f"| {name} | " + " | ".join(c.replace("nan", "–") for c in cells) + " |")
    b, f = np.vstack(means["before"]), np.vstack(means["after"])
    cells = []
    for k in range(7):
        cells += [f"**{np.nanmean(b[:, k]):.{3 if k in (1, 5) else 1}f}**", f"**{np.nanmean(f[:, k]):.{3 if k in (1, 5) else 1}f}**"]
    print("| **mean** | " + " | ".join(cells) + " |")
    print(f"\n{len(b)} fusions per column; contact sheet (each pair: before, after): {root / 'seams-contact-sheet.jpg'}")


if __name__ == "__main__":
    main()
