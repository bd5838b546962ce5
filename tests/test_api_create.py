"""`kind: "create"` through the real app: `GET /api/v1/styles`, and a create job's `styles` checked at
submit (named packs on the server's search path, never paths), alone and in batch rows."""

from __future__ import annotations

from helpers_service import assert_error

from test_api_templates import _identity, client  # noqa: F401  (the fixture)

STYLES = {"formal-headshot", "business", "vintage-film", "winter-outdoor", "fantasy-armour", "astronaut",
          "watercolour", "black-and-white"}


def test_the_style_list_carries_provenance_and_filters_by_tag(client):  # noqa: F811
    c, h = client
    every = c.get("/api/v1/styles", headers=h).get_json()
    assert STYLES <= {s["name"] for s in every}
    assert all(s["licence"].startswith("CC0") and s["source"] and s["tags"] and ":" in s["aspect"] for s in every)
    bw = c.get("/api/v1/styles?tag=bw", headers=h).get_json()
    assert bw and all("bw" in s["tags"] for s in bw) and len(bw) < len(every)
    assert c.get("/api/v1/styles").status_code == 401


def test_a_create_jobs_styles_are_checked_before_anything_is_queued(client):  # noqa: F811
    c, h = client
    iid = _identity(c, h)

    def post(body, code):
        return assert_error(c.post("/api/v1/jobs", headers=h, json={"identity_id": iid, **body}), 400, code)

    assert "at least one style" in post({"kind": "create"}, "bad_styles")["message"]
    err = post({"kind": "create", "styles": ["no-such-style"]}, "bad_style")
    assert STYLES <= set(err["details"]["available"])
    post({"kind": "create", "styles": ["../../etc"]}, "bad_style")
    assert "takes no styles" in post({"kind": "run", "templates": ["studio-grey"], "styles": ["vintage-film"]},
                                     "bad_styles")["message"]
    err = assert_error(c.post("/api/v1/batches", headers=h, json={"kind": "create", "rows": [
        {"identity_id": iid, "styles": ["vintage-film"]}, {"identity_id": iid, "styles": ["nope"]}]}), 400)
    assert err["details"]["row"] == 1 and "nope" in err["message"]
    assert c.get("/api/v1/jobs", headers=h).get_json()["items"] == []  # nothing was queued
    # With photos and no train/embed job yet, a create job embeds the photos itself (train-free).
    ok = c.post("/api/v1/jobs", headers=h, json={"kind": "create", "identity_id": iid, "styles": ["vintage-film"],
                                                  "options": {"count": 2}})
    assert ok.status_code == 202, ok.get_json()
    assert ok.get_json()["styles"] == ["vintage-film"] and ok.get_json()["kind"] == "create"
    empty = c.post("/api/v1/identities", json={"name": "none"}, headers=h).get_json()["id"]
    post_empty = c.post("/api/v1/jobs", headers=h, json={"kind": "create", "identity_id": empty, "styles": ["vintage-film"]})
    assert assert_error(post_empty, 400, "no_photos")
