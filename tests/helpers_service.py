"""Helpers for the service's front-half tests: an app on a temporary data dir, API keys, a real
worker process on the same data dir, a real HTTP server on a loopback socket, polling a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from werkzeug.serving import make_server

TERMINAL = ("succeeded", "failed", "cancelled")
JOB_TIMEOUT = 600.0  # a guard against a hung worker, not a speed assertion


def make_app(data_dir: Path, **config):
    from server.app import create_app

    return create_app({"data_dir": str(data_dir), "secret_key": "test-secret", "TESTING": True, **config})


def new_key(app, name: str) -> str:
    _tenant, key = app.extensions["portrait"].create_tenant(name)
    return key


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


WORKER_CODE = """
import signal, sys
from server.settings import Settings
from server.worker import Worker
w = Worker(Settings.load({"data_dir": sys.argv[1]}))
signal.signal(signal.SIGTERM, lambda *a: w.stop_event.set())
w.run_forever()
"""


@contextmanager
def worker_process(data_dir: Path, log_path: Path | None = None, env: dict | None = None
                   ) -> Iterator[subprocess.Popen]:
    """i10a's embedded-queue worker in its own process on the same data dir (and SQLite database); `env`:
    more environment for it (PORTRAIT_LICENCE, say)."""
    log = open(log_path or Path(data_dir) / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-c", WORKER_CODE, str(data_dir)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PORTRAIT_NO_PROGRESS": "1", **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@contextmanager
def live_server(app) -> Iterator[str]:
    """The app on a real loopback socket (werkzeug's threaded server); yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def queued_job(app, key: str) -> str:
    """A run job of one identity with one photo, which stays queued (no worker runs beside it)."""
    import io

    from PIL import Image

    c = app.test_client()
    iid = c.post("/api/v1/identities", json={"name": "x"}, headers=auth(key)).get_json()["id"]
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (120, 110, 100)).save(buf, "JPEG")
    c.post(f"/api/v1/identities/{iid}/photos", data={"photos": (io.BytesIO(buf.getvalue()), "a.jpg")},
           headers=auth(key))
    return c.post("/api/v1/jobs", json={"identity_id": iid, "templates": ["studio-grey"]},
                  headers=auth(key)).get_json()["id"]


@contextmanager
def live_asgi(app, threads: int = 4) -> Iterator[tuple[str, object]]:
    """The app as `portrait serve` runs it (server/asgi.py under uvicorn) on a loopback socket, in a thread;
    yields (base URL, the PortraitASGI)."""
    import socket

    import uvicorn

    from server.asgi import PortraitASGI

    asgi = PortraitASGI(app, threads=threads)
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    server = uvicorn.Server(uvicorn.Config(asgi, log_config=None, access_log=False, timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", asgi
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def poll_job(client, headers: dict, job_id: str, interval: float = 0.2) -> tuple[dict, list[float]]:
    """Poll GET /api/v1/jobs/{id} until the job ends; (final job, every progress value seen)."""
    seen: list[float] = []
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        r = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.get_json()
        job = r.get_json()
        seen.append(job["progress"])
        if job["state"] in TERMINAL:
            return job, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} at {job['stage']} after {JOB_TIMEOUT} s")
        time.sleep(interval)


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is `status` with the `{"error": {"code", "message", "details"}}` body."""
    body = response.get_json()
    assert response.status_code == status, (response.status_code, body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server (a real HTTP server speaking the S3 protocol, standing in for a
    remote object store) on a free loopback port; yields its endpoint URL. Point boto3 at it with
    dummy credentials in the environment (see `s3_environment`)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # binds a free port itself
    server.start()
    port = server.get_host_and_port()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_environment(monkeypatch, tmp_path: Path) -> None:
    """Dummy credentials and region for boto3; no shared config or credentials file of this machine."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


def newest_migration() -> str:
    """The head revision of the service's migrations (what a migrated database reports)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from server.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
