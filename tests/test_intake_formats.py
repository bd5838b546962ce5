"""Every file a user could take for a photo gets a verdict; limits are stated in one
unit with the actual and allowed numbers; an empty folder has its own code."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers_photos import png_header_bomb, save, sparse_file
from portrait.cli import cli
from portrait.errors import NoPhotosError
from portrait.imageio import decode_image
from preprocess import PreprocessConfig, run_preprocess, verdict_message
from preprocess.intake import intake_photo


@pytest.fixture(scope="module")
def mixed_formats(tmp_path_factory, astronaut):
    d = tmp_path_factory.mktemp("formats")
    a = astronaut
    Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "party.gif")
    Image.fromarray(a[0:480, 20:500]).save(d / "scan.bmp")
    Image.fromarray(a[10:490, 0:480]).save(d / "print.tiff")
    # An animated WebP: the first frame is the astronaut, the second a grey card.
    frames = [Image.fromarray(a[20:500, 30:510]), Image.new("RGB", (480, 480), (128, 128, 128))]
    frames[0].save(d / "clip.webp", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (d / "notes.txt").write_text("not a photo\n")
    (d / "holiday.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + b"\x00" * 4000)
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    (d / "thumbs").mkdir()
    save(d / "thumbs" / "small.jpg", a[::4, ::4])
    out = d / "out"
    result = run_preprocess(d, out, PreprocessConfig(min_photos=1, resolution=256))
    return result, json.loads((out / "report.json").read_text())


def test_each_file_gets_its_verdict(mixed_formats):
    result, report = mixed_formats
    verdicts = {p["file"]: p for p in report["photos"]}
    assert set(verdicts) == {"party.gif", "scan.bmp", "print.tiff", "clip.webp", "notes.txt", "holiday.mov"}
    for name in ("party.gif", "scan.bmp", "print.tiff", "clip.webp"):
        assert verdicts[name]["face"] is not None, verdicts[name]
        assert "unreadable" not in verdicts[name]["reasons"] and "no_face" not in verdicts[name]["reasons"]
    for name, ext in (("notes.txt", ".txt"), ("holiday.mov", ".mov")):
        assert verdicts[name]["reasons"] == ["unsupported_format"]
        assert ext in verdicts[name]["message"]
    assert {s["file"]: s["why"] for s in report["skipped"]} == {
        ".DS_Store": "hidden file", "thumbs": "a folder (photos are read from the top level only)"}


def test_animated_webp_and_gif_give_their_first_frame(mixed_formats, astronaut, tmp_path):
    result, _ = mixed_formats
    frame = decode_image(result.photo("clip.webp").path).pixels
    assert frame.shape == (480, 480, 3) and frame.std() > 30  # the astronaut, not the grey card
    frames = [Image.fromarray(astronaut), Image.new("RGB", (512, 512), (0, 0, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    first = decode_image(tmp_path / "a.gif").pixels
    assert first.mean() > 60 and np.abs(first.astype(int) - astronaut).mean() < 25


def test_empty_folder_is_no_photos(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / ".hidden.jpg").write_bytes(b"x")
    with pytest.raises(NoPhotosError, match="no photos found"):
        run_preprocess(tmp_path / "photos", None)
    r = CliRunner().invoke(cli, ["preprocess", str(tmp_path / "photos"), "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 2 and json.loads(r.output)["error"] == "no_photos"


def test_size_limits_state_actual_and_allowed_numbers_in_one_unit(tmp_path):
    cfg = PreprocessConfig()
    big = intake_photo(sparse_file(tmp_path / "big.jpg", 61 * 1024 * 1024), cfg)
    assert big.reason == "too_large" and big.message == "file is 61.0 MiB, the limit is 60 MiB"
    wide = intake_photo(png_header_bomb(tmp_path / "wide.png", 12000, 6000), cfg)  # 72 MP claimed
    assert wide.reason == "too_large" and wide.message == "image is 72.0 MP, the limit is 64 MP"
    huge = intake_photo(png_header_bomb(tmp_path / "huge.png", 9000, 8000), PreprocessConfig(max_pixels=50_000_000))
    assert "72.0 MP" in huge.message and huge.message.endswith("the limit is 50 MP")
    tall = intake_photo(png_header_bomb(tmp_path / "tall.png", 6000, 9000), PreprocessConfig(max_pixels=50_000_000))
    assert tall.message == "image is 6000x9000 (54.0 MP), the limit is 50 MP"


def test_summary_advice_states_the_same_limits(tmp_path, astronaut):
    save(tmp_path / "ok.jpg", astronaut)
    sparse_file(tmp_path / "big.jpg", 61 * 1024 * 1024)
    result = run_preprocess(tmp_path, None, PreprocessConfig(min_photos=1))
    assert "1 of 2 photos is too large: send photos under 60 MiB and 64 MP" in verdict_message(result, 1)
    result = run_preprocess(tmp_path, None, PreprocessConfig(min_photos=1, max_bytes=50 * 1024 * 1024))
    assert result.photo("big.jpg").message == "file is 61.0 MiB, the limit is 50 MiB"
    assert "send photos under 50 MiB and 64 MP" in verdict_message(result, 1)


def test_readme_states_the_same_limits():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "over 64 MP or 60 MiB" in readme and "60 MB" not in readme


def test_face_size_message_names_the_condition_that_failed(tmp_path, astronaut):
    import cv2

    # A 126 px face on a 2400 px canvas: big enough in pixels, too small a part of the photo.
    canvas = np.full((2400, 2400, 3), 110, np.uint8)
    canvas[1000:1000 + 741, 1000:1000 + 741] = cv2.resize(astronaut, (741, 741), interpolation=cv2.INTER_CUBIC)[:741, :741]
    path = save(tmp_path / "far.jpg", canvas)
    p = run_preprocess([path], None, PreprocessConfig(min_photos=1)).photos[0]
    assert "face_too_small" in p.reasons, p.message
    assert "of the photo's shorter side (2400 px); at least 6% (144 px) needed" in p.message
    assert "smaller than the 80 px" not in p.message
