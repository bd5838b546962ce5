"""The landmark engines side by side (issues 11 and 17): dlib's 5 points and 68 points, and MediaPipe's
468-point mesh (shipped, Apache-2.0): likeness of classic-fusion portraits, and head pose.

    python bench/landmarks.py [--people DIR] [--faces DIR] [--out DIR]

1. The samples (`portrait samples`) onto the five bundled single-face templates with `portrait run
   --diffusion off --landmarks dlib5|dlib68|mediapipe`: the distance of the largest written face to the mean of
   the sample photos (dlib descriptor; the same person is below 0.6).
2. Person onto person: every person's photo (the astronaut, Grace Hopper, Tom Hanks, and each image
   in --people DIR as a person of its own) fused onto every other's, with five variants of the user
   photo as the reference set; the distance to those variants.
3. Head pose: the 5-point and the mesh's yaw against the 68-point solvePnP yaw on every face of insightface's group
   photo, Tom Hanks, the astronaut, Grace Hopper and the images in --faces DIR, each also mirrored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the shared photo variants

from helpers_photos import same_person_variants  # noqa: E402
from portrait.faces import FaceConfig, get_face_analysis  # noqa: E402
from portrait.imageio import image_files, load_rgb  # noqa: E402
from portrait.post import fusion  # noqa: E402
from portrait.samples import astronaut, grace_hopper_path  # noqa: E402

SINGLE = ("astronaut-wide", "classic-bw", "navy-formal", "studio-grey", "warm-studio")
LANDMARKS = ("dlib5", "dlib68", "mediapipe")
YAW_LIMIT = 35.0


def _insightface_image(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("insightface (pip install -e .[dev]) ships the group photo and Tom Hanks")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / name


def _largest(fa, rgb):
    faces = fa.analyze(rgb)
    return max(faces, key=lambda f: f.size) if faces else None


def samples_table(root: Path) -> None:
    photos = root / "photos"
    subprocess.run([sys.executable, "-m", "portrait", "samples", str(photos)], check=True, capture_output=True)
    meter = get_face_analysis(FaceConfig())
    embs = [f.embedding for f in (_largest(meter, load_rgb(p)) for p in image_files(photos)) if f is not None]
    mean = np.mean(embs, axis=0)
    rows = {}
    for t in SINGLE:
        for lm in LANDMARKS:
            r = subprocess.run([sys.executable, "-m", "portrait", "run", str(photos), "--out", str(root / f"{t}-{lm}"),
                                "--template", t, "--diffusion", "off", "--landmarks", lm, "--variants", "1", "--json"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"portrait run failed on {t} with {lm}:\n{r.stderr}")
            face = _largest(meter, load_rgb(json.loads(r.stdout)["outputs"][0]["file"]))
            rows[t, lm] = meter.distance(face.embedding, mean)
    print("\n1. The samples onto each template (distance to the user; lower is more alike)\n")
    print("| template | " + " | ".join(LANDMARKS) + " |\n" + "|---" * (len(LANDMARKS) + 1) + "|")
    for t in SINGLE:
        print(f"| {t} | " + " | ".join(f"{rows[t, lm]:.3f}" for lm in LANDMARKS) + " |")
    print("| **mean** | " + " | ".join(f"**{np.mean([rows[t, lm] for t in SINGLE]):.3f}**" for lm in LANDMARKS) + " |")


def people_table(people_dir: Path | None) -> None:
    people = {"astronaut": astronaut(), "grace-hopper": load_rgb(grace_hopper_path()),
              "tom-hanks": load_rgb(_insightface_image("Tom_Hanks_54745.png"))}
    for p in image_files(people_dir) if people_dir else []:
        people[p.stem] = load_rgb(p)
    meter = get_face_analysis(FaceConfig())
    d = {}
    for lm in LANDMARKS:
        fa = get_face_analysis(FaceConfig(landmarks=lm))
        for u, urgb in people.items():
            refs = same_person_variants(urgb)
            ref_faces = [_largest(fa, r) for r in refs]
            if any(f is None for f in ref_faces):
                print(f"(skipped {u}: no face on every variant)")
                continue
            user_embs = [_largest(meter, r).embedding for r in refs]
            for t, trgb in people.items():
                tf = _largest(fa, trgb)
                if t == u or tf is None:
                    continue
                i = fusion.pick_reference(ref_faces, tf)
                out = _largest(meter, fusion.fuse(trgb, tf, refs[i], ref_faces[i]).image)
                d[lm, u, t] = float(np.mean([meter.distance(out.embedding, e) for e in user_embs]))
    pairs = sorted({(u, t) for _, u, t in d if all((lm, u, t) in d for lm in LANDMARKS)})
    print(f"\n2. Person onto person, classic fusion ({len(pairs)} pairs; distance to the user)\n")
    print("| user | template's person | " + " | ".join(LANDMARKS) + " |\n|---|---" + "|---" * len(LANDMARKS) + "|")
    for u, t in pairs:
        print(f"| {u} | {t} | " + " | ".join(f"{d[lm, u, t]:.3f}" for lm in LANDMARKS) + " |")
    cols = {lm: np.array([d[lm, u, t] for u, t in pairs]) for lm in LANDMARKS}
    print("| **mean** | | " + " | ".join(f"**{cols[lm].mean():.3f}**" for lm in LANDMARKS) + " |\n")
    for lm in ("dlib5", "mediapipe"):
        diff = cols[lm] - cols["dlib68"]
        print(f"{lm} minus dlib68: mean {diff.mean():+.3f}, worst pair {diff.max():+.3f}; "
              f"{lm} is {'within' if diff.mean() <= 0.02 else 'NOT within'} 0.02 on average")


def pose_table(faces_dir: Path | None) -> None:
    images = {"group photo": _insightface_image("t1.jpg"), "tom-hanks": _insightface_image("Tom_Hanks_54745.png"),
              "grace-hopper": grace_hopper_path()}
    for p in image_files(faces_dir) if faces_dir else []:
        images[p.name] = p
    engines = {lm: get_face_analysis(FaceConfig(landmarks=lm)) for lm in LANDMARKS}
    rows = []  # (dlib5 yaw, mesh yaw, dlib68 yaw) of the same face (the same dlib HOG box)
    for rgb in [astronaut()] + [load_rgb(p) for p in images.values()]:
        for img in (rgb, np.ascontiguousarray(rgb[:, ::-1])):
            found = {lm: {tuple(np.round(f.box / 8).astype(int)): f for f in fa.analyze(img, embed=False)}
                     for lm, fa in engines.items()}
            for box, f68 in found["dlib68"].items():
                if box in found["dlib5"] and box in found["mediapipe"]:
                    rows.append((found["dlib5"][box].yaw, found["mediapipe"][box].yaw, f68.yaw))
    y5, ymesh, y68 = np.array(rows).T
    beyond = np.abs(y68) > YAW_LIMIT
    print(f"\n3. Head pose against the 68-point fit ({len(rows)} faces)\n")
    print("| yaw from | mean abs difference | > 15° off | correlation | beyond 35° caught | others flagged |")
    print("|---|---|---|---|---|---|")
    for name, y in (("dlib5", y5), ("mediapipe mesh", ymesh)):
        flagged = np.abs(y) > YAW_LIMIT
        print(f"| {name} | {np.mean(np.abs(y - y68)):.1f}° | {int(np.sum(np.abs(y - y68) > 15))} | "
              f"{np.corrcoef(y, y68)[0, 1]:.2f} | {int(np.sum(beyond & flagged))} of {int(beyond.sum())} | "
              f"{int(np.sum(~beyond & flagged))} of {int((~beyond).sum())} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=Path, default=None, help="more people: one photo each")
    ap.add_argument("--faces", type=Path, default=None, help="more photos for the pose comparison")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        samples_table(root)
        people_table(args.people)
        pose_table(args.faces)


if __name__ == "__main__":
    main()
