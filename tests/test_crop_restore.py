"""Training crops of small faces are restored through the upscale stage's engine, not just resized."""

from __future__ import annotations

import json

import cv2

from portrait.imageio import load_rgb, save_image
from portrait.samples import write_sample_photos
from preprocess import PreprocessConfig, run_preprocess, scoring
from preprocess.crops import make_crop_with_padding


def test_a_120px_face_is_restored_sharper_than_a_plain_resize_with_its_identity_kept(tmp_path, face_analysis):
    paths = write_sample_photos(tmp_path / "samples")
    big = load_rgb(next(p for p in paths if p.name == "astronaut_08_large.jpg"))
    original = max(face_analysis.analyze(big), key=lambda f: f.size)
    s = 120 / original.size  # the sample downscaled so its face is 120 px
    small = cv2.resize(big, (round(big.shape[1] * s), round(big.shape[0] * s)), interpolation=cv2.INTER_AREA)
    (tmp_path / "in").mkdir()
    save_image(small, tmp_path / "in" / "small.png")
    config = PreprocessConfig(min_photos=1)
    result = run_preprocess(tmp_path / "in", tmp_path / "out", config)
    p = result.photos[0]
    assert p.accepted and p.facts["restored"] == "classic", p.message
    entry = json.loads((tmp_path / "out" / "report.json").read_text())["photos"][0]
    assert entry["restored"] == "classic"  # report.json says which crops were restored and by what
    restored = load_rgb(tmp_path / "out" / "train" / p.crop)
    face_small = face_analysis.analyze(small)[0]
    plain, _, _ = make_crop_with_padding(small, face_small, config)  # the plain resize the warp would do
    measured = {}
    for name, crop in (("restored", restored), ("plain", plain)):
        f = face_analysis.analyze(crop)[0]
        measured[name] = (scoring.sharpness_raw(scoring.face_chip(crop, f, 256)),
                          face_analysis.distance(f.embedding, original.embedding))
    assert measured["restored"][0] > 1.15 * measured["plain"][0], measured  # sharper, measured on the face
    # Restoring does not move the identity: within 0.05 of the plain crop's distance to the original photo
    # (measured: restored 0.063, plain 0.093 from the 420 px original).
    assert measured["restored"][1] <= measured["plain"][1] + 0.05, measured
    assert measured["restored"][1] < 0.15, measured


def test_large_faces_and_the_opt_out_are_not_restored(tmp_path):
    paths = write_sample_photos(tmp_path / "samples")
    big = [p for p in paths if p.name == "astronaut_08_large.jpg"]
    r = run_preprocess(big, tmp_path / "o1", PreprocessConfig(min_photos=1))
    assert "restored" not in r.photos[0].facts  # a 420 px face needs no restoring at 512 px
    small = [p for p in paths if p.name == "astronaut_01.jpg"]  # an 87 px face
    r = run_preprocess(small, tmp_path / "o2", PreprocessConfig(min_photos=1, restore_crops=False))
    assert "restored" not in r.photos[0].facts


def test_retouch_crops_is_recorded(tmp_path):
    paths = write_sample_photos(tmp_path / "samples")
    one = [p for p in paths if p.name == "astronaut_03_close.png"]
    r = run_preprocess(one, tmp_path / "o", PreprocessConfig(min_photos=1, retouch_crops=True))
    assert r.photos[0].facts["retouched"] == "classic"
    plain = run_preprocess(one, tmp_path / "p", PreprocessConfig(min_photos=1))
    a = load_rgb(tmp_path / "o" / "train" / r.photos[0].crop).astype(int)
    b = load_rgb(tmp_path / "p" / "train" / plain.photos[0].crop).astype(int)
    diff = abs(a - b)
    assert 0.2 < diff[192:320, 192:320].mean() < 6  # a light touch on the face, not a new picture
    assert diff[:48].mean() < diff[192:320, 192:320].mean() / 3  # the top of the picture hardly moves


def test_retouch_crops_option_on_the_cli(tmp_path):
    from click.testing import CliRunner

    from portrait.cli import cli

    paths = write_sample_photos(tmp_path / "samples")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in paths[:4]:
        (photos / p.name).write_bytes(p.read_bytes())
    res = CliRunner().invoke(cli, ["preprocess", str(photos), "--out", str(tmp_path / "out"), "--retouch-crops",
                                   "--json", "--resolution", "256"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert all(p.get("retouched") == "classic" for p in report["photos"] if p["crop"])


def test_esrgan_restores_when_its_model_is_present(tmp_path):
    """With a Real-ESRGAN file in the models folder (here a tiny random RRDB in the real layout), auto
    restores small-face crops through it, and report.json says so."""
    from helpers_spandrel import tiny_rrdb

    from portrait.faces import FaceConfig

    models = tmp_path / "models"
    models.mkdir()
    rrdb = tiny_rrdb(models / "rrdb.safetensors", scale=4)
    (models / "models.toml").write_text(f'[models.realesrgan-x4]\npath = "{rrdb}"\n')
    paths = write_sample_photos(tmp_path / "samples")
    small = [p for p in paths if p.name == "astronaut_01.jpg"]  # an 87 px face: needs restoring at 512
    config = PreprocessConfig(min_photos=1, face=FaceConfig(models_dir=str(models)))
    r = run_preprocess(small, tmp_path / "out", config)
    assert r.photos[0].facts["restored"] == "esrgan"
    assert load_rgb(tmp_path / "out" / "train" / r.photos[0].crop).shape == (512, 512, 3)
