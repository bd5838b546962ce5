"""The OpenAPI 3.1 document generated from the code validates, documents the core routes, and a
bounded schemathesis run over it (against a real server on a loopback socket) finds no 5xx."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from openapi_spec_validator import validate
from PIL import Image

from helpers_service import auth, live_server, make_app, new_key

CORE = {
    "/api/v1/identities": {"get", "post"},
    "/api/v1/identities/{identity_id}": {"get", "delete"},
    "/api/v1/identities/{identity_id}/photos": {"post"},
    "/api/v1/jobs": {"get", "post"},
    "/api/v1/jobs/{job_id}": {"get"},
    "/api/v1/jobs/{job_id}/cancel": {"post"},
    "/api/v1/jobs/{job_id}/report": {"get"},
    "/api/v1/jobs/{job_id}/events": {"get"},
    "/api/v1/templates": {"get"},
    "/api/v1/results/{result_id}": {"get"},
    "/api/v1/batches": {"post"},
    "/api/v1/batches/{batch_id}": {"get"},
}


def test_openapi_document_validates_and_lists_the_routes(tmp_path):
    app = make_app(tmp_path / "data")
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    for path, methods in CORE.items():
        assert methods <= set(spec["paths"][path]), path
    job = spec["components"]["schemas"]["Job"]["properties"]
    assert {"id", "kind", "state", "stage", "progress", "queue_position", "results", "error"} <= set(job)
    assert set(spec["components"]["schemas"]["Result"]["properties"]) >= {"id", "url", "score", "template"}
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tmp_path):
    app = make_app(tmp_path / "data", sse_max_seconds=1.0, sse_poll_seconds=0.1, max_upload_bytes=2_000_000)
    key = new_key(app, "fuzz")
    c = app.test_client()
    # some real data, so that generated requests can also reach existing rows
    iid = c.post("/api/v1/identities", json={"name": "seed"}, headers=auth(key)).get_json()["id"]
    buf = io.BytesIO()
    Image.fromarray(np.full((300, 300, 3), 120, np.uint8)).save(buf, "JPEG")
    c.post(f"/api/v1/identities/{iid}/photos", headers=auth(key), data={"photos": (io.BytesIO(buf.getvalue()), "a.jpg")})
    st = Path(sys.executable).with_name("schemathesis")
    with live_server(app) as url:
        proc = subprocess.run(
            [str(st), "run", f"{url}/api/v1/openapi.json", "-H", f"Authorization: Bearer {key}",
             "--checks", "not_a_server_error", "--max-examples", "12", "--seed", "7",
             "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--no-color"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "Server error" not in proc.stdout, tail
    paths = app.test_client().get("/api/v1/openapi.json").get_json()["paths"].values()
    ops = sum(1 for item in paths for method in item if method in ("get", "post", "put", "patch", "delete"))
    assert re.search(rf"Tested: {ops}\b", proc.stdout), tail  # every operation was exercised
    generated = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    assert generated and int(generated.group(1)) >= 100 and generated.group(1) == generated.group(2), tail
