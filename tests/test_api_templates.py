"""`GET /api/v1/templates` with tags, provenance and `?tag=` filters, and `templates: ["auto:N"]` checked
at submit, through the real app."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers_service import assert_error, auth, make_app, new_key


@pytest.fixture
def client(tmp_path):
    app = make_app(tmp_path / "data")
    return app.test_client(), auth(new_key(app, "a"))


def _identity(c, h) -> str:
    iid = c.post("/api/v1/identities", json={"name": "x"}, headers=h).get_json()["id"]
    buf = io.BytesIO()
    Image.fromarray(np.full((400, 400, 3), 128, np.uint8)).save(buf, "JPEG")
    assert c.post(f"/api/v1/identities/{iid}/photos", headers=h,
                  data={"photos": (io.BytesIO(buf.getvalue()), "p.jpg")}).status_code == 201
    return iid


def test_the_list_carries_tags_provenance_and_measures_and_filters_by_tag(client):
    c, h = client
    every = c.get("/api/v1/templates", headers=h).get_json()
    assert len(every) >= 30
    for t in every:
        assert t["tags"] and t["source"] and t["licence"].startswith("public-domain"), t
        assert {"skin_tone", "yaw"} <= set(t["measured"]) and t["thumbnail_url"].endswith("/thumbnail")
    bw = c.get("/api/v1/templates?tag=bw", headers=h).get_json()
    assert bw and all("bw" in t["tags"] for t in bw) and len(bw) == sum("bw" in t["tags"] for t in every)
    both = c.get("/api/v1/templates?tag=bw&tag=group", headers=h).get_json()
    assert both and all({"bw", "group"} <= set(t["tags"]) for t in both) and len(both) < len(bw)
    assert c.get("/api/v1/templates?tag=no-such-tag", headers=h).get_json() == []
    assert_error(c.get("/api/v1/templates?tag=Not%20A%20Tag", headers=h), 400)


def test_a_run_job_may_ask_for_auto_and_bad_auto_is_400(client):
    c, h = client
    iid = _identity(c, h)
    ok = c.post("/api/v1/jobs", headers=h, json={"identity_id": iid, "templates": ["auto:2:studio"]})
    assert ok.status_code == 202, ok.get_json()
    assert ok.get_json()["templates"] == ["auto:2:studio"]
    for spec, said in (("auto:99", "N must be 1..12"), ("auto:2:no-such-tag", "only 0 single-face"),
                       ("auto:2:Studio", "expected auto")):
        err = assert_error(c.post("/api/v1/jobs", headers=h, json={"identity_id": iid, "templates": [spec]}),
                           400, "bad_template")
        assert said in err["message"], err
    err = assert_error(c.post("/api/v1/jobs", headers=h, json={"kind": "generate", "identity_id": iid,
                                                                "templates": ["auto"]}), 400, "bad_template")
    assert "run jobs only" in err["message"]
