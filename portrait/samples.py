"""Demo photos for the README's run command and for tests, derived only from public-domain portraits
that ship in installed packages (DESIGN.md section 6):

- `skimage.data.astronaut()`: NASA portrait of Eileen Collins (public domain);
- matplotlib's `mpl-data/sample_data/grace_hopper.jpg`: US Navy portrait of Grace Hopper (public domain).

`write_sample_photos(DIR)` writes eight usable variants of the astronaut (a mirror image, and
different framings each in its own light and colour: a side light, brighter, warmer, darker and
re-compressed, a copy stored rotated with an EXIF orientation tag, an upscaled large copy), Grace
Hopper (another person: rejected `different_person`) and an exact copy of the first photo (rejected
`duplicate`), so a demo run shows honest rejections. Duplicates are judged by the face whatever the
framing, so a reframing in the *same* light would be a duplicate: each variant's light differs.
Deterministic: the same bytes every time.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE_FILES = (
    "astronaut_01.jpg",
    "astronaut_02_mirror.jpg",
    "astronaut_03_close.png",
    "astronaut_04_bright.jpg",
    "astronaut_05_warm.webp",
    "astronaut_06_recompressed.jpg",
    "astronaut_07_exif_rotated.jpg",
    "astronaut_08_large.jpg",
    "astronaut_09_copy.jpg",
    "grace_hopper.jpg",
)


def grace_hopper_path() -> Path:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib is not installed; it ships the Grace Hopper sample portrait")
    return Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def _tone(img: np.ndarray, gain=(1.0, 1.0, 1.0), gamma: float = 1.0, side: float = 0.0) -> np.ndarray:
    """Other light: a colour gain, a gamma and (side > 0) a light falling from the right."""
    x = (img.astype(np.float32) / 255.0) ** gamma * np.asarray(gain, np.float32)
    if side:
        x = x * np.linspace(1.0 - side, 1.0 + side, img.shape[1], dtype=np.float32)[None, :, None]
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _save(img: np.ndarray, path: Path, quality: int = 92, exif_orientation: int | None = None) -> Path:
    pil = Image.fromarray(img, "RGB")
    kwargs: dict = {}
    if path.suffix in (".jpg", ".webp"):
        kwargs["quality"] = quality
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    pil.save(path, **kwargs)
    return path


def write_sample_photos(out_dir: str | Path) -> list[Path]:
    """Write the demo photos into `out_dir` (created) and return their paths, sorted."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = astronaut()  # 512x512, face box about (179, 83)-(266, 170)
    written = [
        _save(a, out / "astronaut_01.jpg", 95),
        _save(a[0:420, 40:460][:, ::-1], out / "astronaut_02_mirror.jpg"),
        _save(_resize(_tone(a, gain=(0.88, 0.95, 1.08), side=0.3)[30:330, 80:380], (480, 480)),
              out / "astronaut_03_close.png"),
        _save(_tone(a[0:400, 100:420], gamma=0.75), out / "astronaut_04_bright.jpg"),
        _save(_tone(a[20:480, 0:400], gain=(1.08, 1.0, 0.86)), out / "astronaut_05_warm.webp", 90),
        _save(_tone(a, gamma=1.3)[0:360, 20:400], out / "astronaut_06_recompressed.jpg", 70),
        # Stored turned 90° counter-clockwise with EXIF orientation 6 ("rotate 90° clockwise to view").
        _save(np.ascontiguousarray(np.rot90(_tone(a, gain=(1.04, 0.9, 1.06), gamma=1.1)[10:470, 60:512], 1)),
              out / "astronaut_07_exif_rotated.jpg",
              exif_orientation=6),
        _save(_resize(_tone(a, gain=(0.95, 1.02, 0.9), gamma=0.88, side=-0.2)[0:384, 30:542 - 30], (2000, 1600)),
              out / "astronaut_08_large.jpg", 90),
    ]
    shutil.copyfile(written[0], out / "astronaut_09_copy.jpg")
    shutil.copyfile(grace_hopper_path(), out / "grace_hopper.jpg")
    return sorted(out / name for name in SAMPLE_FILES)
