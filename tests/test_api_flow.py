"""The whole REST API flow through the Flask test client with a real worker process on the classic
engines: identity → photos (bad ones get their verdicts) → job → poll → results → delete."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from portrait.samples import write_sample_photos

from helpers_service import assert_error, auth, make_app, new_key, poll_job, worker_process


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_sample_photos(tmp_path_factory.mktemp("samples"))


def _files(paths):
    return [(io.BytesIO(p.read_bytes()), p.name) for p in paths]


@pytest.mark.slow
def test_whole_api_flow(tmp_path, samples):
    data = tmp_path / "data"
    app = make_app(data)
    key = new_key(app, "studio")
    h = auth(key)
    c = app.test_client()

    r = c.post("/api/v1/identities", json={"name": "Eileen"}, headers=h)
    assert r.status_code == 201, r.get_json()
    iid = r.get_json()["id"]

    # several files in one request (the field `photos` repeated) ...
    r = c.post(f"/api/v1/identities/{iid}/photos", data={"photos": _files(samples[:5])}, headers=h)
    assert r.status_code == 201, r.get_json()
    assert [p["filename"] for p in r.get_json()["photos"]] == [p.name for p in samples[:5]]
    # ... and one file per request, as a mini-program uploads
    for p in samples[5:]:
        r = c.post(f"/api/v1/identities/{iid}/photos", data={"photos": _files([p])}, headers=h)
        assert r.status_code == 201, r.get_json()
        assert r.get_json()["photos"][0]["accepted"] is True
    # a file that is not an image: 422 with its reason code, and nothing kept
    r = c.post(f"/api/v1/identities/{iid}/photos", data={"photos": (io.BytesIO(b"%PDF-1.4 not a photo"), "cv.jpg")},
               headers=h)
    err = assert_error(r, 422, "unreadable")
    assert err["details"]["photos"][0]["filename"] == "cv.jpg"
    photos = c.get(f"/api/v1/identities/{iid}", headers=h).get_json()["photos"]
    assert len(photos) == len(samples)

    r = c.post("/api/v1/jobs", headers=h, json={"kind": "run", "identity_id": iid, "templates": ["studio-grey"],
                                                "options": {"variants": 1}})
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["state"] == "queued" and job["queue_position"] == 0 and job["results"] == []

    with worker_process(data):
        job, seen = poll_job(c, h, job["id"])
    assert job["state"] == "succeeded", job["error"]
    assert seen == sorted(seen), "progress went backwards"
    assert job["progress"] == 1.0 and job["queue_position"] is None

    # the per-photo verdicts of report.json, on the identity's photos and in the job's report
    photos = {p["filename"]: p for p in c.get(f"/api/v1/identities/{iid}", headers=h).get_json()["photos"]}
    assert photos["grace_hopper.jpg"]["accepted"] is False
    assert photos["grace_hopper.jpg"]["reasons"] == ["different_person"]
    # an exact copy: one of the two is kept, the other is the duplicate (stored names are random ids)
    twins = sorted(photos[n]["reasons"] for n in ("astronaut_01.jpg", "astronaut_09_copy.jpg"))
    assert twins == [[], ["duplicate"]]
    assert sum(p["reference"] for p in photos.values()) == 1
    report = c.get(f"/api/v1/jobs/{job['id']}/report", headers=h).get_json()
    assert {code for p in report["photos"] for code in p["reasons"]} >= {"different_person", "duplicate"}
    assert report["reference"]

    # results: signed URLs work without the header; with the header too; a forged token does not
    (res,) = job["results"]
    assert res["template"] == "studio-grey" and 0.0 <= res["score"] <= 1.0
    signed = res["url"].replace("http://localhost", "")
    r = c.get(signed)
    assert r.status_code == 200 and r.mimetype == "image/png"
    img = Image.open(io.BytesIO(r.data))
    assert img.size[0] >= 256 and img.mode == "RGB"
    assert c.get(f"/api/v1/results/{res['id']}", headers=h).data == r.data
    assert_error(c.get(f"/api/v1/results/{res['id']}?token=forged"), 404)
    assert_error(c.get(f"/api/v1/results/{res['id']}"), 401)

    # events of an ended job: one `end` event carrying the final state
    r = c.get(f"/api/v1/jobs/{job['id']}/events", headers=h)
    assert r.mimetype == "text/event-stream"
    events = [b for b in r.get_data(as_text=True).split("\n\n") if b.strip()]
    assert events[-1].startswith("event: end") and json.loads(events[-1].split("data: ", 1)[1])["state"] == "succeeded"

    # delete: 204, then the identity, its photos, jobs, results and files are gone
    r = c.delete(f"/api/v1/identities/{iid}", headers=h)
    assert r.status_code == 204 and r.data == b""
    assert_error(c.get(f"/api/v1/identities/{iid}", headers=h), 404)
    assert_error(c.get(f"/api/v1/jobs/{job['id']}", headers=h), 404)
    assert_error(c.get(signed), 404)
    leftovers = [p for p in data.rglob("*") if iid in str(p) or job["id"] in str(p)]
    assert leftovers == []
    assert not any(p.is_file() for p in (data / "tenants").rglob("*")), list((data / "tenants").rglob("*"))
    db = sqlite3.connect(data / "portrait.db")
    for table, column in (("identities", "id"), ("photos", "identity_id"), ("jobs", "identity_id"),
                          ("results", "identity_id")):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (iid,)).fetchone()[0] == 0, table
    assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 0
    db.close()


@pytest.mark.slow
def test_a_commercial_server_runs_on_commercial_safe_models(tmp_path, samples, monkeypatch):
    """PORTRAIT_LICENCE=commercial on the web process and its worker: photos are judged and portraits made
    with dlib's 5-point landmarks, and a job asking for the 68-point model fails with licence_excluded."""
    monkeypatch.setenv("PORTRAIT_LICENCE", "commercial")
    data = tmp_path / "data"
    app = make_app(data)
    h = auth(new_key(app, "studio"))
    c = app.test_client()
    iid = c.post("/api/v1/identities", json={"name": "Eileen"}, headers=h).get_json()["id"]
    r = c.post(f"/api/v1/identities/{iid}/photos", data={"photos": _files(samples)}, headers=h)
    assert r.status_code == 201, r.get_json()
    ok = c.post("/api/v1/jobs", headers=h, json={"kind": "run", "identity_id": iid, "templates": ["studio-grey"],
                                                 "options": {"variants": 1, "max_tries": 1}}).get_json()
    refused = c.post("/api/v1/jobs", headers=h, json={
        "kind": "run", "identity_id": iid, "templates": ["studio-grey"],
        "options": {"variants": 1, "max_tries": 1, "face": {"landmarks": "dlib68"}}})
    assert refused.status_code == 202, refused.get_json()
    with worker_process(data, env={"PORTRAIT_LICENCE": "commercial"}):
        ok, _ = poll_job(c, h, ok["id"])
        bad, _ = poll_job(c, h, refused.get_json()["id"])
    assert ok["state"] == "succeeded", ok["error"]
    assert len(ok["results"]) == 1, ok["results"]
    (result_file,) = [p for p in data.rglob("result.json") if ok["id"] in str(p)]  # the worker's run result
    # the commercial policy's default landmarks: MediaPipe's mesh (Apache-2.0), no dlib landmark model
    assert json.loads(result_file.read_text())["engines"]["faces"]["engine"] == "dlib-hog+mediapipe+dlib-resnet"
    assert bad["state"] == "failed" and bad["error"]["code"] == "licence_excluded", bad["error"]
    assert "dlib-5pt" in bad["error"]["message"]


class _Receiver(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_events_follow_a_running_job_and_the_tenant_webhook_fires(tmp_path, samples, monkeypatch):
    from server.webhooks import verify

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    data = tmp_path / "data"
    hook = f"http://127.0.0.1:{receiver.server_port}/hook"
    strict = make_app(tmp_path / "strict")  # by default a webhook never goes to the server's own network
    assert_error(strict.test_client().patch("/api/v1/tenant", json={"webhook_url": hook},
                                            headers=auth(new_key(strict, "app"))), 400, "bad_webhook_url")
    monkeypatch.setenv("PORTRAIT_WEBHOOK_ALLOW_PRIVATE", "1")  # this receiver is on loopback (the worker too)
    app = make_app(data, sse_poll_seconds=0.05)  # the stream samples often: a fast machine's job shows its steps
    h = auth(new_key(app, "app"))
    c = app.test_client()
    r = c.patch("/api/v1/tenant", json={"webhook_url": hook}, headers=h)
    assert r.status_code == 200 and r.get_json()["webhook_url"] == hook
    secret = c.get("/api/v1/tenant", headers=h).get_json()["webhook_secret"]
    iid = c.post("/api/v1/identities", json={"name": "e"}, headers=h).get_json()["id"]
    c.post(f"/api/v1/identities/{iid}/photos", data={"photos": _files(samples[:6])}, headers=h)
    job = c.post("/api/v1/jobs", headers=h, json={"identity_id": iid, "templates": ["classic-bw"],
                                                  "options": {"variants": 1, "min_photos": 3}}).get_json()
    with worker_process(data):
        stream = c.get(f"/api/v1/jobs/{job['id']}/events", headers=h)  # streams until the job ends
        blocks = [e for e in stream.get_data(as_text=True).split("\n\n") if e.strip() and not e.startswith(":")]
        assert blocks[0] == "retry: 3000"  # the reconnect hint comes first
        events = [dict(line.split(": ", 1) for line in b.split("\n")) for b in blocks[1:]]
        deadline = time.monotonic() + 120
        while not _Receiver.got and time.monotonic() < deadline:  # the worker's next maintenance round
            time.sleep(0.2)
    kinds = [e["event"] for e in events]
    states = [json.loads(e["data"]) for e in events]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"progress"} and len(kinds) >= 3
    assert len({e["id"] for e in events}) == len(events)  # each state its own event id
    assert states[-1]["state"] == "succeeded" and states[-1]["results"]
    progress = [s["progress"] for s in states]
    # the bar only moves forward and ends full; how many steps a poll catches depends on the machine's speed
    assert progress == sorted(progress) and progress[0] < 1.0 == progress[-1]
    assert any(s["state"] == "running" and s["label"] not in ("waiting in the queue", "done") for s in states)
    (headers, body), = _Receiver.got
    assert verify(secret, body, headers["X-Portrait-Signature"])
    payload = json.loads(body)
    assert payload["event"] == "job.succeeded" and payload["job"]["id"] == job["id"]
    assert headers["X-Portrait-Event"] == "job.succeeded"
    receiver.shutdown()
