"""Bad and hostile requests: each gets the right 4xx with `{"error": {"code", "message", "details"}}`
and leaves everything else as it was."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers_service import assert_error, auth, make_app, new_key


def _png(side: int = 512, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(side: int = 512) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def RUN(iid: str) -> dict:
    return {"kind": "run", "identity_id": iid, "templates": ["studio-grey"]}


class Tenant:
    def __init__(self, app, name):
        self.key = new_key(app, name)
        self.h = auth(self.key)
        self.c = app.test_client()

    def identity(self, photos: int = 1) -> str:
        iid = self.c.post("/api/v1/identities", json={"name": "x"}, headers=self.h).get_json()["id"]
        for i in range(photos):
            r = self.c.post(f"/api/v1/identities/{iid}/photos", headers=self.h,
                            data={"photos": (io.BytesIO(_jpeg(400 + i)), f"p{i}.jpg")})
            assert r.status_code == 201, r.get_json()
        return iid

    def key_tenant(self) -> str:
        return self.c.get("/api/v1/tenant", headers=self.h).get_json()["id"]

    def photos(self, iid: str) -> list[dict]:
        return self.c.get(f"/api/v1/identities/{iid}", headers=self.h).get_json()["photos"]

    def jobs(self) -> list[dict]:
        return self.c.get("/api/v1/jobs", headers=self.h).get_json()["items"]


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path / "data", max_upload_bytes=400_000, max_pixels=600 * 600, max_queue_size=2)


def test_missing_or_invalid_key_is_401(app):
    a = Tenant(app, "a")
    iid = a.identity()
    c = app.test_client()
    assert_error(c.get("/api/v1/identities"), 401, "missing_key")
    assert_error(c.get("/api/v1/identities", headers={"Authorization": "Bearer nope"}), 401, "invalid_key")
    assert_error(c.get("/api/v1/identities", headers={"Authorization": f"Basic {a.key}"}), 401)
    assert_error(c.delete(f"/api/v1/identities/{iid}", headers={"Authorization": "Bearer " + a.key[:-1]}), 401)
    app.extensions["portrait"].revoke(a.key)
    assert_error(c.get(f"/api/v1/identities/{iid}", headers=a.h), 401, "invalid_key")
    # nothing was deleted by the refused DELETE
    assert app.extensions["portrait"].get_identity(app.extensions["portrait"].find_tenant("a")["id"], iid)
    # Authentication comes before validation: a bad body without a key is 401, not 400 about the body.
    assert_error(c.patch("/api/v1/tenant", json={"retention_days": "many"}), 401, "missing_key")
    assert_error(c.post("/api/v1/jobs", json={"nonsense": 1}), 401, "missing_key")
    assert_error(c.post(f"/api/v1/identities/{iid}/photos", data={"wrong": "x"}), 401, "missing_key")
    assert_error(c.post("/api/v1/batches", json=[], headers={"Authorization": "Bearer nope"}), 401, "invalid_key")
    # The public routes stay public: a thumbnail, and a result with a token (a bad token is refused as such).
    assert c.get("/api/v1/templates/studio-grey/thumbnail").status_code == 200
    assert c.get("/api/v1/results/x?token=forged").status_code in (401, 403, 404)


def test_a_405_says_which_methods_are_allowed(app):
    a = Tenant(app, "a")
    r = a.c.put("/api/v1/jobs", headers=a.h)
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_another_tenants_ids_are_404_never_403(app):
    a, b = Tenant(app, "a"), Tenant(app, "b")
    iid = a.identity(photos=2)
    job = a.c.post("/api/v1/jobs", headers=a.h, json=RUN(iid)).get_json()
    for method, url, kw in [
        ("get", f"/api/v1/identities/{iid}", {}),
        ("delete", f"/api/v1/identities/{iid}", {}),
        ("post", f"/api/v1/identities/{iid}/photos", {"data": {"photos": (io.BytesIO(_jpeg()), "x.jpg")}}),
        ("post", "/api/v1/jobs", {"json": {"kind": "preprocess", "identity_id": iid}}),
        ("post", "/api/v1/batches", {"json": {"rows": [RUN(iid)]}}),
        ("get", f"/api/v1/jobs/{job['id']}", {}),
        ("post", f"/api/v1/jobs/{job['id']}/cancel", {}),
        ("get", f"/api/v1/jobs/{job['id']}/report", {}),
        ("get", f"/api/v1/jobs/{job['id']}/events", {}),
    ]:
        assert_error(getattr(b.c, method)(url, headers=b.h, **kw), 404)
    # A's data is untouched: the identity, its two photos and its queued job
    assert len(a.photos(iid)) == 2
    assert a.c.get(f"/api/v1/jobs/{job['id']}", headers=a.h).get_json()["state"] == "queued"
    assert b.jobs() == [] and b.c.get("/api/v1/identities", headers=b.h).get_json()["items"] == []


def test_oversize_upload_is_413_and_nothing_is_kept(app):
    a = Tenant(app, "a")
    iid = a.identity()
    big = _png(380)  # ~430 kB of noise: over the 400 kB per-photo limit, under the pixel limit
    assert len(big) > 400_000
    err = assert_error(a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h,
                                data={"photos": [(io.BytesIO(_jpeg()), "ok.jpg"), (io.BytesIO(big), "big.png")]}),
                       413, "too_large")
    assert err["details"]["file"] == "big.png"
    assert len(a.photos(iid)) == 1  # the small photo of the same request was not stored either
    # a whole request body over the request limit (ten photos' worth by default)
    huge = b"\xff\xd8" + b"\0" * (11 * 400_000)
    assert_error(a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h,
                          data={"photos": (io.BytesIO(huge), "huge.jpg")}), 413, "too_large")
    assert len(a.photos(iid)) == 1


def test_too_many_pixels_is_413_too_large(app):
    a = Tenant(app, "a")
    iid = a.identity()
    err = assert_error(a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h,
                                data={"photos": (io.BytesIO(_jpeg(1000)), "wide.jpg")}), 413, "too_large")
    assert "wide.jpg" in err["message"]
    assert len(a.photos(iid)) == 1


def test_non_image_upload_is_422_unreadable(app):
    a = Tenant(app, "a")
    iid = a.identity()
    for data, name in [(b"hello", "x.jpg"), (b"<?php system($_GET[c]); ?>", "shell.php"),
                       (_jpeg()[:200], "truncated.jpg"), (b"", "empty.png")]:
        err = assert_error(a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h,
                                    data={"photos": (io.BytesIO(data), name)}), 422, "unreadable")
        assert err["details"]["photos"][0]["reasons"] == ["unreadable"]
    assert len(a.photos(iid)) == 1
    # a mix of good and bad files: 201 with a verdict per photo
    r = a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h,
                 data={"photos": [(io.BytesIO(_jpeg(450)), "good.jpg"), (io.BytesIO(b"junk"), "junk.jpg")]})
    assert r.status_code == 201
    assert [(p["filename"], p["accepted"], p["reasons"]) for p in r.get_json()["photos"]] == \
        [("good.jpg", True, []), ("junk.jpg", False, ["unreadable"])]


def test_path_traversal_file_names_never_name_a_file(app, tmp_path):
    a = Tenant(app, "a")
    iid = a.identity(photos=0)
    hostile = ["../../../../../../tmp/evil.jpg", "..\\..\\evil2.jpg", "/etc/evil3.jpg", "....//evil4.jpg",
               "evil5.jpg\x00.png", "evil6\u202e.jpg"]
    for i, name in enumerate(hostile):
        r = a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h,
                     data={"photos": (io.BytesIO(_jpeg(300 + i)), name)})
        assert r.status_code == 201, r.get_json()
        shown = r.get_json()["photos"][0]["filename"]
        assert "/" not in shown and "\\" not in shown and ".." not in shown and "\n" not in shown, shown
    stored = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "evil" in p.name]
    assert stored == []
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.glob("evil*"))
    assert len(a.photos(iid)) == len(hostile)


def test_bad_template_or_option_at_submit_is_400_and_queues_nothing(app):
    a = Tenant(app, "a")
    iid = a.identity()
    for body, code, named in [
        ({"identity_id": iid, "templates": ["no-such-template"]}, "bad_template", "no-such-template"),
        ({"identity_id": iid, "templates": ["../../etc"]}, "bad_template", "../../etc"),
        ({"identity_id": iid, "templates": ["studio-grey"], "options": {"varients": 3}}, "bad_options", "varients"),
        ({"identity_id": iid, "templates": "studio-grey"}, "invalid", "templates"),
        ({"kind": "paint", "identity_id": iid}, "invalid", "kind"),
        ({"templates": ["studio-grey"]}, "invalid", "identity_id"),
    ]:
        err = assert_error(a.c.post("/api/v1/jobs", headers=a.h, json=body), 400, code)
        assert named in err["message"], err
        if code == "bad_template":  # the names a client may use, never the server's folders
            assert "studio-grey" in err["details"]["available"] and "studio-grey" in err["message"]
            assert "/" not in err["message"].replace("../../etc", ""), err["message"]
    assert_error(a.c.post("/api/v1/jobs", headers={**a.h, "Content-Type": "application/json"}, data=b"{not json"), 400)
    assert a.jobs() == []


def test_full_queue_is_429_and_queued_jobs_stay(app):
    a = Tenant(app, "a")
    iid = a.identity()
    ids = []
    for _ in range(2):
        r = a.c.post("/api/v1/jobs", headers=a.h, json=RUN(iid))
        assert r.status_code == 202
        ids.append(r.get_json()["id"])
    assert_error(a.c.post("/api/v1/jobs", headers=a.h, json=RUN(iid)), 429,
                 "queue_full")
    assert_error(a.c.post("/api/v1/batches", headers=a.h, json={"rows": [RUN(iid)]}),
                 429, "queue_full")
    assert sorted(j["id"] for j in a.jobs()) == sorted(ids)
    assert all(j["state"] == "queued" for j in a.jobs())


def test_rate_limit_per_key_is_429(tmp_path):
    app = make_app(tmp_path / "data", rate_limit="5 per minute")
    a, b = Tenant(app, "a"), Tenant(app, "b")
    for _ in range(5):
        assert a.c.get("/api/v1/identities", headers=a.h).status_code == 200
    r = a.c.get("/api/v1/identities", headers=a.h)
    assert_error(r, 429, "rate_limited")
    assert r.headers.get("Retry-After")
    assert b.c.get("/api/v1/identities", headers=b.h).status_code == 200  # counted per tenant
    second_key = auth(app.extensions["portrait"].create_key(a.key_tenant()))
    assert_error(a.c.get("/api/v1/identities", headers=second_key), 429, "rate_limited")  # a's keys share a's count


def test_made_up_keys_are_limited_like_no_key(tmp_path):
    """Rotating bogus keys is counted per address, not per key: the sixth gets 429, not another 401."""
    app = make_app(tmp_path / "data", rate_limit="5 per minute")
    c = app.test_client()
    got = [c.get("/api/v1/identities", headers=auth(f"pk_made_up_{i}")).status_code for i in range(7)]
    assert got[:5] == [401] * 5 and got[5:] == [429, 429]
    good = Tenant(app, "real")  # a valid key is its tenant's own count, even from the same address
    assert good.c.get("/api/v1/identities", headers=good.h).status_code == 200


def test_the_web_forms_posts_are_rate_limited_per_address(tmp_path):
    """A new cookie is a new visitor: the form's POSTs are counted per client address instead."""
    app = make_app(tmp_path / "data", WTF_CSRF_ENABLED=False, web_rate_limit="4 per minute")
    got = [app.test_client().post("/identities", json={"name": "x"}).status_code for _ in range(6)]
    assert got == [201] * 4 + [429] * 2
    r = app.test_client().post("/identities", json={"name": "x"}, headers={"Accept": "application/json"})
    assert_error(r, 429, "rate_limited")
    other = app.test_client().post("/identities", json={"name": "x"}, environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert other.status_code == 201  # another address has its own count
    assert app.test_client().get("/").status_code == 200  # pages are not counted


def test_idempotency_key_replays_the_first_answer(app):
    a = Tenant(app, "a")
    h = {**a.h, "Idempotency-Key": "user-42-identity"}
    first = a.c.post("/api/v1/identities", json={"name": "ana"}, headers=h)
    again = a.c.post("/api/v1/identities", json={"name": "ana"}, headers=h)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json() and again.headers.get("Idempotent-Replayed") == "true"
    assert len(a.c.get("/api/v1/identities", headers=a.h).get_json()["items"]) == 1
    iid = first.get_json()["id"]
    up = {**a.h, "Idempotency-Key": "photo-1"}
    for _ in range(3):
        r = a.c.post(f"/api/v1/identities/{iid}/photos", headers=up, data={"photos": (io.BytesIO(_jpeg()), "a.jpg")})
        assert r.status_code == 201
    assert len(a.photos(iid)) == 1
    jh = {**a.h, "Idempotency-Key": "job-1"}
    j1 = a.c.post("/api/v1/jobs", headers=jh, json=RUN(iid)).get_json()
    j2 = a.c.post("/api/v1/jobs", headers=jh, json=RUN(iid)).get_json()
    assert j1["id"] == j2["id"] and len(a.jobs()) == 1


def test_an_idempotency_key_reused_for_another_request_is_422(app):
    """As Stripe's API does: a retry of the same request replays (key order and multipart boundaries do not
    matter), another request under the same key is 422 `idempotency_key_reused` and does nothing."""
    a = Tenant(app, "a")
    h = {**a.h, "Idempotency-Key": "k-identity"}
    first = a.c.post("/api/v1/identities", json={"name": "ana"}, headers=h)
    same = a.c.post("/api/v1/identities", data=b'{ "name" : "ana" }', headers={**h, "Content-Type": "application/json"})
    assert same.status_code == 201 and same.get_json() == first.get_json()
    assert same.headers.get("Idempotent-Replayed") == "true"
    assert_error(a.c.post("/api/v1/identities", json={"name": "bo"}, headers=h), 422, "idempotency_key_reused")
    iid = first.get_json()["id"]
    up = {**a.h, "Idempotency-Key": "k-photo"}
    photo = _jpeg(420)
    assert a.c.post(f"/api/v1/identities/{iid}/photos", headers=up,
                    data={"photos": (io.BytesIO(photo), "a.jpg")}).status_code == 201
    retry = a.c.post(f"/api/v1/identities/{iid}/photos", headers=up, data={"photos": (io.BytesIO(photo), "a.jpg")})
    assert retry.status_code == 201 and retry.headers.get("Idempotent-Replayed") == "true"
    assert_error(a.c.post(f"/api/v1/identities/{iid}/photos", headers=up,
                          data={"photos": (io.BytesIO(_jpeg(440)), "a.jpg")}), 422, "idempotency_key_reused")
    assert len(a.photos(iid)) == 1
    jh = {**a.h, "Idempotency-Key": "k-job"}
    j1 = a.c.post("/api/v1/jobs", headers=jh, json=RUN(iid)).get_json()
    assert a.c.post("/api/v1/jobs", headers=jh, json=RUN(iid)).get_json()["id"] == j1["id"]
    other = {**RUN(iid), "templates": ["navy-formal"]}
    assert_error(a.c.post("/api/v1/jobs", headers=jh, json=other), 422, "idempotency_key_reused")
    assert [j["id"] for j in a.jobs()] == [j1["id"]]
    assert len(a.c.get("/api/v1/identities", headers=a.h).get_json()["items"]) == 1
    # Batches too: a retry replays (its name may be left out), other rows under the key are refused.
    a.c.post(f"/api/v1/jobs/{j1['id']}/cancel", headers=a.h)  # room in the test's small queue
    bh = {**a.h, "Idempotency-Key": "k-batch"}
    b1 = a.c.post("/api/v1/batches", headers=bh, json={"name": "spring", "rows": [RUN(iid)]})
    assert b1.status_code == 202, b1.get_json()
    assert a.c.post("/api/v1/batches", headers=bh, json={"name": "spring", "rows": [RUN(iid)]}).get_json()["id"] == \
        b1.get_json()["id"]
    assert_error(a.c.post("/api/v1/batches", headers=bh, json={"name": "spring", "rows": [other]}), 422,
                 "idempotency_key_reused")
    assert a.c.post("/api/v1/batches", headers=bh, json={"rows": [RUN(iid)]}).get_json()["id"] == b1.get_json()["id"]


def test_deleting_an_identity_forgets_its_idempotency_records(app):
    """Its name, file names and sizes do not stay in the idempotency table, and a retried create after the
    delete makes a new identity instead of replaying the dead id."""
    a = Tenant(app, "a")
    h = {**a.h, "Idempotency-Key": "create-ana"}
    iid = a.c.post("/api/v1/identities", json={"name": "ana-secret-name"}, headers=h).get_json()["id"]
    up = {**a.h, "Idempotency-Key": "photo-1"}
    assert a.c.post(f"/api/v1/identities/{iid}/photos", headers=up,
                    data={"photos": (io.BytesIO(_jpeg()), "holiday-2026.jpg")}).status_code == 201
    other = a.c.post("/api/v1/identities", json={"name": "bo"}, headers={**a.h, "Idempotency-Key": "create-bo"})
    assert a.c.delete(f"/api/v1/identities/{iid}", headers=a.h).status_code == 204
    from server.db.models import IdempotencyRecord

    with app.extensions["portrait"].db.session() as s:
        kept = [r.key for r in s.query(IdempotencyRecord).all()]
    assert kept == ["create-bo"]  # the other identity's record stays
    again = a.c.post("/api/v1/identities", json={"name": "ana-secret-name"}, headers=h)
    assert again.status_code == 201 and again.get_json()["id"] != iid and not again.headers.get("Idempotent-Replayed")
    assert other.status_code == 201


def test_lists_page_with_a_cursor(app):
    a = Tenant(app, "a")
    made = [a.c.post("/api/v1/identities", json={"name": f"n{i}"}, headers=a.h).get_json()["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/v1/identities?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = a.c.get(url, headers=a.h).get_json()
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and seen == made[::-1]
    assert_error(a.c.get("/api/v1/identities?cursor=%%%", headers=a.h), 400)
    assert_error(a.c.get("/api/v1/identities?limit=100000", headers=a.h), 400)


def test_unknown_routes_and_methods_answer_json(app):
    a = Tenant(app, "a")
    assert_error(a.c.get("/api/v1/nope", headers=a.h), 404, "not_found")
    assert_error(a.c.put("/api/v1/identities", headers=a.h), 405, "method_not_allowed")


def test_rate_limit_is_counted_in_redis_across_server_processes(tmp_path):
    """Fleet mode: two server processes (two apps) share one count per key through a real redis-server."""
    from helpers_fleet import redis_server

    with redis_server(tmp_path) as redis_url:
        apps = [make_app(tmp_path / "data", rate_limit="4 per minute", rate_limit_storage_url=redis_url)
                for _ in range(2)]
        key = new_key(apps[0], "a")
        one, two = (app.test_client() for app in apps)
        for client in (one, two, one, two):
            assert client.get("/api/v1/identities", headers=auth(key)).status_code == 200
        assert_error(two.get("/api/v1/identities", headers=auth(key)), 429, "rate_limited")
        assert_error(one.get("/api/v1/identities", headers=auth(key)), 429, "rate_limited")


def test_behind_a_proxy_urls_use_the_public_scheme_and_host(tmp_path):
    """A mini-program only loads https images: with PORTRAIT_PROXY_HOPS the URLs follow X-Forwarded-*."""
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com", "X-Forwarded-For": "203.0.113.9"}
    for hops, expected in ((1, "https://api.example.com/api/v1/templates/"), (0, "http://localhost/api/v1/templates/")):
        app = make_app(tmp_path / f"data{hops}", proxy_hops=hops)
        h = auth(new_key(app, "a"))
        (first, *_) = app.test_client().get("/api/v1/templates", headers={**h, **fwd}).get_json()
        assert first["thumbnail_url"].startswith(expected), first


def test_a_relative_data_dir_serves_every_thumbnail(tmp_path, monkeypatch):
    """The README's `portrait serve --data-dir data` is relative: thumbnails must not 500."""
    monkeypatch.chdir(tmp_path)
    app = make_app("data")
    h = auth(new_key(app, "a"))
    c = app.test_client()
    (first, *_) = c.get("/api/v1/templates", headers=h).get_json()
    api_thumb = c.get(first["thumbnail_url"].replace("http://localhost", ""), headers=h)
    assert api_thumb.status_code == 200 and api_thumb.mimetype.startswith("image/"), api_thumb.data[:200]
    web_thumb = c.get(f"/templates/{first['name']}/thumbnail")
    assert web_thumb.status_code == 200 and web_thumb.mimetype.startswith("image/"), web_thumb.data[:200]
    assert (tmp_path / "data").is_dir()


@pytest.mark.parametrize("bad", ["\\ud800", "a\\u0000b"], ids=["lone-surrogate", "nul"])
def test_unstorable_strings_in_any_json_field_are_400_naming_the_field(tmp_path, bad):
    """A lone UTF-16 surrogate (which no database encodes) or a NUL (which PostgreSQL refuses) in any string
    of a JSON body, nested or a key, is 400 `bad_string` naming the field, on the API and the form; nothing
    is stored, and a 1 MB string is a 4xx too, never a 500."""
    app = make_app(tmp_path / "data", WTF_CSRF_ENABLED=False)
    key = new_key(app, "a")
    c = app.test_client()
    h = {**auth(key), "Content-Type": "application/json"}
    iid = c.post("/api/v1/identities", json={"name": "ok"}, headers=auth(key)).get_json()["id"]
    cases = [
        ("post", "/api/v1/identities", '{"name": "%s"}' % bad, "name"),
        ("post", "/api/v1/jobs", '{"identity_id": "%s", "templates": ["studio-grey"]}' % bad, "identity_id"),
        ("post", "/api/v1/jobs", '{"identity_id": "%s", "templates": ["studio-grey"], "options": {"seed": 1, '
                                 '"base_model": "%s"}}' % (iid, bad), "options.base_model"),
        ("post", "/api/v1/jobs", '{"identity_id": "%s", "templates": ["ok", "%s"]}' % (iid, bad), "templates.1"),
        ("patch", "/api/v1/tenant", '{"webhook_url": "https://example.com/%s"}' % bad, "webhook_url"),
        ("post", "/api/v1/batches", '{"name": "%s", "rows": []}' % bad, "name"),
        ("post", "/api/v1/identities", '{"%s": "x"}' % bad, "(a key)"),
        ("post", "/identities", '{"name": "%s"}' % bad, "name"),  # the web form's fetch()
    ]
    for method, path, body, field in cases:
        r = getattr(c, method)(path, data=body.encode(), headers=h)
        err = assert_error(r, 400, "bad_string")
        assert err["details"]["field"] == field, (path, err)
    assert [i["name"] for i in c.get("/api/v1/identities", headers=auth(key)).get_json()["items"]] == ["ok"]
    r = c.post("/api/v1/identities", json={"name": "x" * (1 << 20)}, headers=auth(key))
    assert 400 <= r.status_code < 500, r.status_code


def _visitor_job(app) -> tuple[int, dict]:
    """A new web form visitor (its own cookie, so its own tenant): upload one photo, submit a run."""
    c = app.test_client()
    iid = c.post("/identities", json={"name": "me"}).get_json()["id"]
    assert c.post(f"/identities/{iid}/photos", data={"photos": (io.BytesIO(_jpeg(420)), "me.jpg")}).status_code == 201
    r = c.post("/jobs", json={"identity_id": iid, "templates": ["studio-grey"]})
    return r.status_code, r.get_json()


def test_no_tenant_and_not_the_open_form_can_fill_the_queue_for_the_others(tmp_path):
    """Per-tenant and all-visitors caps under the global one: 429 `queue_full` says which cap was hit, and
    the other tenants keep submitting."""
    app = make_app(tmp_path / "data", WTF_CSRF_ENABLED=False, max_queued_per_tenant=2, max_queued_web=2,
                   max_queue_size=6)
    a, b = Tenant(app, "a"), Tenant(app, "b")
    ia, ib = a.identity(), b.identity()
    for _ in range(2):
        assert a.c.post("/api/v1/jobs", headers=a.h, json=RUN(ia)).status_code == 202
    full = assert_error(a.c.post("/api/v1/jobs", headers=a.h, json=RUN(ia)), 429, "queue_full")
    assert full["details"] == {"cap": "tenant", "queued": 2, "limit": 2}
    big = assert_error(b.c.post("/api/v1/batches", headers=b.h, json={"rows": [RUN(ib)] * 3}), 429, "queue_full")
    assert big["details"]["cap"] == "tenant"  # a batch counts all its rows against its tenant
    assert b.c.post("/api/v1/jobs", headers=b.h, json=RUN(ib)).status_code == 202  # a's cap is a's alone

    assert [_visitor_job(app)[0] for _ in range(2)] == [202, 202]
    status, body = _visitor_job(app)  # a third visitor: the form's share is used up
    assert status == 429 and body["error"]["code"] == "queue_full" and body["error"]["details"]["cap"] == "web_visitors"
    assert b.c.post("/api/v1/jobs", headers=b.h, json=RUN(ib)).status_code == 202  # paying tenants still get in

    c = Tenant(app, "c")  # 2 (a) + 2 (b) + 2 (visitors) = 6 queued: the global guard
    whole = assert_error(c.c.post("/api/v1/jobs", headers=c.h, json=RUN(c.identity())), 429, "queue_full")
    assert whole["details"]["cap"] == "all"


def test_concurrent_retries_with_one_key_have_one_effect(tmp_path):
    """Ten parallel uploads of one photo with one Idempotency-Key, over a real socket: one photo is stored,
    and every request gets the same answer."""
    import http.client
    import threading

    from helpers_service import live_server

    app = make_app(tmp_path / "data")
    a = Tenant(app, "a")
    iid = a.identity()
    before = len(a.photos(iid))
    photo = _jpeg()
    boundary = "----portraitconcurrent"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"me.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    answers = []
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        go = threading.Barrier(10)

        def send():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            go.wait()
            c.request("POST", f"/api/v1/identities/{iid}/photos", body=body,
                      headers={**a.h, "Idempotency-Key": "same-photo",
                               "Content-Type": f"multipart/form-data; boundary={boundary}"})
            r = c.getresponse()
            answers.append((r.status, r.read(), r.getheader("Idempotent-Replayed")))

        threads = [threading.Thread(target=send) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(answers) == 10 and {s for s, _, _ in answers} == {201}, answers
    assert len({b for _, b, _ in answers}) == 1  # the same photo id for all
    assert sum(1 for *_, replayed in answers if replayed) == 9
    assert len(a.photos(iid)) == before + 1


def test_a_failed_request_does_not_keep_its_key(app):
    a = Tenant(app, "a")
    iid = a.identity()
    up = {**a.h, "Idempotency-Key": "retry-me"}
    bad = a.c.post(f"/api/v1/identities/{iid}/photos", headers=up, data={"photos": (io.BytesIO(b"not an image"), "x.jpg")})
    assert bad.status_code == 422
    good = a.c.post(f"/api/v1/identities/{iid}/photos", headers=up, data={"photos": (io.BytesIO(_jpeg()), "x.jpg")})
    assert good.status_code == 201 and not good.headers.get("Idempotent-Replayed")


def test_a_large_png_is_checked_from_its_header_and_checksums_not_decoded(tmp_path):
    """A 4200 x 4000 PNG (17 MP, 50 MB decoded) is accepted with its size, read from its header and its
    chunk checksums; the same file with one byte of its pixel data changed is refused as unreadable
   ."""
    from server.service import identities

    app = make_app(tmp_path / "data")
    a = Tenant(app, "a")
    iid = a.identity()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4000, 4200, 3), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    assert 4000 * 4200 > identities.FULL_DECODE_PIXELS and len(png) < 1_000_000
    ok = a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h, data={"photos": (io.BytesIO(png), "big.png")})
    assert ok.status_code == 201, ok.get_json()
    photo = ok.get_json()["photos"][0] if "photos" in ok.get_json() else ok.get_json()
    assert (photo["width"], photo["height"], photo["format"]) == (4200, 4000, "PNG")
    idat = png.index(b"IDAT")
    broken = png[:idat + 10] + bytes([png[idat + 10] ^ 0xFF]) + png[idat + 11:]
    bad = a.c.post(f"/api/v1/identities/{iid}/photos", headers=a.h, data={"photos": (io.BytesIO(broken), "broken.png")})
    assert_error(bad, 422, "unreadable")
