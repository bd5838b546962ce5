"""`portrait samples` and `portrait preprocess`: JSON contract, table, exit codes and advice."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from helpers_photos import relit, save
from portrait.cli import cli
from portrait.imageio import load_rgb
from preprocess import REASONS

pytestmark = pytest.mark.usefixtures("hermetic")  # no user models, templates or device (conftest)

NUM = (int, float)


def _check(value, schema, where="$"):
    """A small JSON-schema subset (type, required, properties, items, enum, nullable) — jsonschema is
    not a dependency."""
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        py = {"object": dict, "array": list, "string": str, "boolean": bool, "number": NUM, "null": type(None),
              "integer": int}
        ok = any(isinstance(value, py[t]) and not (t in ("number", "integer") and isinstance(value, bool))
                 for t in types)
        assert ok, f"{where}: {value!r} is not {types}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in enum"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key!r}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")
    if "minItems" in schema:
        assert len(value) >= schema["minItems"], f"{where}: fewer than {schema['minItems']} items"


POINT = {"type": "array", "items": {"type": "number"}, "minItems": 2}
REPORT_SCHEMA = {
    "type": "object",
    "required": ["photos", "selected", "reference", "engines"],
    "properties": {
        "photos": {"type": "array", "items": {
            "type": "object",
            "required": ["file", "accepted", "reasons", "face", "scores"],
            "properties": {
                "file": {"type": "string"},
                "accepted": {"type": "boolean"},
                "reasons": {"type": "array", "items": {"type": "string", "enum": list(REASONS)}},
                "face": {"type": ["object", "null"], "required": ["box", "landmarks5", "yaw", "pitch", "roll"],
                         "properties": {"box": {"type": "array", "items": {"type": "number"}, "minItems": 4},
                                        "landmarks5": {"type": "array", "items": POINT, "minItems": 5},
                                        "yaw": {"type": "number"}, "pitch": {"type": "number"},
                                        "roll": {"type": "number"}}},
                "scores": {"type": "object",
                           "required": ["identity", "quality", "sharpness", "exposure", "face_size", "pose", "total"],
                           "properties": {k: {"type": ["number", "null"]} for k in
                                          ("identity", "quality", "sharpness", "exposure", "face_size", "pose",
                                           "total")}},
            }}},
        "selected": {"type": "array", "items": {"type": "string"}},
        "reference": {"type": ["string", "null"]},
        "engines": {"type": "object", "required": ["detector", "embedder"]},
    },
}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    runner = CliRunner()
    r = runner.invoke(cli, ["samples", str(d / "photos")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["preprocess", str(d / "photos"), "--out", str(d / "out"), "--json", "--top-k", "6",
                            "--resolution", "256"])
    return d, r


@pytest.mark.slow
def test_samples_are_deterministic(tmp_path, sample_run):
    d, _ = sample_run
    r = CliRunner().invoke(cli, ["samples", str(tmp_path), "--json"])
    assert r.exit_code == 0
    files = json.loads(r.output)["files"]
    assert len(files) == 10
    for name in files:
        assert (tmp_path / name).read_bytes() == (d / "photos" / name).read_bytes()


def test_json_report_contract_and_verdicts(sample_run):
    d, r = sample_run
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    _check(report, REPORT_SCHEMA)
    verdicts = {p["file"]: p["reasons"] for p in report["photos"]}
    assert verdicts.pop("grace_hopper.jpg") == ["different_person"]
    assert verdicts.pop("astronaut_09_copy.jpg") == ["duplicate"]
    assert all(v == [] for v in verdicts.values()) and len(verdicts) == 8
    assert report["ok"] is True and len(report["selected"]) == 6
    assert report["reference"] in report["selected"]
    on_disk = json.loads((d / "out" / "report.json").read_text())
    _check(on_disk, REPORT_SCHEMA)
    assert on_disk["photos"] == report["photos"]
    crops = sorted((d / "out" / "train").glob("*.png"))
    assert len(crops) == 6 and all(load_rgb(c).shape == (256, 256, 3) for c in crops)


def test_table_output(tmp_path, sample_run):
    d, _ = sample_run
    r = CliRunner().invoke(cli, ["preprocess", str(d / "photos"), "--out", str(tmp_path / "o"), "--top-k", "3"])
    assert r.exit_code == 0, r.output
    for text in ("grace_hopper.jpg", "different_person", "duplicate", "reference", "selected", "accepted",
                 "8 of 10 photos accepted"):
        assert text in r.output


@pytest.mark.slow
def test_too_few_photos_exit_2_with_advice(tmp_path, astronaut, grace_hopper_path, group_photo_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (y, x) in enumerate([(0, 0), (40, 60), (80, 20)]):
        save(photos / f"me{i}.jpg", relit(astronaut, gamma=(0.7, 1.0, 1.4)[i])[y:y + 420, x:x + 420])
    shutil.copyfile(grace_hopper_path, photos / "friend.jpg")
    shutil.copyfile(group_photo_path, photos / "party.jpg")
    runner = CliRunner()
    r = runner.invoke(cli, ["preprocess", str(photos), "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 2
    report = json.loads(r.output)
    _check(report, REPORT_SCHEMA)
    assert report["ok"] is False
    assert "Only 3 of 5 photos are usable; at least 4 are needed" in report["message"]
    assert "1 of 5 photos shows another person" in report["message"]
    assert "1 of 5 photos shows several faces" in report["message"]
    r = runner.invoke(cli, ["preprocess", str(photos), "--out", str(tmp_path / "out2")])
    assert r.exit_code == 2 and "Only 3 of 5 photos are usable" in r.output
    r = runner.invoke(cli, ["preprocess", str(photos), "--out", str(tmp_path / "out3"), "--min-photos", "3",
                            "--json", "--trigger", "zkx"])
    assert r.exit_code == 0 and json.loads(r.output)["caption"] == "a photo of zkx person"
    meta = (tmp_path / "out3" / "train" / "metadata.jsonl").read_text().splitlines()
    assert len(meta) == 3 and all(json.loads(m)["text"] == "a photo of zkx person" for m in meta)


def test_bad_options_exit_2(tmp_path):
    tmp_path.joinpath("p").mkdir()
    r = CliRunner().invoke(cli, ["preprocess", str(tmp_path / "p"), "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 2 and json.loads(r.output)["message"].startswith("no photos found")
    r = CliRunner().invoke(cli, ["preprocess", str(tmp_path / "p"), "--out", str(tmp_path / "o"), "--resolution",
                                 "500"])
    assert r.exit_code == 2 and "multiple of 8" in r.output
