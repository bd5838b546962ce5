"""Photo builders for the preprocess tests: real public-domain portraits turned into the awkward files
users upload (EXIF-rotated, RGBA, truncated, not an image at all, decompression bombs)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def same_person_variants(rgb: np.ndarray) -> list[np.ndarray]:
    """Other 'photos' of the same person: the original, mirrored, darker, rotated 6°, softer."""
    h, w = rgb.shape[:2]
    rot = cv2.warpAffine(rgb, cv2.getRotationMatrix2D((w / 2, h / 2), 6, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT)
    soft = cv2.resize(cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h))
    dark = np.clip(rgb.astype(np.float32) * 0.8, 0, 255).astype(np.uint8)
    return [rgb, np.ascontiguousarray(rgb[:, ::-1]), dark, rot, soft]


def save(path: Path, img: np.ndarray, quality: int = 92, exif_orientation: int | None = None) -> Path:
    kwargs: dict = {}
    if path.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        kwargs["quality"] = quality
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    Image.fromarray(np.ascontiguousarray(img)).save(path, **kwargs)
    return path


def exif_rotated(path: Path, img: np.ndarray) -> Path:
    """`img` stored turned 90° counter-clockwise with EXIF orientation 6 (viewers turn it back)."""
    return save(path, np.rot90(img, 1), exif_orientation=6)


def rgba_png(path: Path, img: np.ndarray) -> Path:
    alpha = np.full(img.shape[:2], 255, np.uint8)
    alpha[:, :20] = 0  # a transparent strip: becomes white
    Image.fromarray(np.dstack([img, alpha]), "RGBA").save(path)
    return path


def truncated_jpeg(path: Path, img: np.ndarray) -> Path:
    save(path, img)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def text_as_jpg(path: Path) -> Path:
    path.write_text("these are my holiday notes, not a photo\n" * 20)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header claims width x height RGB pixels, with a token IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def png_real_bomb(path: Path, width: int = 9000, height: int = 9000) -> Path:
    """A valid, highly compressible greyscale PNG of width x height (81 MP by default), a few hundred KB
    on disk, written row by row so the test itself never holds the pixels."""
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (a JPEG signature, then a hole)."""
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(size)
    return path


def turned_head(t1: np.ndarray) -> np.ndarray:
    """A strongly turned head (yaw about -60°) from insightface's group photo, alone in the frame."""
    return cv2.resize(t1[30:240, 840:1040], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)


def tiny_face(img: np.ndarray, canvas: int = 1800) -> np.ndarray:
    """`img` pasted small into a large grey canvas."""
    out = np.full((canvas, canvas, 3), 120, np.uint8)
    h, w = img.shape[:2]
    y, x = (canvas - h) // 2, (canvas - w) // 2
    out[y:y + h, x:x + w] = img
    return out


def re_encoded(img: np.ndarray, scale: float, quality: int) -> np.ndarray:
    """The same photo resized and re-encoded as JPEG (what messaging apps do)."""
    import io

    h, w = img.shape[:2]
    small = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def relit(img: np.ndarray, gain=(1.0, 1.0, 1.0), gamma: float = 1.0, side: float = 0.0) -> np.ndarray:
    """The same photo in other light: a colour gain, a gamma, and a light falling from one side
    (`side` > 0: the right side brighter by that fraction, the left darker). Another *photo* to the
    duplicate check, which judges the face's light as well as its shape."""
    x = img.astype(np.float32) / 255.0
    x = x ** gamma * np.asarray(gain, np.float32)
    if side:
        ramp = np.linspace(1.0 - side, 1.0 + side, img.shape[1], dtype=np.float32)[None, :, None]
        x = x * ramp
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


SMALL_SET = ("astronaut_01.jpg", "astronaut_02_mirror.jpg", "astronaut_03_close.png", "astronaut_04_bright.jpg",
             "astronaut_05_warm.webp")


def sample_photo_set(tmp_path_factory, name: str = "samples") -> Path:
    """A new folder holding the bundled demo photos (`portrait samples`: eight astronaut variants, Grace
    Hopper and a copy)."""
    from portrait.samples import write_sample_photos

    d = tmp_path_factory.mktemp(name)
    write_sample_photos(d)
    return d


def small_photo_set(tmp_path_factory, samples: Path | None = None) -> Path:
    """Five astronaut sample photos (no large one): enough for the default --min-photos 4, quick to
    preprocess. `samples`: a sample_photo_set folder to take them from (else one is written)."""
    import shutil

    full = samples or sample_photo_set(tmp_path_factory)
    d = tmp_path_factory.mktemp("small")
    for name in SMALL_SET:
        shutil.copy(full / name, d / name)
    return d


def hopper_photo_set(tmp_path_factory, grace_hopper: np.ndarray) -> Path:
    """Four usable photos of Grace Hopper: the original, a mirror, and a turned and a closer framing each
    in other light (a mere reframing in the same light is rightly a duplicate: the face crop matches)."""
    from portrait.imageio import save_image

    d = tmp_path_factory.mktemp("hopper")
    h, w = grace_hopper.shape[:2]
    variants = [grace_hopper, np.ascontiguousarray(grace_hopper[:, ::-1]),
                cv2.warpAffine(relit(grace_hopper, gamma=0.75), cv2.getRotationMatrix2D((w / 2, h / 2), 8, 0.85),
                               (w, h), borderMode=cv2.BORDER_REPLICATE),
                cv2.resize(relit(grace_hopper, gain=(1.1, 1.0, 0.82))[40:h - 60, 30:w - 30], (w, h - 100),
                           interpolation=cv2.INTER_AREA)]
    for i, v in enumerate(variants):
        save_image(v, d / f"hopper_{i}.jpg")
    return d
