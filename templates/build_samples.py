"""Build the sample templates from public-domain images that ship in installed packages.

    python templates/build_samples.py          # rewrites templates/<name>/ (image + template.toml)

Sources: skimage.data.astronaut() (NASA portrait of Eileen Collins) and matplotlib's
grace_hopper.jpg (US Navy portrait). Nothing is downloaded; the output is deterministic.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import tomli_w

HERE = Path(__file__).resolve().parent
GREY = (128, 130, 134)


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _hopper() -> np.ndarray:
    from portrait.imageio import load_rgb

    spec = importlib.util.find_spec("matplotlib")
    return load_rgb(Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "sample_data" / "grace_hopper.jpg")


def _person_mask(rgb: np.ndarray, rect: tuple[int, int, int, int], face_box) -> np.ndarray:
    """GrabCut seeded by a rectangle around the person and the face box as sure foreground; float 0..1."""
    mask = np.full(rgb.shape[:2], cv2.GC_BGD, np.uint8)
    x, y, w, h = rect
    mask[y:y + h, x:x + w] = cv2.GC_PR_FGD
    x0, y0, x1, y1 = (int(v) for v in face_box)
    mask[y0:y1, x0:x1] = cv2.GC_FGD
    # The neck and chest below the face are the person too (dark collars fool the colour model).
    fw = x1 - x0
    mask[y1:y + h, x0 + fw // 4:x1 - fw // 4] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    if n > 1:  # keep the component holding the face
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        fg = (labels == labels[cy, cx]).astype(np.uint8) * 255
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    return cv2.GaussianBlur(fg.astype(np.float32) / 255.0, (0, 0), 2.0)


def _backdrop(h: int, w: int, colour=GREY) -> np.ndarray:
    """A studio backdrop: flat colour with a soft radial falloff."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / w) ** 2 + ((yy - h * 0.4) / h) ** 2)
    shade = (1.15 - 0.5 * r)[..., None]
    return np.clip(np.array(colour, np.float32) * shade, 0, 255)


def _composite(rgb: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(rgb.astype(np.float32) * a + bg * (1 - a) + 0.5, 0, 255).astype(np.uint8)


def _face_box(rgb: np.ndarray):
    from portrait.faces import get_face_analysis

    return get_face_analysis().analyze(rgb, embed=False)[0].box


def studio_grey(astro: np.ndarray) -> np.ndarray:
    box = _face_box(astro)
    alpha = _person_mask(astro, (60, 10, 400, 502), box)
    out = _composite(astro, alpha, _backdrop(*astro.shape[:2]))
    crop = out[10:400, 70:380]  # head and shoulders
    return cv2.resize(crop, (480, 604), interpolation=cv2.INTER_LANCZOS4)


def warm(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    f = f * np.array([1.08, 1.0, 0.86], np.float32) + np.array([6, 2, -4], np.float32)
    return np.clip(f, 0, 255).astype(np.uint8)


def classic_bw(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = np.clip((g - 128) * 1.15 + 128, 0, 255)
    h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1.0 - 0.35 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / 2
    g = np.clip(g * vignette, 0, 255).astype(np.uint8)
    return np.dstack([g, g, g])


def duo(astro: np.ndarray, hopper: np.ndarray) -> np.ndarray:
    """The astronaut and Grace Hopper side by side on one backdrop (two face slots)."""
    bg = (90, 100, 120)
    halves = []
    for img, rect in ((astro, (60, 10, 400, 502)), (hopper, (30, 60, 452, 540))):
        box = _face_box(img)
        cut = _composite(img, _person_mask(img, rect, box), _backdrop(*img.shape[:2], bg))
        # Faces 150 px wide, centred; the face sits at y = 170 unless that would lift the photo's
        # bottom edge above the canvas' (then the photo is anchored to the bottom).
        s = 150.0 / float(box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2 * s, (box[1] + box[3]) / 2 * s
        ty = max(170 - cy, 512 - img.shape[0] * s)
        m = np.array([[s, 0, 200 - cx], [0, s, ty]], np.float32)
        halves.append(cv2.warpAffine(cut, m, (400, 512), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
    return np.hstack(halves)


SAMPLES = {
    "studio-grey": dict(description="Head and shoulders on a studio-grey backdrop (NASA astronaut portrait, "
                                    "public domain)", prompt="a professional studio headshot of a person, "
                                    "soft key light, grey seamless backdrop, sharp focus"),
    "astronaut-wide": dict(description="Wide framing: the NASA astronaut portrait with flag and shuttle "
                                       "(public domain)", prompt="an official portrait photo of an astronaut in an "
                                       "orange flight suit, flag and space shuttle model behind"),
    "warm-studio": dict(description="Warm-toned head and shoulders (derived from the NASA astronaut portrait)",
                        prompt="a warm golden-hour studio portrait of a person, soft light, film look",
                        edge={"strength": 0.3, "steps": 20, "controlnets": {"tile": 1.0, "canny": 0.3}}),
    "classic-bw": dict(description="Black-and-white classic portrait with a vignette (derived from the NASA "
                                   "astronaut portrait)", prompt="a classic black and white studio portrait, "
                                   "high contrast, film grain", negative_prompt="colour, blurry, deformed"),
    "navy-formal": dict(description="Formal portrait in uniform before a flag (US Navy portrait of Grace Hopper, "
                                    "public domain): the demo's template of another person",
                        prompt="a formal official portrait photo of a person in a navy uniform and cap, flag behind, "
                               "studio light, sharp focus"),
    "duo": dict(description="Two people side by side (NASA astronaut and US Navy Grace Hopper portraits, "
                            "public domain): each face slot can take a different identity", faces=[0, 1],
                prompt="a portrait photo of two people side by side, studio backdrop"),
}


def build(out_dir: Path = HERE) -> list[Path]:
    astro, hopper = _astronaut(), _hopper()
    grey = studio_grey(astro)
    images = {"studio-grey": grey, "astronaut-wide": astro, "warm-studio": warm(grey), "classic-bw": classic_bw(grey),
              "navy-formal": hopper, "duo": duo(astro, hopper)}
    written = []
    for name, img in images.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "template.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        doc = {"name": name, "image": "template.jpg", "seed": 1234, **SAMPLES[name]}
        (folder / "template.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
        written.append(folder)
    return written


if __name__ == "__main__":
    from portrait.faces import FaceConfig, get_face_analysis
    from portrait.templates import parse_template

    for folder in build():
        for old in folder.glob(".faces*.json"):  # regenerated: slots chosen by portrait.templates.slots
            old.unlink()
        t = parse_template(folder)
        faces = t.slot_faces()
        # The commercial policy's engines (dlib 5-point landmarks) get their cache too: no detection at run time.
        t.slot_faces(get_face_analysis(FaceConfig(landmarks="dlib5")))
        print(f"{t.name}: {t.image_path.stat().st_size // 1024} KB, face slots {sorted(faces)}")
