"""The service layer on real files and a real SQLite database: tenants and keys, untrusted uploads
and their verdicts, isolation, deletion, retention, webhooks to a real loopback HTTP server, the
ops endpoints, the CLI's tenant commands."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers_fleet import wait_for
from helpers_service import newest_migration
from server import webhooks
from server.db.models import Identity, Job, Photo, Result, WebhookDelivery, new_id
from server.errors import NotFound, ServiceError, TooLarge, Unauthorized, error_response
from server.service import Service
from server.settings import Settings
from server.worker import Worker


def make_service(tmp_path: Path, **cfg) -> Service:
    return Service(Settings.load({"data_dir": tmp_path / "data", **cfg}, env={}))


def jpeg(w: int = 640, h: int = 480, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def count(svc: Service, model, **where) -> int:
    from sqlalchemy import func, select

    with svc.db.session() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return s.scalar(q)


def test_api_keys_are_hashed_shown_once_and_revocable(tmp_path):
    svc = make_service(tmp_path)
    t, key = svc.create_tenant("studio")
    assert svc.authenticate(key).id == t["id"]
    db_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("portrait.db*"))
    assert key.encode() not in db_bytes and hashlib.sha256(key.encode()).hexdigest().encode() in db_bytes
    for bad in (None, "", "pk_wrong", key + "x"):
        with pytest.raises(Unauthorized) as err:
            svc.authenticate(bad)
        assert error_response(err.value)[0] == 401
    second = svc.create_key(t["id"])
    assert svc.revoke(key[:10]) == 1
    with pytest.raises(Unauthorized):
        svc.authenticate(key)
    assert svc.authenticate(second).id == t["id"]
    assert svc.revoke("studio") == 1  # every remaining key of the tenant
    with pytest.raises(Unauthorized):
        svc.authenticate(second)


def test_uploads_are_untrusted(tmp_path):
    svc = make_service(tmp_path, max_upload_bytes=2_000_000, max_pixels=1_000_000, max_photos_per_identity=3)
    t, _ = svc.create_tenant("acme")
    ident = svc.create_identity(t["id"], "me")
    photos_dir = svc.storage.photos_dir(t["id"], ident["id"])

    good = svc.add_photo(t["id"], ident["id"], "../../../etc/passwd", jpeg(seed=1))
    assert good["accepted"] and good["filename"] == "passwd"
    stored = files_under(photos_dir)
    assert [p.name for p in stored] == [f"{good['id']}.jpg"]  # the server's name, in the identity's folder
    assert stored[0].read_bytes() == jpeg(seed=1)

    text = svc.add_photo(t["id"], ident["id"], "notes.jpg", b"this is not an image")
    assert not text["accepted"] and text["reasons"] == ["unreadable"] and "notes.jpg" in text["message"]
    big = svc.add_photo(t["id"], ident["id"], "huge.jpg", jpeg(1200, 1000))
    assert not big["accepted"] and big["reasons"] == ["too_large"]
    tiny = svc.add_photo(t["id"], ident["id"], "thumb.jpg", jpeg(60, 60))
    assert not tiny["accepted"] and tiny["reasons"] == ["too_small"]
    with pytest.raises(TooLarge) as err:
        svc.add_photo(t["id"], ident["id"], "bomb.bin", io.BytesIO(b"\0" * 2_000_001))
    assert error_response(err.value)[0] == 413
    assert len(files_under(photos_dir)) == 1  # rejected uploads keep their verdict, not their bytes
    rows = svc.get_identity(t["id"], ident["id"])["photos"]
    assert [p["accepted"] for p in rows] == [True, False, False, False]

    svc.add_photo(t["id"], ident["id"], "b.jpg", jpeg(seed=2))
    svc.add_photo(t["id"], ident["id"], "c.jpg", jpeg(seed=3))
    from server.errors import TooManyPhotos

    with pytest.raises(TooManyPhotos):
        svc.add_photo(t["id"], ident["id"], "d.jpg", jpeg(seed=4))


def test_tenants_never_see_each_other(tmp_path):
    svc = make_service(tmp_path)
    a, _ = svc.create_tenant("a")
    b, _ = svc.create_tenant("b")
    ident = svc.create_identity(a["id"], "mine")
    svc.add_photo(a["id"], ident["id"], "x.jpg", jpeg())
    job = svc.submit_job(a["id"], "_empty", internal=True)
    for call in (lambda: svc.get_identity(b["id"], ident["id"]),
                 lambda: svc.add_photo(b["id"], ident["id"], "y.jpg", jpeg()),
                 lambda: svc.delete_identity(b["id"], ident["id"]),
                 lambda: svc.get_job(b["id"], job["id"]),
                 lambda: svc.cancel_job(b["id"], job["id"]),
                 lambda: svc.submit_job(b["id"], "preprocess", ident["id"])):
        with pytest.raises(NotFound) as err:
            call()
        assert error_response(err.value)[0] == 404
    assert svc.list_jobs(b["id"])["items"] == [] and svc.list_identities(b["id"])["items"] == []
    assert svc.get_job(a["id"], job["id"])["state"] == "queued"  # untouched
    assert len(svc.get_identity(a["id"], ident["id"])["photos"]) == 1


def _identity_with_files(svc: Service, tenant: str, name: str):
    """An identity with two photos and a finished job that wrote files and a result."""
    ident = svc.create_identity(tenant, name)
    for i in range(2):
        svc.add_photo(tenant, ident["id"], f"{i}.jpg", jpeg(seed=i))
    jid = new_id()
    job_dir = svc.storage.job_dir(tenant, jid)
    (job_dir / "train").mkdir()
    (job_dir / "train" / "0000.png").write_bytes(b"crop")
    (job_dir / "portrait.png").write_bytes(b"png")
    with svc.db.session() as s:
        s.add(Job(id=jid, tenant_id=tenant, identity_id=ident["id"], kind="run", state="succeeded",
                  created_at=time.time(), templates=[], options={}))
        s.flush()
        s.add(Result(job_id=jid, tenant_id=tenant, identity_id=ident["id"], template="t", path="portrait.png"))
        s.add(WebhookDelivery(tenant_id=tenant, job_id=jid, url="http://127.0.0.1:9/", event="job.succeeded",
                              payload={}))
    return ident, jid


def test_delete_identity_removes_every_file_and_row(tmp_path):
    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("acme")
    gone, gone_job = _identity_with_files(svc, t["id"], "gone")
    kept, kept_job = _identity_with_files(svc, t["id"], "kept")
    svc.delete_identity(t["id"], gone["id"])
    leftovers = [p for p in files_under(tmp_path / "data") if gone["id"] in str(p) or gone_job in str(p)]
    assert leftovers == []
    assert count(svc, Photo, identity_id=gone["id"]) == 0 and count(svc, Job, id=gone_job) == 0
    assert count(svc, Result, job_id=gone_job) == 0 and count(svc, Identity, id=gone["id"]) == 0
    assert count(svc, WebhookDelivery, job_id=gone_job) == 0
    # the other identity is whole
    assert count(svc, Photo, identity_id=kept["id"]) == 2 and count(svc, Result, job_id=kept_job) == 1
    assert (svc.storage.job_dir(t["id"], kept_job) / "portrait.png").exists()
    with pytest.raises(NotFound):
        svc.get_identity(t["id"], gone["id"])


def test_retention_deletes_idle_identities_per_tenant_ttl(tmp_path):
    from server.retention import apply_retention

    svc = make_service(tmp_path, retention_days=30)
    short, _ = svc.create_tenant("short", retention_days=1)
    default, _ = svc.create_tenant("default")
    old, old_job = _identity_with_files(svc, short["id"], "old")
    other, other_job = _identity_with_files(svc, default["id"], "other")
    running = svc.create_identity(short["id"], "busy")
    svc.add_photo(short["id"], running["id"], "r.jpg", jpeg())
    svc.submit_job(short["id"], "_empty", running["id"], internal=True)
    # Two days later: the short tenant's idle identity goes, the busy one (queued job) stays, the
    # default tenant (30 days) keeps everything.
    two_days = time.time() + 2 * 86400
    with svc.db.session() as s:  # the busy identity's job is recent relative to "two days later"
        s.query(Job).filter(Job.identity_id == running["id"]).update({"created_at": two_days - 60})
    assert apply_retention(svc, at=two_days) == 1
    assert [p for p in files_under(tmp_path / "data") if old["id"] in str(p) or old_job in str(p)] == []
    assert count(svc, Identity, id=old["id"]) == 0 and count(svc, Result, job_id=old_job) == 0
    assert count(svc, Identity, id=running["id"]) == 1
    assert count(svc, Identity, id=other["id"]) == 1 and count(svc, Photo, identity_id=other["id"]) == 2
    assert apply_retention(svc, at=time.time() + 31 * 86400) == 1  # the default TTL, the busy one still queued


def test_web_visitors_tenants_are_pruned_once_empty_and_api_tenants_never(tmp_path):
    from server.db.models import ApiKey, Tenant
    from server.retention import apply_retention

    svc = make_service(tmp_path, retention_days=30)
    idle, _ = svc.create_tenant("", visitor=True)  # opened the form, never uploaded
    busy, _ = svc.create_tenant("", visitor=True)
    kept, _ = _identity_with_files(svc, busy["id"], "mine")
    api, _ = svc.create_tenant("studio")  # an API tenant with nothing in it
    with pytest.raises(ServiceError) as exc:
        svc.create_tenant(idle["name"].replace(idle["name"][-4:], "beef"))  # visitor names are reserved
    assert exc.value.code == "bad_name"
    assert apply_retention(svc, at=time.time() + 29 * 86400) == 0 and count(svc, Tenant, id=idle["id"]) == 1
    later = time.time() + 31 * 86400
    apply_retention(svc, at=later)  # the busy visitor's identity expires, so that tenant is empty too
    assert count(svc, Tenant, id=idle["id"]) == 0 and count(svc, ApiKey, tenant_id=idle["id"]) == 0
    assert count(svc, Identity, id=kept["id"]) == 0
    apply_retention(svc, at=later)  # (pruned in that round, else in this one)
    assert count(svc, Tenant, id=busy["id"]) == 0
    assert count(svc, Tenant, id=api["id"]) == 1 and count(svc, ApiKey, tenant_id=api["id"]) == 1
    assert not (tmp_path / "data" / "tenants" / busy["id"]).exists()


class _Hooks(http.server.BaseHTTPRequestHandler):
    received: list = []
    fail_first = 1

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        ok = len(type(self).received) > type(self).fail_first
        self.send_response(200 if ok else 500)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhooks_are_signed_retried_and_recorded(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        svc = make_service(tmp_path, webhook_backoff=0.1, webhook_allow_private=True)  # the receiver is on loopback
        t, _ = svc.create_tenant("acme")
        job = svc.submit_job(t["id"], "_sleep", options={"seconds": 0.05, "steps": 1}, internal=True, webhook_url=url)
        w = Worker(svc.settings, service=svc)
        assert w.run_forever(max_jobs=1) == 1

        def delivered():
            w.maintenance(force=True)
            with svc.db.session() as s:
                d = s.query(WebhookDelivery).filter_by(job_id=job["id"]).one()
                return d.state == "delivered" and (d.attempts, d.status_code)

        attempts = wait_for(delivered, 120, "the webhook's second attempt to be delivered")
        assert attempts == (2, 200)
        (h1, b1), (h2, b2) = _Hooks.received
        assert b1 == b2 and h1["X-Portrait-Delivery"] == h2["X-Portrait-Delivery"]
        payload = json.loads(b2)
        assert payload["event"] == "job.succeeded" and payload["job"]["id"] == job["id"]
        secret = svc.webhook_secret(t["id"])
        assert webhooks.verify(secret, b2, h2["X-Portrait-Signature"])
        assert not webhooks.verify("another-secret", b2, h2["X-Portrait-Signature"])
        assert not webhooks.verify(secret, b2 + b" ", h2["X-Portrait-Signature"])
    finally:
        server.shutdown()


class _Redirect(http.server.BaseHTTPRequestHandler):
    hits: list = []
    target = ""

    def do_POST(self):
        type(self).hits.append(self.path)
        self.send_response(307)
        self.send_header("Location", type(self).target)
        self.end_headers()

    def log_message(self, *args):
        pass


def _attempted(svc, job_id: str) -> WebhookDelivery:
    """The job's webhook delivery once it has been tried (by the worker's maintenance, or here)."""
    def tried():
        webhooks.deliver_due(svc.db, max_attempts=5, backoff=0.1, allow_private=svc.settings.webhook_allow_private)
        with svc.db.session() as s:
            d = s.query(WebhookDelivery).filter_by(job_id=job_id).one()
            return d if d.attempts else None

    return wait_for(tried, 120, "the webhook to be tried")


def test_webhooks_never_reach_the_servers_own_network(tmp_path):
    """SSRF: a private or loopback host is refused when the URL is given, a name is resolved and checked at
    every delivery (and the connection goes to the address checked), and redirects are not followed."""
    inner = http.server.HTTPServer(("127.0.0.1", 0), _Hooks)  # stands for a service inside the network
    outer = http.server.HTTPServer(("127.0.0.1", 0), _Redirect)
    for srv in (inner, outer):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Hooks.received, _Redirect.hits = [], []
    _Redirect.target = f"http://127.0.0.1:{inner.server_address[1]}/admin"
    try:
        svc = make_service(tmp_path)
        t, _ = svc.create_tenant("acme")
        for url in ("http://127.0.0.1:9/x", "http://10.0.0.5/x", "http://[::1]/x", "http://169.254.169.254/latest",
                    "http://localhost:8080/x", "http://[::ffff:127.0.0.1]/x",
                    # multicast (Python calls some of it global), and IPv6 forms that wrap a private IPv4 address:
                    # NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo (2001::/32, the client inverted)
                    "http://224.0.0.1/x", "http://[ff02::1]/x", "http://[ff0e::1]/x", "http://[64:ff9b::a00:1]/x",
                    "http://[64:ff9b::7f00:1]/x", "http://[2002:a00:1::1]/x", "http://[2002:7f00:1::1]/x",
                    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/x"):
            with pytest.raises(ServiceError) as exc:
                svc.submit_job(t["id"], "_sleep", options={"seconds": 0.01, "steps": 1}, internal=True,
                               webhook_url=url)
            assert exc.value.code == "bad_webhook_url" and "public hosts only" in exc.value.message, url
        # Public addresses in the same wrappings are fine.
        from server.webhooks import url_refusal

        for url in ("http://[64:ff9b::808:808]/x", "http://[2002:808:808::1]/x", "http://8.8.8.8/x"):
            assert url_refusal(url, allow_private=False) is None, url
        # Registered while private receivers were allowed, delivered after the setting was turned off: the
        # name `localhost` resolves to loopback at delivery and is refused there.
        named = f"http://localhost:{inner.server_address[1]}/hook"
        loose = make_service(tmp_path, webhook_allow_private=True)
        job = loose.submit_job(t["id"], "_sleep", options={"seconds": 0.01, "steps": 1}, internal=True,
                               webhook_url=named)
        assert Worker(svc.settings, service=svc).run_forever(max_jobs=1) == 1
        d = _attempted(svc, job["id"])
        assert d.status_code is None and "public hosts only" in d.last_error and "localhost" in d.last_error
        assert _Hooks.received == []
        # A receiver allowed on the network answers with a redirect into it: recorded, not followed.
        redirect = f"http://127.0.0.1:{outer.server_address[1]}/hook"
        job = loose.submit_job(t["id"], "_sleep", options={"seconds": 0.01, "steps": 1}, internal=True,
                               webhook_url=redirect)
        assert Worker(loose.settings, service=loose).run_forever(max_jobs=1) == 1
        d = _attempted(loose, job["id"])
        assert d.status_code == 307 and "not followed" in d.last_error
        assert _Redirect.hits == ["/hook"] and _Hooks.received == []
    finally:
        inner.shutdown()
        outer.shutdown()


def test_ops_endpoints(tmp_path):
    from flask import Flask

    from server import ops

    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("acme")
    svc.submit_job(t["id"], "_empty", internal=True)
    done = svc.submit_job(t["id"], "_sleep", options={"seconds": 0.01, "steps": 1}, internal=True, priority=5)
    Worker(svc.settings, service=svc).run_forever(max_jobs=1)
    app = Flask(__name__)
    ops.init_app(app, svc)
    client = app.test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json["checks"]["database"] == "ok"
    # The worker has stopped: readiness of this process holds, and it says no worker runs.
    assert r.json["workers_alive"] == 0 and "no worker is running" in r.json["note"]
    w = Worker(svc.settings, service=svc)
    w.register()
    r = client.get("/readyz")
    assert r.json["workers_alive"] == 1 and "note" not in r.json
    w.unregister()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'portrait_jobs{state="queued"} 1.0' in text
    assert 'portrait_jobs{state="succeeded"} 1.0' in text
    assert "portrait_queue_depth 1.0" in text
    assert 'portrait_stage_duration_seconds_count{stage="sleep"} 1.0' in text
    assert svc.get_job(t["id"], done["id"])["state"] == "succeeded"


@pytest.mark.slow
def test_tenant_commands(tmp_path):
    data = tmp_path / "data"
    run = lambda *a: subprocess.run([sys.executable, "-m", "portrait", "tenant", *a, "--data-dir", str(data)],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    created = run("create", "Studio One")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1].split()[-1]
    svc = make_service(tmp_path)
    assert svc.authenticate(key).name == "Studio One"
    listed = run("list")
    assert "Studio One" in listed.stdout and key not in listed.stdout and key[:10] in listed.stdout
    again = run("create", "Studio One")
    assert again.returncode == 2 and "exists already" in again.stderr
    assert run("revoke", key[:10]).returncode == 0
    with pytest.raises(Unauthorized):
        svc.authenticate(key)


@pytest.mark.slow
def test_worker_runs_a_real_preprocess_job_and_the_verdicts_reach_the_photos(tmp_path):
    """The sample photos (8 of one person, Grace Hopper, an exact copy) through a real preprocess job
    on the worker: the photo rows get report.json's verdicts and the reference; progress ends at 1."""
    from portrait.samples import write_sample_photos

    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("acme")
    ident = svc.create_identity(t["id"], "astronaut")
    by_id = {}
    for path in write_sample_photos(tmp_path / "samples"):
        p = svc.add_photo(t["id"], ident["id"], path.name, path.read_bytes())
        by_id[p["id"]] = path.name
    job = svc.submit_job(t["id"], "preprocess", ident["id"], options={"top_k": 6})
    assert job["state"] == "queued"
    w = Worker(svc.settings, service=svc)
    assert w.run_forever(max_jobs=1) == 1
    done = svc.get_job(t["id"], job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["attempts"] == 1 and "analyse" in done["timings"]
    photos = {by_id[p["id"]]: p for p in svc.get_identity(t["id"], ident["id"])["photos"]}
    rejected = {name: p["reasons"] for name, p in photos.items() if not p["accepted"]}
    assert "different_person" in sum(rejected.values(), [])
    assert "duplicate" in sum(rejected.values(), [])
    refs = [name for name, p in photos.items() if p["reference"]]
    assert len(refs) == 1 and photos[refs[0]]["accepted"]
    assert svc.get_identity(t["id"], ident["id"])["reference_photo_id"] is not None
    report = svc.job_report(t["id"], job["id"])
    assert len(report["photos"]) == len(photos)
    assert str(tmp_path) not in json.dumps(svc.get_job(t["id"], job["id"]))  # no server paths leak
    # What a user reads names their own files: the duplicate points at the upload it copies, the report lists
    # the uploads by name, and neither holds a stored name (`<photo id>.jpg`) or a path of the server's.
    stored = re.compile(r"[0-9a-f]{32}\.[a-z]+")
    dup = [p for p in photos.values() if "duplicate" in p["reasons"]][0]
    assert re.search(r"the same photo as \S+\.(jpg|png)", dup["message"]) and not stored.search(dup["message"])
    assert any(name in dup["message"] for name in by_id.values()), dup["message"]
    text = json.dumps(report)
    assert not stored.search(text) and str(tmp_path) not in text
    assert {Path(str(p["file"])).name for p in report["photos"]} <= set(by_id.values())
    # A job that fails names no server path either: "your photos", "the job's photo report".
    few = svc.create_identity(t["id"], "few")
    for path in sorted((tmp_path / "samples").iterdir())[:2]:
        svc.add_photo(t["id"], few["id"], path.name, path.read_bytes())
    failing = svc.submit_job(t["id"], "run", few["id"], ["studio-grey"])
    assert Worker(svc.settings, service=svc).run_forever(max_jobs=1) == 1
    ended = svc.get_job(t["id"], failing["id"])
    err = ended["error"]
    assert err, ended
    assert err["code"] == "not_enough_photos", err
    assert str(tmp_path) not in json.dumps(err) and "/tenants/" not in err["message"]
    assert err["message"].startswith("your photos:") and "the job's photo report" in err["message"], err


@pytest.mark.parametrize("kind,templates,options,field", [
    ("preprocess", [], {"models_dir": "/etc"}, "options.models_dir"),
    ("preprocess", [], {"face": {"device": "cuda:7"}}, "options.face.device"),
    ("run", ["studio-grey"], {"base_model": "../../secrets/model.safetensors"}, "options.base_model"),
    ("run", ["studio-grey"], {"identity": "/data/other-tenant/identity.safetensors"}, "options.identity"),
    ("preprocess", [], {"bogus": 1}, "options"),
    ("run", ["studio-grey"], {"variants": 99}, "options"),
    ("run", ["../templates/studio-grey"], {}, None),
    ("run", ["no-such-template"], {}, None),
    ("run", [], {}, "templates"),
])
def test_bad_job_requests_are_refused_before_anything_is_queued(tmp_path, kind, templates, options, field):
    from server.errors import BadRequest

    svc = make_service(tmp_path)
    t, _ = svc.create_tenant("acme")
    ident = svc.create_identity(t["id"], "me")
    svc.add_photo(t["id"], ident["id"], "a.jpg", jpeg())
    with pytest.raises(BadRequest) as err:
        svc.submit_job(t["id"], kind, ident["id"], templates, options)
    status, body = error_response(err.value)
    assert status == 400 and body["error"]["message"]
    if field:
        assert body["error"]["details"].get("field") == field
    else:
        assert body["error"]["code"] == "bad_template"
    assert svc.list_jobs(t["id"])["items"] == []


def test_the_library_never_imports_the_server():
    """Layers run one way: `portrait` and `preprocess` never import `server` (its commands reach the
    CLI through the `portrait.commands` entry point)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for pkg in ("portrait", "preprocess"):
        for path in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                offenders += [f"{path.relative_to(root)}: {n}" for n in names if n == "server" or n.startswith("server.")]
    assert offenders == []
    from importlib.metadata import entry_points

    assert "server.cli:register" in {e.value for e in entry_points(group="portrait.commands")}


def test_an_existing_database_upgrades_and_keeps_its_idempotency_records(tmp_path):
    """A data dir made before migration 0002 (idempotency fingerprints): start-up adds the column, the old
    records still replay (they have no fingerprint to compare)."""
    from alembic import command
    from alembic.config import Config

    from server.db import MIGRATIONS, Database

    svc = make_service(tmp_path)  # the current schema, to get a tenant row in
    t, _ = svc.create_tenant("acme")
    db_url = svc.settings.db_url
    svc.close()
    old = Database(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    with old.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO idempotency (id, tenant_id, key, scope, status, body, created_at) VALUES "
                             f"('{new_id()}', '{t['id']}', 'k1', 'POST /api/v1/identities', 201, '{{\"id\": \"x\"}}', 0)")
    assert old.revision() == "0001"
    old.dispose()
    svc = make_service(tmp_path)  # migrates on start
    assert svc.db.revision() == newest_migration()
    assert svc.idempotent_claim(t["id"], "POST /api/v1/identities", "k1", "any-fingerprint") == (201, {"id": "x"})
