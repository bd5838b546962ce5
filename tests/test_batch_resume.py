"""`portrait batch --resume`: rows whose result.json is complete are not run again; the others are."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from portrait.cli import cli
from portrait.samples import write_sample_photos


def _batch(*args: str):
    result = CliRunner().invoke(cli, ["batch", *args, "--variants", "1", "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.output)


@pytest.mark.slow
def test_resume_skips_complete_rows_and_reruns_the_rest(tmp_path):
    write_sample_photos(tmp_path / "photos")
    manifest = tmp_path / "m.csv"
    manifest.write_text("photos,templates,name\nphotos,studio-grey,ann\nphotos,studio-grey,bob\nphotos,classic-bw,cy\n")
    out = tmp_path / "out"
    code, rows = _batch(str(manifest), "--out", str(out))
    assert code == 0 and [r["status"] for r in rows] == ["done", "done", "done"]
    ann, bob, cy = out / "ann", out / "bob", out / "cy"
    kept = (ann / "result.json").stat().st_mtime_ns, (ann / "studio-grey.png").read_bytes()

    (bob / "studio-grey.png").unlink()  # bob's portrait is lost: his result.json is no longer complete
    (cy / "result.json").write_text('{"outputs": [')  # cy's run was cut off mid-write
    code, rows = _batch(str(manifest), "--out", str(out), "--resume")
    assert code == 0
    by = {r["name"]: r for r in rows}
    assert by["ann"].get("resumed") is True and by["ann"]["status"] == "done"
    assert not by["bob"].get("resumed") and by["bob"]["status"] == "done"
    assert not by["cy"].get("resumed") and by["cy"]["status"] == "done"
    assert ((ann / "result.json").stat().st_mtime_ns, (ann / "studio-grey.png").read_bytes()) == kept
    assert (bob / "studio-grey.png").is_file()
    assert json.loads((cy / "result.json").read_text())["outputs"][0]["template"] == "classic-bw"
    assert json.loads((out / "batch.json").read_text()) == rows


def test_resume_is_refused_for_a_server_batch(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("photos,templates,name\nphotos,studio-grey,ann\n")
    result = CliRunner().invoke(cli, ["batch", str(manifest), "--server", "http://127.0.0.1:9", "--key", "k",
                                      "--resume"])
    assert result.exit_code == 2 and "--resume is for a local batch" in result.output
