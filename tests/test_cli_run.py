"""`portrait run` and `portrait batch` through the CLI: JSON equals result.json, engine lines, bad
templates stopping the run before any photo is read, templates failing while rendering recorded, exit
codes (0 with any output, 2 with none), too few photos, a batch with a missing folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers_photos import SMALL_SET, small_photo_set
from helpers_faults import break_fusion
from portrait.cli import cli
from portrait.imageio import load_rgb
from portrait.templates import load_template

QUICK = ["--upscale", "none", "--variants", "1", "--max-tries", "1"]


# Every test here runs without user models or templates (conftest's module-wide `hermetic`).
pytestmark = pytest.mark.usefixtures("hermetic")


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    return small_photo_set(tmp_path_factory)


@pytest.fixture(scope="module")
def bad_templates(tmp_path_factory) -> dict[str, Path]:
    """Three broken template folders: an image without a face, a corrupt image, bad values."""
    root = tmp_path_factory.mktemp("bad_templates")
    noface = root / "noface"
    noface.mkdir()
    y, x = np.mgrid[0:480, 0:400]
    grad = np.stack([x * 255 // 400, y * 255 // 480, np.full_like(x, 128)], -1).astype(np.uint8)
    Image.fromarray(grad).save(noface / "template.png")
    (noface / "template.toml").write_text('name = "noface"\n')
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "template.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    (corrupt / "template.toml").write_text('name = "corrupt"\n')
    badvalues = root / "badvalues"
    badvalues.mkdir()
    shutil.copy(load_template("navy-formal").image_path, badvalues / "template.jpg")
    (badvalues / "template.toml").write_text('name = "badvalues"\n[inpaint]\nstrength = 5.0\n')
    return {"noface": noface, "corrupt": corrupt, "badvalues": badvalues}


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_run_json_is_result_json(small_dir, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", small_dir, "--template", "navy-formal", "--template", "studio-grey", "--out", out,
               "--upscale-factor", "1", "--json")
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert printed == json.loads((out / "result.json").read_text())
    assert [o["template"] for o in printed["outputs"]] != [] and len(printed["outputs"]) == 2
    dists = [o["distance"] for o in printed["outputs"]]
    assert dists == sorted(dists)
    eng = {k: (v["engine"], v["reason"]) for k, v in printed["engines"].items()}
    assert eng["fusion"] == ("classic", "no inswapper model")
    assert eng["inpaint"][0] == "skipped" and eng["inpaint"][1].startswith("no base model")
    assert eng["upscale"] == ("skipped", "factor 1")
    for o in printed["outputs"]:
        img = load_rgb(o["file"])
        assert img.shape == load_template(o["template"]).image().shape  # factor 1: the template's size
        assert "upscale" not in o["timings"]


def test_bad_templates_stop_the_run_before_any_photo_is_read(small_dir, bad_templates, tmp_path):
    """Every template is checked first: each bad one is named with its reason, the available
    ones are listed, exit 2, and no photo was preprocessed."""
    out = tmp_path / "out"
    r = invoke("run", small_dir, "--template", bad_templates["noface"], "--template", "navy-formal",
               "--template", bad_templates["corrupt"], "--template", bad_templates["badvalues"], "--out", out, *QUICK)
    assert r.exit_code == 2, r.output
    msg = r.stderr
    assert str(bad_templates["noface"] / "template.png") in msg and "no face" in msg
    assert str(bad_templates["corrupt"] / "template.jpg") in msg and "unusable" in msg
    assert str(bad_templates["badvalues"] / "template.toml") in msg and "'inpaint.strength'" in msg and "5.0" in msg
    assert "available templates:" in msg and "studio-grey" in msg
    assert not out.exists()
    r = invoke("run", small_dir, "--template", bad_templates["noface"], "--out", out, "--json", *QUICK)
    assert r.exit_code == 2 and json.loads(r.stdout)["error"] == "bad_template" and not out.exists()


@pytest.mark.slow
def test_when_every_template_fails_there_is_no_empty_table_and_no_portraits_line(small_dir, tmp_path, monkeypatch):
    """Templates that pass the checks can still fail while rendering (here: a fault injected into fusion):
    exit 2, each failure printed, result.json written, but no empty ranking table and no 'portraits in'."""
    break_fusion(monkeypatch)
    out = tmp_path / "out"
    r = invoke("run", small_dir, "--template", "navy-formal", "--template", "studio-grey", "--out", out, *QUICK)
    assert r.exit_code == 2, r.output
    assert r.stdout.count("failed:") == 2 and "injected fault" in r.stdout
    assert "Portraits, most alike first" not in r.stdout and "portraits and result.json in" not in r.stdout
    assert "no portraits: every template failed" in r.stdout
    data = json.loads((out / "result.json").read_text())
    assert data["outputs"] == [] and [f["template"] for f in data["failures"]] == ["navy-formal", "studio-grey"]
    r = invoke("run", small_dir, "--template", "navy-formal", "--out", tmp_path / "o2", "--json", *QUICK)
    assert r.exit_code == 2 and json.loads(r.stdout) == json.loads((tmp_path / "o2" / "result.json").read_text())


def test_unknown_template_name_fails_before_preprocessing(small_dir, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", small_dir, "--template", "no-such-template", "--template", "studio-grey", "--out", out,
               "--json", *QUICK)
    assert r.exit_code == 2, r.output
    err = json.loads(r.stdout)
    assert err["error"] == "bad_template" and "'no-such-template' not found" in err["message"]
    assert "available templates: astronaut-wide, blue-studio, classic-bw" in err["message"] and "auto[:N]" in err["message"]
    assert not out.exists()


@pytest.mark.parametrize("as_json", [False, True])
def test_too_few_photos_exit_2_with_a_message(small_dir, tmp_path, grace_hopper_path, as_json):
    photos = tmp_path / "few"
    photos.mkdir()
    for name in SMALL_SET[:2]:
        shutil.copy(small_dir / name, photos / name)
    shutil.copy(grace_hopper_path, photos / "grace_hopper.jpg")
    out = tmp_path / "out"
    r = invoke("run", photos, "--template", "navy-formal", "--out", out, *(["--json"] if as_json else []))
    assert r.exit_code == 2, r.output
    text = json.loads(r.stdout)["message"] if as_json else r.stderr
    if as_json:
        assert json.loads(r.stdout)["error"] == "not_enough_photos"
    m = re.search(r"only (\d+) usable photo\(s\), at least 4 needed", text)
    assert m and int(m.group(1)) <= 2, text
    assert "report.json" in text and "Traceback" not in r.output
    assert (out / "preprocess" / "report.json").is_file()
    assert not (out / "result.json").exists()


def test_batch_one_good_row_one_missing_folder(small_dir, tmp_path):
    shutil.copytree(small_dir, tmp_path / "alice")
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("photos,templates,name\nalice,navy-formal,alice\nnobody_here,navy-formal;studio-grey,bob\n")
    out = tmp_path / "out"
    r = invoke("batch", manifest, "--out", out, *QUICK)
    assert r.exit_code == 1, r.output  # some rows failed
    rows = json.loads((out / "batch.json").read_text())
    assert [(e["name"], e["status"]) for e in rows] == [("alice", "done"), ("bob", "failed")]
    done, failed = rows
    assert Path(done["result"]) == out / "alice" / "result.json" and Path(done["result"]).is_file()
    assert done["outputs"] == 1 and done["failures"] == 0
    assert done["best"]["template"] == "navy-formal" and done["best"]["distance"] <= 0.6
    assert str(tmp_path / "nobody_here") in failed["message"] and "does not exist" in failed["message"]
    assert "alice: done" in r.stdout and "bob: failed" in r.stdout


def test_batch_with_every_row_failing_exits_2(tmp_path):
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("photos\nmissing_a\nmissing_b\n")
    out = tmp_path / "out"
    r = invoke("batch", manifest, "--out", out, "--json")
    assert r.exit_code == 2, r.output
    rows = json.loads(r.stdout)
    assert [e["status"] for e in rows] == ["failed", "failed"]
    assert rows == json.loads((out / "batch.json").read_text())


def test_batch_manifest_without_photos_column_is_a_clear_error(tmp_path):
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("folder,name\nx,y\n")
    r = invoke("batch", manifest, "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert "'photos' column" in r.stderr and str(manifest) in r.stderr


@pytest.mark.slow
def test_strict_likeness_bar_flag_retries_and_flags(small_dir, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", small_dir, "--template", "studio-grey", "--out", out, "--upscale", "none",
               "--variants", "1", "--max-tries", "3", "--likeness-bar", "0.01")
    assert r.exit_code == 0, r.output  # an output below the bar is still an output
    assert "below bar" in r.stdout
    (o,) = json.loads((out / "result.json").read_text())["outputs"]
    assert o["variants_tried"] == 3 and o["passed_bar"] is False and o["distance"] > 0.01


def test_variants_above_max_tries_is_a_config_error(small_dir, tmp_path):
    r = invoke("run", small_dir, "--template", "studio-grey", "--out", tmp_path / "out", "--variants", "3",
               "--max-tries", "2")
    assert r.exit_code == 2 and "variants (3) cannot exceed max_tries (2)" in r.stderr
    assert not (tmp_path / "out").exists()
