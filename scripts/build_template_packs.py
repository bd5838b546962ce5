"""Build the bundled template packs from official portraits of members of the US Congress.

    python scripts/build_template_packs.py SRC_DIR [--dest templates] [--only NAME ...]

SRC_DIR holds the source photos named BIOGUIDE_ID.jpg: the `congress/original/` files of the public
repository unitedstates/images (the copies used here came from civicsense2025/civic-sense-main,
`public/images/congress/118/ID/original.jpg`, which mirrors them). Official portraits of members of
Congress are works of the US government (17 U.S.C. 105), free to redistribute.

Each pack is one row of PACKS: the source photo(s), its framing, setting and colour. The script crops
head-and-shoulders packs around the face, keeps the long side at most LONG_SIDE (and at least 1024),
makes `bw` packs grey, sets side-by-side pairs and trios, and adds each with `add_template`, which
checks the face slots, writes the face cache, preview.jpg and the [measured] skin tone and yaw. The
`view` tag (frontal or three-quarter) comes from the measured yaw. Rerun it to rebuild a pack.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portrait.faces import FaceConfig, get_face_analysis  # noqa: E402
from portrait.imageio import decode_image, save_image  # noqa: E402
from portrait.templates import add_template, parse_template  # noqa: E402

LONG_SIDE = 1280
UPSTREAM = "unitedstates/images congress/original/{id}.jpg"
MIRROR = "civicsense2025/civic-sense-main public/images/congress/118/{id}/original.jpg"
LICENCE = ("public-domain: official portrait of a member of the US Congress, a work of the US government "
           "(17 U.S.C. 105)")
PROMPT = "a formal official portrait photo, {what}, soft studio light, sharp focus"

# name, source id(s), framing (hs: head-and-shoulders crop, half: as photographed), setting, colour, backdrop
PACKS = [
    ("field-outdoor", ["A000375"], "half", "outdoor", "colour", "a cotton field under a blue sky"),
    ("flag-burgundy", ["B001313"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-navy-suit", ["C001125"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-black-jacket", ["H001081"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-elder-suit", ["O000086"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-pearls", ["S001159"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-grey-suit", ["T000486"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-white-blazer", ["W000788"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-red-dress", ["S001135"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-dark-suit", ["K000389"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-young-dark", ["J000305"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-teal-blouse", ["E000299"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-red-jacket", ["L000273"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-blue-tie", ["G000585"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-pink-jacket", ["M001215"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-veteran", ["B001301"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("hall-office", ["F000468"], "half", "office", "colour", "a marble hall"),
    ("dark-studio", ["L000595"], "half", "studio", "colour", "a dark studio backdrop"),
    ("grey-studio-close", ["D000628"], "half", "studio", "colour", "a plain grey-blue backdrop"),
    ("corridor-office", ["S001197"], "half", "office", "colour", "a columned corridor"),
    ("blue-studio", ["H001086"], "half", "studio", "colour", "a plain blue backdrop"),
    ("flag-green-jacket", ["L000590"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-magenta", ["S000168"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-black-dress", ["M000317"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("flag-elder-tie", ["B001307"], "half", "formal", "colour", "flags on a blue backdrop"),
    ("flag-blue-jacket", ["M001135"], "hs", "formal", "colour", "flags on a blue backdrop"),
    ("classic-bw-suit", ["C001125"], "hs", "studio", "bw", "a plain backdrop, black and white"),
    ("classic-bw-blouse", ["E000299"], "hs", "studio", "bw", "a plain backdrop, black and white"),
    ("pair-flags", ["G000585", "L000273"], "hs", "formal", "colour", "two people side by side, flags behind"),
    ("pair-bw", ["W000788", "C001125"], "hs", "studio", "bw", "two people side by side, black and white"),
    ("trio-flags", ["H001081", "M000317", "G000585"], "hs", "formal", "colour",
     "three people side by side, flags behind"),
]


def _largest_face(rgb: np.ndarray, fa) -> np.ndarray:
    faces = fa.analyze(rgb, embed=False)
    if not faces:
        raise SystemExit("no face found")
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).box


def _fit(rgb: np.ndarray, long_side: int = LONG_SIDE) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = long_side / max(h, w)
    return rgb if s >= 1 else cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _head_and_shoulders(rgb: np.ndarray, fa) -> np.ndarray:
    """A 4:5 crop 3.4 face widths wide, the face in its upper half."""
    h, w = rgb.shape[:2]
    small = _fit(rgb, 1024)
    k = w / small.shape[1]
    x0, y0, x1, y1 = _largest_face(small, fa) * k
    fw = x1 - x0
    cw = min(w, fw * 3.4)
    ch = min(h, cw * 1.25)
    cw = ch / 1.25
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(np.clip(cx - cw / 2, 0, w - cw))
    top = int(np.clip(cy - ch * 0.4, 0, h - ch))
    return rgb[top:top + int(ch), left:left + int(cw)]


def _grey(rgb: np.ndarray) -> np.ndarray:
    y = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().clip(0, 255).astype(np.uint8)
    return np.repeat(y[..., None], 3, axis=2)


def _side_by_side(parts: list[np.ndarray], height: int = 1024) -> np.ndarray:
    import cv2

    scaled = [cv2.resize(p, (round(p.shape[1] * height / p.shape[0]), height), interpolation=cv2.INTER_AREA)
              for p in parts]
    return np.concatenate(scaled, axis=1)


def build(src: Path, dest: Path, only: set[str]) -> None:
    fa = get_face_analysis()
    fa68 = get_face_analysis(FaceConfig(landmarks="dlib68"))
    for name, ids, framing, setting, colour, what in PACKS:
        if only and name not in only:
            continue
        parts = []
        for i in ids:
            rgb = decode_image(src / f"{i}.jpg").pixels
            parts.append(_head_and_shoulders(rgb, fa) if framing == "hs" else rgb)
        img = _side_by_side(parts) if len(parts) > 1 else parts[0]
        img = _fit(img)
        if colour == "bw":
            img = _grey(img)
        if max(img.shape[:2]) < 1024:
            raise SystemExit(f"{name}: long side {max(img.shape[:2])} < 1024")
        tags = ["head-and-shoulders" if framing == "hs" else "half-length", setting, colour]
        if len(ids) > 1:
            tags.append("group")
        sources = "; ".join(f"{UPSTREAM.format(id=i)} (via {MIRROR.format(id=i)})" for i in ids)
        with tempfile.TemporaryDirectory() as tmp:
            path = save_image(img, Path(tmp) / f"{name}.jpg", quality=95)
            t = add_template(path, name, dest, face_analysis=fa, overwrite=True, quality=86,
                             faces=list(range(len(ids))), source=sources, licence=LICENCE, tags=tags,
                             description=(what[0].upper() + what[1:] if len(ids) > 1 else f"A person before {what}")
                             + f" ({'head and shoulders' if framing == 'hs' else 'half length'})",
                             prompt=PROMPT.format(what=what))
        view = "three-quarter" if abs(t.measured.get("yaw", 0.0)) >= 15 else "frontal"
        doc = tomllib.loads(t.toml_path.read_text(encoding="utf-8"))
        doc["tags"] = [*doc["tags"], view]
        t.toml_path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        t = parse_template(t.directory)
        t.detected_faces(fa68)  # the dlib68 face cache too, so runs under either landmark model never detect
        print(f"{name:<20} {img.shape[1]}x{img.shape[0]} tags {' '.join(t.tags)} measured {t.measured}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--dest", type=Path, default=ROOT / "templates")
    ap.add_argument("--only", nargs="*", default=[])
    a = ap.parse_args()
    build(a.src, a.dest, set(a.only))


if __name__ == "__main__":
    main()
