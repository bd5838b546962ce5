"""`portrait batch MANIFEST.csv --server URL --key KEY`: a studio's batch on a real server socket with
a real worker; the client is `portrait`'s own HTTP client (it never imports `server/`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from portrait.samples import write_sample_photos

from helpers_service import live_server, make_app, new_key, worker_process


@pytest.mark.slow
def test_remote_batch_uploads_follows_and_downloads(tmp_path):
    write_sample_photos(tmp_path / "alice")
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "scan.jpg").write_text("not a photo")
    (tmp_path / "customers.csv").write_text(
        "photos,templates,name\nalice,studio-grey,alice\nnobody,studio-grey,bob\ncarol,studio-grey,carol\n")
    data = tmp_path / "data"
    app = make_app(data)
    key = new_key(app, "studio")
    with live_server(app) as url, worker_process(data):
        proc = subprocess.run(
            [sys.executable, "-c", "from portrait.cli import main; main()", "batch", str(tmp_path / "customers.csv"),
             "--server", url, "--out", str(tmp_path / "results"), "--variants", "1", "--json"],
            capture_output=True, text=True, timeout=900, env={**os.environ, "PORTRAIT_API_KEY": key})
    assert proc.returncode == 1, proc.stderr[-3000:]  # some rows failed (portrait.batch.EXIT_SOME_FAILED)
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["alice"]["status"] == "done" and rows["alice"]["state"] == "succeeded"
    assert rows["alice"]["uploaded"] == 10
    assert rows["bob"]["status"] == "failed" and rows["bob"]["error"] == "missing_photos"
    assert rows["carol"]["status"] == "failed" and rows["carol"]["error"] == "no_usable_photos"
    assert rows["carol"]["rejected_at_upload"][0]["reasons"] == ["unreadable"]
    (png,) = sorted((tmp_path / "results" / "alice").glob("*.png"))
    assert png.name == "01-studio-grey.png" and Image.open(png).size[0] >= 256
    assert json.loads((tmp_path / "results" / "batch.json").read_text()) == list(rows.values())
    # the server holds one batch whose only job is alice's
    svc = app.extensions["portrait"]
    jobs = svc.list_jobs(svc.find_tenant("studio")["id"])["items"]
    assert len(jobs) == 1 and jobs[0]["batch_id"] and jobs[0]["state"] == "succeeded"


@pytest.mark.slow
def test_a_remote_batch_row_with_styles_is_a_create_job(tmp_path, tiny_models_dir):
    """A `styles` column makes the row a create job on the server: the photos uploaded, embedded by the job,
    COUNT pictures per style downloaded."""
    write_sample_photos(tmp_path / "alice")
    (tmp_path / "m.csv").write_text("photos,styles,name\nalice,watercolour;vintage-film,alice\n")
    data = tmp_path / "data"
    app = make_app(data)
    key = new_key(app, "studio")
    with live_server(app) as url, worker_process(data, env={"PORTRAIT_MODELS_DIR": str(tiny_models_dir)}):
        proc = subprocess.run(
            [sys.executable, "-c", "from portrait.cli import main; main()", "batch", str(tmp_path / "m.csv"),
             "--server", url, "--out", str(tmp_path / "results"), "--count", "1", "--json"],
            capture_output=True, text=True, timeout=900, env={**os.environ, "PORTRAIT_API_KEY": key})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout)
    assert row["status"] == "done" and sorted(r["template"] for r in row["results"]) == ["vintage-film", "watercolour"]
    pngs = sorted(p.name for p in (tmp_path / "results" / "alice").glob("*.png"))
    assert len(pngs) == 2 and any("watercolour" in n for n in pngs)


def test_remote_batch_with_a_bad_key_exits_2(tmp_path):
    write_sample_photos(tmp_path / "alice")
    (tmp_path / "m.csv").write_text("photos,templates,name\nalice,studio-grey,alice\n")
    app = make_app(tmp_path / "data")
    with live_server(app) as url:
        proc = subprocess.run(
            [sys.executable, "-c", "from portrait.cli import main; main()", "batch", str(tmp_path / "m.csv"),
             "--server", url, "--key", "wrong"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "invalid_key" in proc.stderr
