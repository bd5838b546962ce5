"""Intake: find the photos, decode each safely at analysis size, and record the facts the report shows.

Decoding goes through `portrait.imageio.decode_image`, which checks sizes from the header before any
pixel is decoded (decompression bombs and oversize files are refused as `too_large`), applies EXIF
orientation, converts every colour mode to RGB and uses JPEG draft decoding to reach `max_side`
cheaply. Intake adds the `too_small` check on the original size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from portrait.errors import ImageError, NoPhotosError
from portrait.imageio import IMAGE_EXTENSIONS, decode_image, folder_entries, unsupported_message

from .config import PreprocessConfig


@dataclass
class IntakeResult:
    """One photo after intake: analysis-size pixels, or the reason it cannot be used."""

    path: Path
    file: str  # the name the report uses (relative to the photos folder)
    pixels: Optional[np.ndarray] = None  # uint8 RGB at analysis size (longer side <= max_side)
    scale: float = 1.0  # pixels' size / original size
    reason: Optional[str] = None  # unreadable | unsupported_format | too_large | too_small
    message: str = ""
    facts: dict = field(default_factory=dict)  # format, mode, original_size, exif_rotated, bytes

    @property
    def ok(self) -> bool:
        return self.reason is None


def list_photos(photos: Path | str | list, skipped: list | None = None) -> tuple[list[Path], Path | None]:
    """The files to judge (sorted) and the folder they are named relative to.

    A folder yields every regular, non-hidden file at its top level, whatever its extension: each gets
    a verdict (a .mov or .txt one of `unsupported_format`). Hidden files and sub-folders are skipped and,
    when `skipped` is a list, appended to it as `{"file", "why"}`. Content is never trusted from the
    extension: a text file named .jpg is listed here and rejected as unreadable later.
    """
    if isinstance(photos, (str, Path)):
        root = Path(photos)
        if not root.exists():
            raise NoPhotosError(f"photos folder {root} does not exist")
        if root.is_file():
            return [root], root.parent
        files, left_out = folder_entries(root)
        if skipped is not None:
            skipped.extend(left_out)
        return files, root
    files = [Path(p) for p in photos]
    parents = {p.parent for p in files}
    return files, (parents.pop() if len(parents) == 1 else None)


def display_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


def intake_photo(path: Path, config: PreprocessConfig, root: Path | None = None,
                 max_side: int | None = None) -> IntakeResult:
    """Decode `path` at analysis size (or `max_side`), or say why it cannot be used."""
    res = IntakeResult(path=path, file=display_name(path, root))
    try:
        res.facts["bytes"] = path.stat().st_size
    except OSError:
        pass
    if path.suffix and path.suffix.lower() not in IMAGE_EXTENSIONS:  # a video, RAW, document: not decoded at all
        res.reason, res.message = "unsupported_format", unsupported_message(path)
        return res
    try:
        dec = decode_image(path, name=res.file, max_side=max_side or config.max_side,
                           max_pixels=config.max_pixels, max_bytes=config.max_bytes)
    except ImageError as exc:
        res.reason, res.message = exc.code, exc.reason
        return res
    except MemoryError:
        res.reason, res.message = "too_large", "not enough memory to decode the image"
        return res
    w, h = dec.original_size
    res.facts.update(format=dec.format, mode=dec.mode, original_size=[w, h], exif_rotated=dec.exif_rotated)
    if min(w, h) < config.min_image_side:
        res.reason = "too_small"
        res.message = f"image is {w}x{h}, the shorter side must be at least {config.min_image_side} px"
        return res
    res.pixels, res.scale = dec.pixels, dec.scale
    return res


def decode_for_crop(path: Path, config: PreprocessConfig, needed_scale: float, turned: int = 0) -> tuple[np.ndarray, float]:
    """Decode a selected photo at the smallest size that keeps `needed_scale` of the original's
    resolution (1.0 = full). JPEG draft decoding makes a half- or quarter-size decode much cheaper.
    Returns the pixels and their scale relative to the original."""
    max_side = None
    if needed_scale < 1.0:
        from PIL import Image

        with Image.open(path) as img:
            max_side = max(1, int(np.ceil(max(img.size) * needed_scale)))
    dec = decode_image(path, max_side=max_side, max_pixels=config.max_pixels, max_bytes=config.max_bytes)
    from .orientation import turn_upright

    return turn_upright(dec.pixels, turned), dec.scale
