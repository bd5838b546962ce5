"""Safe decoding of untrusted image files into numpy uint8 RGB (H, W, 3).

Sizes are checked from the header before any pixel is decoded, so a decompression bomb or an
oversize file is refused without allocating the full image. EXIF orientation is applied; RGBA,
palette, CMYK, 16-bit and grayscale images are converted to RGB. GIF and animated WebP give their
first frame. Limits are stated in one unit each: MiB for file size, MP (10^6 pixels) for dimensions.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

try:  # HEIC/HEIF from phones; optional at import time so a broken wheel never blocks JPEG users
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except Exception:  # pragma: no cover - depends on the platform's wheel
    HEIF_SUPPORTED = False

ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "HEIF", "AVIF", "BMP", "TIFF", "GIF"})
# File names listed as images in a folder (the decoder still checks the content, never the name).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp",
                              ".dib", ".tif", ".tiff", ".gif"})
READ_FORMATS_TEXT = "JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF (first frame), BMP or TIFF"
DEFAULT_MAX_PIXELS = 64_000_000  # 64 MP: larger than any phone photo, far below a bomb
DEFAULT_MAX_BYTES = 60 * 1024 * 1024  # 60 MiB
MIB = 1024 * 1024


def mib(n: float) -> str:
    """Bytes as MiB, the one unit every file-size limit is stated in."""
    return f"{n / MIB:.1f} MiB" if n < 100 * MIB else f"{n / MIB:.0f} MiB"


def mp(n: float) -> str:
    """Pixels as MP (10^6 pixels), the one unit every dimension limit is stated in."""
    return f"{n / 1e6:.1f} MP" if n < 100e6 else f"{n / 1e6:.0f} MP"


def limits_text(max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """`60 MiB and 64 MP`: the limits as the README, the per-photo message and the advice state them."""
    return f"{max_bytes / MIB:g} MiB and {max_pixels / 1e6:g} MP"


def unsupported_message(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    kind = f"a {ext} file" if ext else "a file without an extension"
    return f"{kind} is not a photo format portrait reads ({READ_FORMATS_TEXT})"

# Pillow's own bomb guard is a second line of defence behind our header check.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class DecodedImage:
    """An image as decoded: pixels plus facts the intake reports."""

    pixels: np.ndarray  # uint8 RGB (H, W, 3), EXIF orientation applied, possibly downscaled
    original_size: tuple[int, int]  # (width, height) in the file, after EXIF rotation
    format: str
    mode: str  # the file's colour mode before conversion
    exif_rotated: bool
    scale: float  # pixels' size / original size (1.0 when not downscaled)


def _open_checked(source: str | Path | bytes, name: str | None, max_pixels: int, max_bytes: int):
    label = name or (str(source) if not isinstance(source, bytes) else None)
    if isinstance(source, bytes):
        size = len(source)
        fp = io.BytesIO(source)
    else:
        try:
            size = os.stat(source).st_size
        except OSError as exc:
            raise ImageError(label, "unreadable", f"cannot read file ({exc.strerror})") from exc
        fp = None
    if size > max_bytes:
        raise ImageError(label, "too_large", f"file is {mib(size)}, the limit is {max_bytes / MIB:g} MiB")
    if size == 0:
        raise ImageError(label, "unreadable", "file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp if fp is not None else source)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise ImageError(label, "unreadable", "not an image file (unrecognised format)") from exc
        raise ImageError(label, "too_large", _bomb_message(exc, max_pixels)) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(label, "unreadable", f"corrupt image header ({exc})") from exc
    if img.format not in ALLOWED_FORMATS:
        img.close()
        raise ImageError(label, "unsupported_format", f"a {img.format} image is not a photo format portrait reads "
                                                      f"({READ_FORMATS_TEXT})")
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageError(label, "too_large", f"image is {w}x{h} ({mp(w * h)}), the limit is {max_pixels / 1e6:g} MP")
    return img, label


@dataclass(frozen=True)
class ProbedImage:
    size: tuple[int, int]  # (width, height) as displayed (EXIF rotation applied)
    format: str


def probe_image(source: str | Path | bytes, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                max_bytes: int = DEFAULT_MAX_BYTES) -> ProbedImage:
    """Check an image from its header and its container's own checksums (`Image.verify`: chunk CRCs for a
    PNG), without decoding its pixels: a few KB of memory for any size. ImageError as decode_image's.
    (A pixel stream broken inside valid chunks shows only when the image is decoded.)"""
    img, label = _open_checked(source, name, max_pixels, max_bytes)
    try:
        fmt = img.format or "unknown"
        w, h = img.size
        try:
            img.verify()  # must come straight after open
        except Exception as exc:
            raise ImageError(label, "unreadable", f"corrupt image data ({exc})") from exc
    finally:
        img.close()
    img, _ = _open_checked(source, name, max_pixels, max_bytes)  # verify spent the first one
    try:
        if fmt == "PNG":  # PNG's getexif() decodes the whole image to look past the pixels: the header only
            exif = Image.Exif()
            if img.info.get("exif"):
                exif.load(img.info["exif"])
        else:
            exif = img.getexif()
        if int(exif.get(0x0112, 1) or 1) in (5, 6, 7, 8):
            w, h = h, w
    except Exception:  # a broken EXIF block is not a broken image
        pass
    finally:
        img.close()
    return ProbedImage((w, h), fmt)


def _bomb_message(exc: BaseException, max_pixels: int) -> str:
    """Pillow's bomb guard fired before our header check: state the size and the limit in MP."""
    m = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"image is {mp(int(m.group(1)))}" if m else "image dimensions are over the limit"
    return f"{size}, the limit is {max_pixels / 1e6:g} MP"


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DecodedImage:
    """Decode `source` (a path or the file's bytes) into RGB, refusing bad or oversize input.

    `max_side` downscales (with JPEG draft decoding when possible) so the longer side is at most
    `max_side`; the returned `scale` maps coordinates back to the original.
    Raises ImageError with code `unreadable`, `unsupported_format` or `too_large`.
    """
    img, label = _open_checked(source, name, max_pixels, max_bytes)
    try:
        fmt, mode = img.format, img.mode
        orientation = 1
        try:
            orientation = int(img.getexif().get(0x0112, 1) or 1)
        except Exception:  # a broken EXIF block is not a broken image
            orientation = 1
        w, h = img.size
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        if max_side and fmt == "JPEG" and max(w, h) > max_side:
            # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: fast and small.
            # Aspect-correct request (file orientation): the largest reduction keeping the long side >= max_side.
            sw, sh = img.size
            img.draft("RGB", (-(-max_side * sw // max(sw, sh)), -(-max_side * sh // max(sw, sh))))
        try:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # GIF / animated WebP / multi-page TIFF: the first frame
            img.load()
            img = ImageOps.exif_transpose(img) if orientation != 1 else img
            img = _to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise ImageError(label, "too_large", _bomb_message(exc, max_pixels)) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(label, "unreadable", f"corrupt or truncated image data ({exc})") from exc
        if max_side and max(img.size) > max_side:
            s = max_side / max(img.size)
            new = (max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s)))
            img = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
        pixels = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
        return DecodedImage(
            pixels=pixels,
            original_size=(w, h),
            format=fmt or "unknown",
            mode=mode,
            exif_rotated=orientation != 1,
            scale=pixels.shape[1] / w,
        )
    finally:
        img.close()


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder, sorted: image extensions in any case, hidden files skipped."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def folder_entries(folder: str | Path) -> tuple[list[Path], list[dict]]:
    """Every file of a folder a user could take for a photo (sorted; each gets a verdict, whatever its
    extension), and what was skipped without one: `[{"file", "why"}]` for hidden files and sub-folders."""
    files, skipped = [], []
    for p in sorted(Path(folder).iterdir()):
        if p.name.startswith("."):
            skipped.append({"file": p.name, "why": "hidden file" if not p.is_dir() else "hidden folder"})
        elif p.is_dir():
            skipped.append({"file": p.name, "why": "a folder (photos are read from the top level only)"})
        elif p.is_file():
            files.append(p)
        else:
            skipped.append({"file": p.name, "why": "not a regular file"})
    return files, skipped


def load_rgb(source: str | Path | bytes, **kwargs) -> np.ndarray:
    """Shortcut: the decoded pixels only."""
    return decode_image(source, **kwargs).pixels


def save_image(image: np.ndarray, path: str | Path, quality: int = 95) -> Path:
    """Write a uint8 RGB array as PNG/JPEG/WebP (by extension), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"save_image expects uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    pil = Image.fromarray(image, "RGB")
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        pil.save(path, quality=quality)
    elif ext == ".webp":
        pil.save(path, quality=quality)
    else:
        pil.save(path)
    return path


def check_rgb(image: np.ndarray, what: str = "image") -> None:
    """Raise ValueError unless `image` is a uint8 RGB (H, W, 3) array (diffusers-style input check)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
