"""Intake: formats, EXIF, colour modes, limits and refusals, on real photos (no face models needed)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from helpers_photos import (exif_rotated, png_header_bomb, png_real_bomb, rgba_png, save, sparse_file, text_as_jpg,
                            truncated_jpeg)
from preprocess import PreprocessConfig
from preprocess.intake import intake_photo, list_photos

CFG = PreprocessConfig()


def test_exif_rotation_is_applied(tmp_path, astronaut):
    r = intake_photo(exif_rotated(tmp_path / "rot.jpg", astronaut), CFG, tmp_path)
    assert r.ok and r.facts["exif_rotated"] is True
    assert r.pixels.shape == astronaut.shape  # upright again: 512x512 either way, so compare content
    assert np.abs(r.pixels.astype(int) - astronaut.astype(int)).mean() < 6
    turned = np.rot90(astronaut, 1).astype(int)
    assert np.abs(r.pixels.astype(int) - turned).mean() > 30


def test_heic_phone_photo_is_read(tmp_path, astronaut, face_analysis):
    """iPhones save HEIC: it decodes (pillow-heif) to the same picture, and its face is the astronaut's."""
    Image.fromarray(astronaut).save(tmp_path / "IMG_0001.heic", quality=90)
    r = intake_photo(tmp_path / "IMG_0001.heic", CFG, tmp_path)
    assert r.ok and r.facts["format"] == "HEIF" and r.pixels.shape == astronaut.shape
    assert np.abs(r.pixels.astype(int) - astronaut.astype(int)).mean() < 6
    a, b = face_analysis.analyze(r.pixels)[0], face_analysis.analyze(astronaut)[0]
    assert face_analysis.distance(a.embedding, b.embedding) < 0.2


def test_rgba_png_becomes_rgb_on_white(tmp_path, astronaut):
    r = intake_photo(rgba_png(tmp_path / "a.png", astronaut), CFG, tmp_path)
    assert r.ok and r.facts["mode"] == "RGBA" and r.pixels.shape == (512, 512, 3)
    assert (r.pixels[:, :20] == 255).all()
    assert np.array_equal(r.pixels[:, 20:], astronaut[:, 20:])


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16"])
def test_other_colour_modes_become_rgb(tmp_path, astronaut, mode):
    pil = Image.fromarray(astronaut)
    if mode == "I;16":
        arr = (np.asarray(pil.convert("L")).astype(np.uint16) * 257)
        pil = Image.fromarray(arr)
        assert pil.mode.startswith("I;16")
    else:
        pil = pil.convert(mode)
    path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    pil.save(path)
    r = intake_photo(path, CFG, tmp_path)
    assert r.ok, r.message
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == (512, 512, 3)
    grey = np.asarray(Image.fromarray(astronaut).convert("L")).astype(int)
    assert np.abs(r.pixels.astype(int).mean(2) - grey).mean() < 25


def test_webp_and_analysis_size(tmp_path, astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((2400, 2400)))
    r = intake_photo(save(tmp_path / "big.webp", big), CFG, tmp_path)
    assert r.ok and r.facts["format"] == "WEBP" and r.facts["original_size"] == [2400, 2400]
    assert max(r.pixels.shape[:2]) == CFG.max_side and r.scale == pytest.approx(CFG.max_side / 2400, rel=1e-3)


@pytest.mark.parametrize("maker", ["truncated", "text", "empty"])
def test_unreadable(tmp_path, astronaut, maker):
    path = {
        "truncated": lambda: truncated_jpeg(tmp_path / "cut.jpg", astronaut),
        "text": lambda: text_as_jpg(tmp_path / "notes.jpg"),
        "empty": lambda: (tmp_path / "empty.jpg").write_bytes(b"") or tmp_path / "empty.jpg",
    }[maker]()
    r = intake_photo(path, CFG, tmp_path)
    assert r.reason == "unreadable" and r.pixels is None and r.message


def test_too_small(tmp_path, astronaut):
    r = intake_photo(save(tmp_path / "thumb.jpg", astronaut[::3, ::3]), CFG, tmp_path)
    assert r.reason == "too_small" and "171x171" in r.message


def _refused_cheaply(path, config=CFG):
    tracemalloc.start()
    r = intake_photo(path, config, path.parent)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return r, peak


def test_decompression_bomb_header_refused_without_allocating(tmp_path):
    r, peak = _refused_cheaply(png_header_bomb(tmp_path / "bomb.png"))
    assert r.reason == "too_large" and r.message
    assert peak < 5_000_000  # 30 GB claimed; a few KB touched


def test_compressed_bomb_refused_without_allocating(tmp_path):
    path = png_real_bomb(tmp_path / "zeros.png")  # 81 MP of zeros in a small file
    assert path.stat().st_size < 2_000_000
    r, peak = _refused_cheaply(path)
    assert r.reason == "too_large"
    assert peak < 5_000_000  # decoding would need 81 MB (243 MB as RGB)


def test_oversize_file_refused_without_reading(tmp_path, astronaut):
    r, peak = _refused_cheaply(sparse_file(tmp_path / "huge.jpg", 61 * 1024 * 1024))
    assert r.reason == "too_large" and "61.0 MiB, the limit is 60 MiB" in r.message
    assert peak < 1_000_000  # the 61 MiB were never read
    small_limit = PreprocessConfig(max_bytes=10_000)
    r = intake_photo(save(tmp_path / "photo.jpg", astronaut), small_limit, tmp_path)
    assert r.reason == "too_large"


def test_list_photos_skips_hidden_files_and_folders(tmp_path, astronaut):
    save(tmp_path / "b.JPG", astronaut)
    save(tmp_path / "a.png", astronaut)
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("hello")
    text_as_jpg(tmp_path / "c.jpeg")
    (tmp_path / "sub").mkdir()
    skipped: list = []
    files, root = list_photos(tmp_path, skipped)
    assert [f.name for f in files] == ["a.png", "b.JPG", "c.jpeg", "notes.txt"] and root == tmp_path
    assert [s["file"] for s in skipped] == [".hidden.jpg", "sub"]
